"""Apply a final text model: sample from a language model (seeded), score documents (loss per token, perplexity)
or label them (text-classification), encoding with the tokenizer artifact inspect wrote.

The final model is what ensemble.json names (ensemble members, best single or student), each checkpoint built
with models_seq.build_sequence from its recorded overrides. The tokenizer is runs/<name>/inspect/tokenizer.json,
refused unless it was fitted on train only and is the one the final model was trained with (its digest is in
ensemble.json's encoding): a tokenizer fitted on val/test, or one swapped after training, never reaches a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from recipe.errors import DataError, GateError, RecipeError

DOC_SUFFIXES = (".txt", ".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson")


def is_text(art: dict[str, Any]) -> bool:
    from recipe.data.text import TASKS      # the tasks text data can have

    return art.get("task") in TASKS


def is_language_model(art: dict[str, Any]) -> bool:
    """A text model without classes predicts the next token: what --prompt samples from and documents are scored by."""
    from recipe import tasks

    return is_text(art) and not tasks.get(art["task"]).has_classes


# ----------------------------------------------------------------------------- tokenizer and models


def tokenizer(ws, art: dict[str, Any]):
    """inspect's tokenizer.json, checked against its provenance and against the final model's record."""
    from recipe.data.text import load_tokenizer

    path = ws.stage_dir("inspect") / "tokenizer.json"
    if not path.exists():
        raise GateError(f"{path}: the tokenizer artifact is missing: rerun 'recipe inspect' (it writes it)")
    tok = load_tokenizer(path)
    leaked = [s for s in tok.fitted_on if s != "train"]
    if leaked or not tok.fitted_on:
        raise GateError(f"{path}: the tokenizer was fitted on {'+'.join(tok.fitted_on) or 'nothing'} "
                        f"({'/'.join(leaked) or 'no split'} text shaped its vocabulary); predict encodes only with a "
                        "tokenizer fitted on train: rerun the stages from 'recipe inspect'")
    want = (art.get("encoding") or {}).get("tokenizer_digest")
    if want is not None and tok.digest != want:
        raise GateError(f"{path}: tokenizer digest {tok.digest} is not the one the final model was trained with "
                        f"({want}); rerun the stages from 'recipe inspect' so that model and tokenizer match")
    return tok


@dataclass
class Final:
    """The final model as predict applies it: (model, weight) pairs, the tokenizer and the window length."""

    task: str
    next_token: bool = True                          # a language model (else a classifier)
    models: list = field(default_factory=list)      # [(torch module in eval mode, weight)]
    tok: Any = None
    block_size: int = 0
    vocab_size: int = 0
    pad_id: Optional[int] = None
    classes: Optional[list] = None
    device: Any = None


def _model(cfg, art: dict[str, Any], overrides: dict, path: Path, outputs: int):
    from recipe.models_seq import build_sequence
    from recipe.predict import with_weights

    enc = art.get("encoding") or {}
    model = build_sequence(cfg.with_overrides(overrides).model, int(enc["vocab_size"]), int(art["shape"][0]),
                           outputs, task=art["task"], pad_id=enc.get("pad_id"))
    return with_weights(model, path)


def load(cfg, ws, art: dict[str, Any], device: str = "cpu") -> Final:
    """The final text model of a loaded ensemble.json (recipe.predict.load_final), on `device`."""
    from recipe import tasks
    from recipe.engine.train import pick_device

    if "vocab_size" not in (art.get("encoding") or {}):
        raise RecipeError(f"{ws.stage_dir('ensemble') / 'ensemble.json'}: records no text encoding (vocab_size); "
                          "rerun 'recipe ensemble --force'")
    dev = pick_device(device)
    enc = art["encoding"]
    task = tasks.get(art["task"])
    outputs = task.num_outputs(len(art.get("classes") or ()) if task.has_classes else int(enc["vocab_size"]))
    sdir = ws.stage_dir("ensemble")
    if art.get("final") == "best_single":
        picks = [(art["best"], 1.0)]
    elif art.get("final") == "student":
        picks = [({**art["student"], "overrides": art["student"].get("overrides", art["best"]["overrides"])}, 1.0)]
    else:
        picks = [(m, float(m["weight"])) for m in art["members"] if float(m["weight"]) > 0]
    models = [(_model(cfg, art, p.get("overrides") or {}, sdir / p["checkpoint"], outputs).to(dev), w)
              for p, w in picks]
    return Final(art["task"], not task.has_classes, models, tokenizer(ws, art), int(art["shape"][0]), int(enc["vocab_size"]),
                 enc.get("pad_id"), art.get("classes"), dev)


def _probs(final: Final, x):
    """The final model's probabilities for token windows x (B, T): next-token (B, T, V) or classes (B, C);
    members' probabilities averaged with their weights, as ensemble combined them."""
    import torch

    with torch.no_grad():
        total = sum(w * torch.softmax(m(x).float(), -1) for m, w in final.models)
        return total / sum(w for _, w in final.models)


# ----------------------------------------------------------------------------- sampling


def check_sampling(tokens: int, temperature: float, top_k: int) -> None:
    if tokens < 1:
        raise RecipeError(f"--tokens must be >= 1 (got {tokens})")
    if not (temperature > 0) or not math.isfinite(temperature):
        raise RecipeError(f"--temperature must be a finite number > 0 (got {temperature})")
    if top_k < 1:
        raise RecipeError(f"--top-k must be >= 1 (got {top_k})")


def encode_prompt(tok, prompt: str) -> np.ndarray:
    """The prompt's token ids. A char tokenizer knows only train's characters: any other is an error naming it
    (byte and bpe encode every string)."""
    if not prompt:
        raise RecipeError("--prompt is empty: give at least one character to continue")
    if tok.kind == "char":
        unknown = sorted({c for c in prompt if c not in tok.index})
        if unknown:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:8])
            raise DataError(f"--prompt: character(s) {shown} are not in the char tokenizer's vocabulary "
                            f"({len(tok.chars)} characters, all from the train split); use characters the train "
                            "text has, or data.tokenizer: byte or bpe, which encode any text")
    ids = tok.encode(prompt)
    if not len(ids):
        raise RecipeError("--prompt encodes to no tokens: give at least one character to continue")
    return ids


def generate(final: Final, prompt_ids, tokens: int, temperature: float, top_k: int, seed: int) -> list[int]:
    """`tokens` new ids after the prompt: each from the final model's next-token distribution given the last
    block_size tokens, sharpened by 1/temperature and cut to the top_k most likely. The draws come from a CPU
    generator seeded with `seed`, so the same seed gives the same text on any device."""
    import torch

    if not final.next_token:
        raise RecipeError(f"--prompt samples from a language model; this final model is {final.task} "
                          "(pass documents to label instead: recipe predict CONFIG FILE)")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    ids = [int(i) for i in prompt_ids]
    k = min(int(top_k), final.vocab_size)
    new: list[int] = []
    for _ in range(tokens):
        x = torch.tensor([ids[-final.block_size:]], dtype=torch.long, device=final.device)
        p = _probs(final, x)[0, -1].double().cpu()                                    # (V,)
        logits = torch.log(p.clamp_min(1e-30)) / temperature
        if k < len(logits):
            cut = torch.topk(logits, k).values[-1]
            logits = logits.masked_fill(logits < cut, -math.inf)
        nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        ids.append(nxt)
        new.append(nxt)
    return new


def sample(final: Final, prompt: str, tokens: int, temperature: float, top_k: int, seed: int) -> dict[str, Any]:
    """What `recipe predict --prompt` prints (--json): the prompt, its continuation and the sampling settings."""
    check_sampling(tokens, temperature, top_k)
    new = generate(final, encode_prompt(final.tok, prompt), tokens, temperature, top_k, seed)
    return {"prompt": prompt, "continuation": final.tok.decode(new), "tokens": len(new),
            "temperature": temperature, "top_k": top_k, "seed": seed}


def sample_final(cfg, ws, art: dict[str, Any], prompt: str, tokens: int, temperature: float, top_k: int, seed: int,
                 device: str = "cpu") -> tuple[dict[str, Any], str]:
    """`recipe predict --prompt`: the sample of the final model in ensemble.json, and a line saying what ran."""
    if not is_language_model(art):
        raise RecipeError(f"--prompt samples from a language model; the final model of {cfg.name} is "
                          f"{art.get('task')}: pass rows or documents to predict instead")
    check_sampling(tokens, temperature, top_k)
    result = sample(load(cfg, ws, art, device), prompt, tokens, temperature, top_k, seed)
    return result, (f"sampled {result['tokens']} tokens from the {art.get('final', 'ensemble').replace('_', ' ')} "
                    f"of {cfg.name} (temperature {temperature}, top-k {top_k}, seed {seed})")


# ----------------------------------------------------------------------------- documents


@dataclass
class Documents:
    names: list[str]
    texts: list[str]
    labels: Optional[list] = None


def read_documents(cfg, path: Path) -> Documents:
    """Documents to score or label: a .txt file (one document), a folder of .txt files (one each), or a
    CSV/Parquet/JSONL file whose data.text column (else a column named 'text') holds them, and whose data.target
    column, if present, the labels. Bytes that are not UTF-8 are a DataError naming file and byte offset."""
    from recipe.data.text import read as R

    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: the folder holds no .txt files (one document per file)")
        return Documents([p.name for p in files], [R.decode(p) for p in files])
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return Documents([path.name], [R.decode(path)])
    if suffix not in DOC_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}' for text (use .txt, a folder of .txt files, "
                        ".csv, .parquet or .jsonl with the data.text column)")
    # a model trained on .txt files has no data.text: its documents in a table sit in a column named 'text'
    docs = R.read_documents(path, cfg.data.text or "text", cfg.data.target, cfg.data.chunk_chars)
    return Documents(docs.names, docs.texts, docs.labels)


def score(final: Final, docs: Documents) -> list[dict[str, Any]]:
    """Per document: the language model's loss in nats per predicted token, perplexity and token counts. Each
    document is cut as val was (non-overlapping windows of block_size, targets shifted by one), so the numbers
    compare with the recorded val loss; a document of one token has nothing to predict (loss None)."""
    import torch

    rows = []
    unk = final.tok.unk_id
    for name, text in zip(docs.names, docs.texts):
        ids = final.tok.encode(text)
        n, T, total = len(ids), final.block_size, 0.0
        full = (n - 1) // T
        pieces = []
        if full:
            pieces.append((ids[:full * T].reshape(full, T), ids[1:full * T + 1].reshape(full, T)))
        if n - 1 > full * T:     # the tail: a shorter window
            pieces.append((ids[full * T:n - 1][None], ids[full * T + 1:n][None]))
        for x, y in pieces:
            for i in range(0, len(x), 256):
                xb = torch.from_numpy(np.ascontiguousarray(x[i:i + 256])).to(final.device)
                yb = torch.from_numpy(np.ascontiguousarray(y[i:i + 256])).to(final.device)
                p = _probs(final, xb).gather(-1, yb.unsqueeze(-1)).squeeze(-1).double()
                total += float(-torch.log(p.clamp_min(1e-30)).sum())
        predicted = max(n - 1, 0)
        loss = total / predicted if predicted else None
        rows.append({"document": name, "tokens": int(n), "predicted_tokens": predicted, "loss": loss,
                     "perplexity": math.exp(loss) if loss is not None else None,
                     "unknown_tokens": int((ids == unk).sum()) if unk is not None else 0})
    return rows


def label(final: Final, docs: Documents) -> tuple[list[Any], np.ndarray, list[int]]:
    """Text classification: each document's predicted label, the class probabilities (N, C) and how many of its
    tokens were cut at block_size (the model saw only the first block_size, as in training)."""
    import torch

    from recipe.data.text import windows

    tokens = final.tok.encode_many(docs.texts)
    x, lengths = windows.padded(tokens, final.block_size, final.pad_id)
    out = []
    for i in range(0, len(x), 256):
        out.append(_probs(final, torch.from_numpy(x[i:i + 256]).to(final.device)).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, len(final.classes or ())))
    predicted = [final.classes[int(i)] for i in probs.argmax(1)]
    return predicted, probs.astype(np.float64), [max(int(n) - final.block_size, 0) for n in lengths]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    s = f"{v:.6g}" if isinstance(v, float) else str(v)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def scores_csv(rows: list[dict[str, Any]]) -> str:
    keys = ["document", "loss", "perplexity", "tokens", "predicted_tokens", "unknown_tokens"]
    return "\n".join([",".join(keys)] + [",".join(_cell(r[k]) for k in keys) for r in rows]) + "\n"


def labels_csv(docs: Documents, predicted: list, probs: np.ndarray, classes: list, cut: list[int]) -> str:
    head = ["document", "prediction"] + [f"p_{c}" for c in classes] + ["tokens_cut"]
    lines = [",".join(_cell(h) for h in head)]
    for name, p, row, c in zip(docs.names, predicted, probs, cut):
        lines.append(",".join([_cell(name), _cell(p)] + [f"{v:.6g}" for v in row] + [str(c)]))
    return "\n".join(lines) + "\n"


def refuse_unknown(tok, docs: Documents, path: Path) -> None:
    """--strict: a document holding characters the char vocabulary lacks (they would encode as the unknown id)
    is exit 2, naming the documents and characters; byte and bpe have no unknown."""
    if tok.unk_id is None:
        return
    bad = [(n, sorted({c for c in t if c not in tok.index})) for n, t in zip(docs.names, docs.texts)]
    bad = [(n, cs) for n, cs in bad if cs]
    if bad:
        shown = "; ".join(f"{n}: {', '.join(repr(c) for c in cs[:5])}" for n, cs in bad[:5])
        raise DataError(f"{path}: {len(bad)} document(s) hold characters train never had ({shown}); --strict "
                        "refuses them (without it they encode as the unknown id and are counted in unknown_tokens)")


def predict_documents(cfg, ws, art: dict[str, Any], path: Path, device: str = "cpu",
                      out: Optional[Path] = None, strict: bool = False) -> tuple[str, dict[str, Any], str]:
    """`recipe predict CONFIG DOCS` for a text model: the CSV, its summary (--json) and a line saying what ran.
    A language model gets per-document loss (and the token-weighted loss and perplexity over all), a
    text classifier labels (and accuracy when the file has a label column). `strict`: refuse_unknown."""
    docs = read_documents(cfg, path)           # before the model loads: a bad file is named at once
    final = load(cfg, ws, art, device)
    if strict:
        refuse_unknown(final.tok, docs, path)
    summary: dict[str, Any] = {"documents": len(docs.texts), "task": final.task, "final": art.get("final", "ensemble"),
                               "out": str(out) if out else None}
    who = f"the {summary['final'].replace('_', ' ')} of {cfg.name}" + (f" -> {out}" if out else "")
    if final.next_token:
        rows = score(final, docs)
        n = sum(r["predicted_tokens"] for r in rows)
        loss = sum(r["loss"] * r["predicted_tokens"] for r in rows if r["loss"] is not None) / n if n else None
        unknown = sum(r["unknown_tokens"] for r in rows)
        summary.update(loss=loss, perplexity=math.exp(loss) if loss is not None else None, predicted_tokens=n,
                       unknown_tokens=unknown, scores=rows)
        what = (f"loss {loss:.4f} nats/token, perplexity {math.exp(loss):.2f} over {n} predicted tokens"
                if loss is not None else "no document holds two tokens: nothing to predict")
        if unknown:
            what += f"; {unknown} token(s) are characters train never had (the unknown id)"
        return scores_csv(rows), summary, f"scored {len(rows)} document(s) with {who}: {what}"
    predicted, probs, cut = label(final, docs)
    summary.update(predictions=predicted, documents_cut=sum(1 for c in cut if c))
    what = f"{summary['documents_cut']} document(s) longer than block_size {final.block_size}, cut as in training"
    if docs.labels is not None:
        summary["accuracy"] = sum(str(p) == str(t) for p, t in zip(predicted, docs.labels)) / len(docs.labels) \
            if docs.labels else None
        what += f"; accuracy against its labels {summary['accuracy']:.4f}" if summary["accuracy"] is not None else ""
    return (labels_csv(docs, predicted, probs, final.classes, cut), summary,
            f"labelled {len(predicted)} document(s) with {who}: {what}")
