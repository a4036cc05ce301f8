"""inspect for text data: vocabulary, unseen tokens, lengths, empty documents, undecodable bytes, duplicate
documents and long n-grams across splits, and decoded training windows exactly as the model sees them."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from recipe import checks as C
from recipe.data.text import ngrams
from recipe.data.text.read import TABLE_SUFFIXES, scan_bytes

SPLITS = ("train", "val", "test")
EXAMPLES = 5
SNIPPET = 80           # characters of a document or n-gram quoted in evidence


def _snip(text: str) -> str:
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "…"


# ----------------------------------------------------------------------------- vocabulary


def check_vocab(ds, th) -> C.Check:
    """Vocabulary size, how much of it train uses, and the share of val/test tokens train never showed the model
    (for char: characters outside the vocabulary, which become the unknown id). A tokenizer whose vocabulary was
    fitted on val or test fails: their text shaped what the model can see."""
    tok = ds.tokenizer
    train_ids = np.concatenate(ds.doc_tokens["train"]) if ds.doc_tokens["train"] else np.zeros(0, np.int64)
    train_counts = np.bincount(train_ids, minlength=tok.vocab_size)
    ev: dict[str, Any] = {"tokenizer": tok.kind, "vocab_size": tok.vocab_size, "fitted_on": list(tok.fitted_on),
                          "train_tokens": int(len(train_ids)), "warn_unseen_fraction": th["warn_unseen_fraction"],
                          "fail_unseen_fraction": th["fail_unseen_fraction"]}
    ev["used_in_train"] = int((train_counts > 0).sum())
    ev["coverage"] = round(ev["used_in_train"] / max(tok.vocab_size, 1), 4)
    ev["most_common"] = [[tok.symbol(int(i)), int(train_counts[i])] for i in np.argsort(-train_counts)[:10]
                         if train_counts[i]]
    worst, worst_split = 0.0, "val"
    for s in ("val", "test"):
        ids = np.concatenate(ds.doc_tokens[s]) if ds.doc_tokens[s] else np.zeros(0, np.int64)
        unseen = (train_counts[ids] == 0) if len(ids) else np.zeros(0, bool)
        if tok.unk_id is not None:
            unseen |= ids == tok.unk_id
        frac = float(unseen.mean()) if len(ids) else 0.0
        ev[f"{s}_tokens"] = int(len(ids))
        ev[f"{s}_unseen"] = int(unseen.sum())
        ev[f"{s}_unseen_fraction"] = round(frac, 6)
        if tok.kind == "char":   # name the characters themselves: the ids are all one unknown
            chars = Counter(c for t in ds.docs[s].texts for c in t if c not in tok.index)
            ev[f"{s}_unseen_examples"] = [[c, n] for c, n in chars.most_common(EXAMPLES)]
        else:
            ev[f"{s}_unseen_examples"] = [[tok.symbol(int(i)), int(n)] for i, n in
                                          Counter(ids[unseen].tolist()).most_common(EXAMPLES)]
        if frac > worst:
            worst, worst_split = frac, s
    leaked = [s for s in tok.fitted_on if s != "train"]
    if leaked:
        return C.make("data.vocab", "fail", f"the {tok.kind} tokenizer was fitted on {'+'.join(tok.fitted_on)}: "
                      f"{'/'.join(leaked)} text shaped the vocabulary", ev,
                      "Fit the tokenizer on the train split only; val/test must be encoded with what train taught.")
    title = (f"{tok.vocab_size} tokens ({tok.kind}), {ev['coverage']:.0%} used in train; {worst:.3%} of "
             f"{worst_split} tokens never seen in train")
    if worst > th["fail_unseen_fraction"]:
        return C.make("data.vocab", "fail", title, ev, "Val/test hold symbols train never shows: use data.tokenizer:"
                      " byte (no unknowns) or bpe, or check that the splits come from one source and encoding.")
    if worst > th["warn_unseen_fraction"]:
        return C.make("data.vocab", "warn", title, ev, "Look at the unseen symbols listed; the model can only guess "
                      "them (char maps them to one unknown id).")
    return C.make("data.vocab", "pass", title, ev)


# ----------------------------------------------------------------------------- lengths


def check_lengths(ds, th) -> tuple[C.Check, Any]:
    """Document lengths in characters and tokens per split (and the histogram figure). Warns when more than
    max_truncated_fraction of classification documents are cut at data.block_size, or when val/test hold fewer
    than min_eval_windows windows (their loss would be noise)."""
    from recipe.data.text.pictures import length_histograms

    chars = {s: np.array([len(t) for t in ds.docs[s].texts], np.int64) for s in SPLITS}
    toks = {s: np.array([len(t) for t in ds.doc_tokens[s]], np.int64) for s in SPLITS}
    ev: dict[str, Any] = {"block_size": ds.block_size}
    for s in SPLITS:
        c, t = chars[s], toks[s]
        ev[s] = {"documents": int(len(c)), "chars": int(c.sum()), "tokens": int(t.sum()),
                 "chars_per_doc": _summary(c), "tokens_per_doc": _summary(t),
                 "chars_per_token": round(float(c.sum()) / max(int(t.sum()), 1), 3), "windows": int(len(
                     (ds.train if s == "train" else ds.val if s == "val" else ds.raw_test()).x))}
    problems = []
    if ds.task == "text-classification":
        cut = {s: float((toks[s] > ds.block_size).mean()) for s in SPLITS}
        ev["truncated_fraction"] = {s: round(v, 4) for s, v in cut.items()}
        ev["max_truncated_fraction"] = th["max_truncated_fraction"]
        if cut["train"] > th["max_truncated_fraction"]:
            problems.append(f"{cut['train']:.0%} of train documents are longer than data.block_size="
                            f"{ds.block_size} tokens and cut")
    else:
        ev["min_eval_windows"] = th["min_eval_windows"]
        few = [s for s in ("val", "test") if ev[s]["windows"] < th["min_eval_windows"]]
        if few:
            held = ", ".join(f"{s} holds {ev[s]['windows']} windows" for s in few)
            problems.append(f"{held} (fewer than {th['min_eval_windows']}): its loss is noise")
    fig = length_histograms(chars, toks, ds.block_size)
    t = ev["train"]
    title = (f"{t['documents']} train documents, median {t['chars_per_doc']['median']:.0f} characters / "
             f"{t['tokens_per_doc']['median']:.0f} tokens, {t['chars_per_token']} characters per token")
    if problems:
        return C.make("data.lengths", "warn", "; ".join(problems), ev,
                      "Raise data.block_size, or give val/test more text (data.split, data.chunk_chars)."), fig
    return C.make("data.lengths", "pass", title, ev), fig


def _summary(v: np.ndarray) -> dict[str, float]:
    if not len(v):
        return {"min": 0, "median": 0.0, "max": 0}
    return {"min": int(v.min()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": int(v.max())}


# ----------------------------------------------------------------------------- empty documents, bytes


def check_empty(ds, th) -> C.Check:
    """Empty or whitespace-only documents, named: a classifier learns a label for nothing; a language model gets
    runs of blank lines."""
    ev: dict[str, Any] = {"max_fraction": th["max_fraction"]}
    total, n = 0, 0
    for s in SPLITS:
        texts = ds.docs[s].texts
        blank = [i for i, t in enumerate(texts) if ngrams.blank(t)]
        total += len(blank)
        n += len(texts)
        ev[s] = len(blank)
        if blank:
            ev[f"{s}_examples"] = [ds.docs[s].names[i] for i in blank[:EXAMPLES]]
    frac = total / max(n, 1)
    ev["fraction"] = round(frac, 4)
    if not total:
        return C.make("data.empty", "pass", f"no empty or whitespace-only document among {n}", ev)
    where = "; ".join(f"{s}: {', '.join(ev[f'{s}_examples'])}" for s in SPLITS if ev[s])
    title = f"{total} of {n} documents ({frac:.1%}) are empty or whitespace only ({where})"
    advice = "Drop empty documents at the source; they carry no text to learn from."
    return C.make("data.empty", "fail" if frac > th["max_fraction"] else "warn", title, ev, advice)


def check_decode(files: list[str]) -> C.Check:
    """Every text file scanned for bytes that are not UTF-8, each place named by file and byte offset. Loading
    refuses such files (DataError); this check lists all of them at once (Parquet stores validated strings and
    is not scanned)."""
    scanned, found = [], []
    for f in files:
        p = Path(f)
        if p.suffix.lower() in (".txt",) + tuple(s for s in TABLE_SUFFIXES if "parquet" not in s and s != ".pq"):
            scanned.append(f)
            found += scan_bytes(p)
    ev: dict[str, Any] = {"files_scanned": len(scanned), "bytes_scanned": sum(Path(f).stat().st_size for f in scanned),
                          "places": len(found), "examples": [{"file": b.file, "byte_offset": b.offset, "line": b.line,
                                                              "bytes": b.bytes} for b in found[:EXAMPLES * 2]]}
    if found:
        files_bad = sorted({b.file for b in found})
        return C.make("data.decode", "fail", f"{len(found)} place(s) in {len(files_bad)} file(s) are not UTF-8: "
                      + "; ".join(f"{b.file} at byte offset {b.offset}" for b in found[:3]), ev,
                      "Re-save those files as UTF-8 (or remove the bytes named).")
    if not scanned:
        return C.make("data.decode", "pass", "no text file to scan (Parquet strings are validated when read)", ev)
    return C.make("data.decode", "pass", f"{len(scanned)} file(s), {ev['bytes_scanned']} bytes: all UTF-8", ev)


# ----------------------------------------------------------------------------- duplicates and leaks


def _ngram_length(ds, th) -> int:
    # 50 BPE tokens are ~200 characters; 50 characters are a phrase that natural text repeats on its own
    return int(th["ngram"] if ds.tokenizer.kind == "bpe" else th["ngram_chars"])


def check_duplicates(ds, th) -> C.Check:
    """Non-empty train documents that copy an earlier train document exactly."""
    texts = ds.docs["train"].texts
    first: dict[str, int] = {}
    copies = []
    for i, h in enumerate(ngrams.doc_hashes(texts)):
        if ngrams.blank(texts[i]):
            continue
        if h in first:
            copies.append((i, first[h]))
        else:
            first[h] = i
    n = len(texts)
    frac = len(copies) / max(n, 1)
    names = ds.docs["train"].names
    ev = {"copied_documents": len(copies), "documents": n, "fraction": round(frac, 4), "max_fraction": th["max_fraction"],
          "examples": [{"document": names[i], "copies": names[j], "text": _snip(texts[i])} for i, j in copies[:EXAMPLES]]}
    if frac > th["max_fraction"]:
        return C.make("data.duplicates", "warn", f"{len(copies)} train documents ({frac:.1%}) copy an earlier one "
                      f"exactly (e.g. {names[copies[0][0]]} = {names[copies[0][1]]})", ev,
                      "Deduplicate train: copies overweight some text and inflate train scores.")
    return C.make("data.duplicates", "pass", f"{len(copies)} exact duplicate document(s) in train ({frac:.1%})", ev)


def check_leak(ds, th) -> C.Check:
    """Text of one split that also sits in another: identical (non-empty) documents, and long n-grams (ngram
    tokens for bpe, ngram_chars for char/byte) shared across train/val/test, with examples. Fails when either
    exceeds max_fraction of the later split; shared n-grams below it are listed (natural text repeats some)."""
    max_fraction = th["max_fraction"]
    n = _ngram_length(ds, th)
    hashes = {s: ngrams.doc_hashes(ds.docs[s].texts) for s in SPLITS}
    ev: dict[str, Any] = {"max_fraction": max_fraction, "ngram": n, "ngram_unit": ds.tokenizer.kind + " tokens"}
    worst = (0.0, "", "")     # fraction, what, pair
    failing = []
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        da, db = ds.docs[a], ds.docs[b]
        where = {h: i for i, h in enumerate(hashes[a]) if not ngrams.blank(da.texts[i])}
        same = [(j, where[h]) for j, h in enumerate(hashes[b]) if h in where]
        frac_docs = len(same) / max(len(db.texts), 1)
        ev[f"{b}_docs_in_{a}"] = len(same)
        if same:
            ev[f"{b}_docs_in_{a}_examples"] = [{b: db.names[j], a: da.names[i], "text": _snip(db.texts[j])}
                                               for j, i in same[:EXAMPLES]]
        found = ngrams.shared_ngrams(ds.doc_tokens[a], ds.doc_tokens[b], n)
        ev[f"{b}_ngrams_in_{a}"] = {"positions": found["positions"], "shared": found["shared"],
                                    "fraction": round(found["fraction"], 5), "documents": found["docs"],
                                    "examples": [{b: db.names[j], a: da.names[i], "ngram": _snip(
                                        ds.tokenizer.decode(ds.doc_tokens[b][j][pj:pj + n]))}
                                        for j, pj, i, _ in found["examples"]]}
        for frac, what in ((frac_docs, f"{len(same)} {b} document(s) ({frac_docs:.1%}) also in {a}"),
                           (found["fraction"], f"{found['fraction']:.1%} of {b}'s {n}-token n-grams also occur in {a} "
                                               f"({found['docs']} {b} documents)")):
            if frac > max_fraction:
                failing.append((frac, what, (a, b)))
            if frac > worst[0]:
                worst = (frac, what, f"{b}_in_{a}")
    ev["worst"] = worst[2]
    ev["worst_fraction"] = round(worst[0], 5)
    if failing:
        failing.sort(reverse=True)
        frac, what, (a, b) = failing[0]
        example = (ev.get(f"{b}_docs_in_{a}_examples") or ev[f"{b}_ngrams_in_{a}"]["examples"])[:1]
        shown = f" (e.g. {example[0][b]} ~ {example[0][a]})" if example else ""
        return C.make("data.leak", "fail", f"{what}{shown}" + (f"; {len(failing) - 1} more pair(s)" if len(failing) > 1
                                                               else ""), ev,
                      "Deduplicate documents (and repeated long passages) before splitting, so val/test measure "
                      "text the model has not read.")
    docs_shared = sum(ev[f"{b}_docs_in_{a}"] for a, b in (("train", "val"), ("train", "test"), ("val", "test")))
    if docs_shared:
        return C.make("data.leak", "warn", f"{docs_shared} document(s) appear in two splits (below "
                      f"{max_fraction:.0%} of a split)", ev, "Deduplicate documents before splitting.")
    return C.make("data.leak", "pass", f"no document in two splits; shared {n}-grams at most {worst[0]:.2%} of a "
                  "split (below max_fraction)", ev)


# ----------------------------------------------------------------------------- windows


def check_windows(ds, sample: int = 4, seed: int = 0) -> C.Check:
    """A sample of training windows decoded exactly as the model sees them, and the invariants that make them
    right: language model, targets are the inputs shifted by one and consecutive windows continue each other;
    classification, padding only after a document's tokens and the pad id outside the tokenizer's ids."""
    x, y = ds.train.x, ds.train.y
    tok = ds.tokenizer
    problems = []
    ev: dict[str, Any] = {"windows": int(len(x)), "block_size": ds.block_size}
    if ds.task == "language-model":
        bad = np.flatnonzero((x[:, 1:] != y[:, :-1]).any(axis=1))
        gaps = np.flatnonzero(y[:-1, -1] != x[1:, 0]) if len(x) > 1 else np.zeros(0, int)
        ev.update(not_shifted=int(len(bad)), discontinuous=int(len(gaps)),
                  targets_equal_inputs=int((x == y).all(axis=1).sum()))
        if len(bad):
            problems.append(f"{len(bad)} window(s) whose targets are not the inputs shifted by one (first: window "
                            f"{int(bad[0])}" + (", targets equal the inputs" if (x[bad[0]] == y[bad[0]]).all() else "") + ")")
        if len(gaps):
            problems.append(f"{len(gaps)} window(s) whose last target is not the next window's first input "
                            f"(first: window {int(gaps[0])})")
    else:
        pad = ds.pad_id
        is_pad = x == pad
        inner = np.flatnonzero((is_pad[:, :-1] & ~is_pad[:, 1:]).any(axis=1))   # pad followed by a real token
        ev.update(pad_id=pad, pad_inside=int(len(inner)), pad_is_a_token=bool(pad < tok.vocab_size))
        if len(inner):
            problems.append(f"{len(inner)} document(s) with padding before their tokens end (first: row {int(inner[0])})")
        if pad < tok.vocab_size:
            problems.append(f"pad id {pad} is also the token {tok.symbol(pad)!r}")
    pick = np.sort(np.random.default_rng(seed).choice(len(x), min(sample, len(x)), replace=False))
    shown, block = [], []
    for i in pick:
        ids = x[i]
        if ds.task == "language-model":
            doc = ds.docs["train"].names[int(ds.train.rows[i])]
            item = {"window": int(i), "document": doc, "input": tok.decode(ids), "next_token": tok.decode(y[i][-1:])}
            block.append(f"--- window {i} ({doc}), then {item['next_token']!r}\n{item['input']}")
        else:
            real = ids[ids != ds.pad_id]
            label = ds.classes[int(y[i])]
            item = {"document": ds.docs["train"].names[i], "label": label, "input": tok.decode(real),
                    "pad": int(len(ids) - len(real))}
            block.append(f"--- {item['document']} label {label!r}, {item['pad']} pad\n{item['input']}")
        shown.append(item)
    ev["sample"] = shown
    ev["text_block"] = "\n".join(block)
    if problems:
        return C.make("data.windows", "fail", "; ".join(problems), ev,
                      "Build targets as inputs shifted by one token (x = s[i:i+T], y = s[i+1:i+T+1]); pad after the "
                      "tokens with an id the tokenizer never emits.")
    return C.make("data.windows", "pass", f"{len(x)} windows of {ds.block_size} tokens; {len(shown)} shown decoded", ev)


# ----------------------------------------------------------------------------- all together


def text_checks(ds, th: Callable[[str], dict], files: Optional[list[str]] = None) -> tuple[list[C.Check], dict]:
    """Every text data check in report order, and the figures to save (name -> matplotlib Figure). The label
    checks of text-classification are the table's, added by recipe/data/kinds/text.py."""
    lengths, fig = check_lengths(ds, th("data.lengths"))
    checks = [check_decode(list(files if files is not None else ds.files)), check_vocab(ds, th("data.vocab")),
              lengths, check_empty(ds, th("data.empty")), check_duplicates(ds, th("data.duplicates")),
              check_leak(ds, th("data.leak")), check_windows(ds)]
    return checks, {"lengths.png": fig}
