"""Stage 2 for token inputs (text data): the skeleton run and the checks only a sequence model can fail.

Language models get the n-gram baselines (recipe/baselines/ngram.py) as their dumb baselines, baseline.causal,
baseline.target-shift and baseline.padding on the loss the engine trains with, and the unigram model as the
masked-input reference. Text classifiers get a majority and a bag-of-words model, and baseline.padding on
their inputs (pad positions must not move a document's logits). Both share the seed, loss-decreases,
batch-independence, grad-flow and health checks with tables; `baselines.json` keeps the table keys, in the
task's units (nats per token for a language model: lower is better).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recipe import checks as C
from recipe import tasks
from recipe.baselines import ngram
from recipe.engine import sequence_checks as S
from recipe.engine import sequence_init as SI
from recipe.engine import sequence_targets as TG
from recipe.engine import train as E
from recipe.models import create
from recipe.stage import StageResult
from recipe.stages import baseline as B
from recipe.tasks.language_model import IGNORE_INDEX

PAD_TAIL = 4            # baseline.padding (language model): the last targets of each probed window become pads
PROBE_WINDOWS = 64      # windows the init checks and the padding check look at


def _as_built(cfg, ds, seed: int):
    """The model as the user built it (PyTorch's or the factory's init), before recipe's output-bias init."""
    from recipe.models_seq import create_sequence

    return create_sequence(cfg.model, ds.vocab_size, ds.block_size, ds.num_outputs, task=ds.task, seed=seed,
                           pad_id=ds.pad_id, priors=None)


def _train_kwargs(cfg, ds) -> dict[str, Any]:
    t = cfg.train
    from recipe.engine.train import schedule_from_config

    return dict(task=ds.task, num_classes=ds.num_outputs, optimizer=t.optimizer, lr=t.lr,
                weight_decay=t.weight_decay, batch_size=t.batch_size, seed=cfg.seed, precision=t.precision,
                health_thresholds=cfg.checks, grad_clip=t.grad_clip, schedule=schedule_from_config(t))


# ----------------------------------------------------------------------------- dumb baselines


def ngram_baselines(ds) -> dict[str, dict]:
    """Unigram, bigram and Kneser-Ney 3- and 5-gram models fitted on the train documents, scored on train and val."""
    return ngram.fit_baselines(ds.doc_tokens["train"], ds.doc_tokens["val"], ds.vocab_size)


def bag_of_words(x: np.ndarray, pad_id: int, vocab: int) -> np.ndarray:
    """(N, V) token counts of each padded document, pad excluded, each row scaled to sum 1."""
    counts = np.zeros((len(x), vocab), np.float32)
    rows = np.repeat(np.arange(len(x)), x.shape[1])
    keep = x.reshape(-1) != pad_id
    np.add.at(counts, (rows[keep], x.reshape(-1)[keep]), 1.0)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def text_class_baselines(ds, seed: int) -> dict[str, dict]:
    """Majority class and logistic regression on bag-of-words counts, train and val accuracy (sklearn)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    vocab = ds.vocab_size - 1
    xt, xv = (bag_of_words(s.x, ds.pad_id, vocab) for s in (ds.train, ds.val))
    out = {}
    for name, m in {"majority": DummyClassifier(strategy="most_frequent"),
                    "bag_of_words": LogisticRegression(max_iter=500, random_state=seed)}.items():
        m.fit(xt, ds.train.y)
        pred = m.predict(xv)
        out[name] = {"train": float(m.score(xt, ds.train.y)), "val": float(m.score(xv, ds.val.y)),
                     "val_per_class": [float((pred[ds.val.y == c] == c).mean()) if (ds.val.y == c).any() else None
                                       for c in range(ds.num_classes)]}
    return out


def check_text_class_dumb(dumb: dict) -> C.Check:
    best = max(dumb, key=lambda k: dumb[k]["val"])
    ev = {k: {"train": round(v["train"], 4), "val": round(v["val"], 4)} for k, v in dumb.items()}
    ev.update(best=best, metric="accuracy")
    if dumb["bag_of_words"]["val"] - dumb["majority"]["val"] < 0.01:
        return C.make("baseline.dumb", "warn", f"a bag-of-words model does not beat the majority class (val "
                      f"accuracy {dumb['majority']['val']:.3f})", ev,
                      "The words barely predict the label: check the label column and the documents' text.")
    return C.make("baseline.dumb", "pass", f"best dumb baseline: {best}, val accuracy {dumb[best]['val']:.4f}", ev)


# ----------------------------------------------------------------------------- language-model checks


def check_lm_padding(model, tr, th) -> C.Check:
    """The loss the engine trains with, on the model's logits, with the last PAD_TAIL targets of each window
    marked as padding (IGNORE_INDEX): pads must not move it."""
    task = tasks.get("language-model")
    x, y = tr.x[:16], tr.y[:16].clone()
    y[:, -PAD_TAIL:] = IGNORE_INDEX
    with torch.no_grad():
        logits = model.eval()(x).float()
    model.train()
    return TG.check_padding(task.loss, logits, y, IGNORE_INDEX, th)


def _lm_checks(cfg, ctx, ds, model, built, tr, va, unigram) -> tuple[list[C.Check], float, float]:
    th = ctx.thresholds
    task = tasks.get(ds.task)
    probe = tr.x[:PROBE_WINDOWS]
    init_loss = float(S.window_losses(model, probe, tr.y[:PROBE_WINDOWS]).mean())
    built_loss = float(S.window_losses(built, probe, tr.y[:PROBE_WINDOWS]).mean())
    uni_loss = float(S.unigram_window_losses(unigram, tr.y[:PROBE_WINDOWS].cpu().numpy()).mean())
    init = SI.check_init_loss(init_loss, ds.vocab_size, uni_loss, th("baseline.init-loss"))
    init.evidence["initial_loss_as_built"] = round(built_loss, 5)
    checks = [init, SI.check_bias_init(model, probe, unigram, th("baseline.bias-init")),
              SI.check_loss_input(model, probe),
              S.check_causal(model, probe, th("baseline.causal"), cfg.seed),
              S.check_batch_independence(model, probe, th("baseline.batch-independence"), cfg.seed),
              S.check_grad_flow(model, probe, tr.y[:PROBE_WINDOWS], task.loss),
              check_lm_padding(model, tr, th("baseline.padding"))]
    return checks, init_loss, uni_loss


def _text_class_checks(cfg, ctx, ds, model, built, tr, report) -> tuple[list[C.Check], float, float]:
    th = ctx.thresholds
    task = tasks.get(ds.task)
    init_check, init_loss, expected = B.check_init_loss(built, model, tr, ds, report, th("baseline.init-loss"))
    probe = tr.x[:PROBE_WINDOWS]
    checks = [init_check, B.check_bias_init(built, model, tr, ds, th("baseline.bias-init")),
              B.check_loss_input(model, tr, ds),
              S.check_batch_independence(model, probe, th("baseline.batch-independence"), cfg.seed),
              S.check_grad_flow(model, probe, tr.y[:PROBE_WINDOWS], lambda o, y: task.loss(o, y)),
              S.check_pad_inputs(model, tr.x, ds.pad_id, th("baseline.padding"))]
    return checks, init_loss, expected


# ----------------------------------------------------------------------------- pictures


def _batch_dump(ctx, ds, tr) -> None:
    """The first training batch exactly as the model sees it, decoded (batch.txt), and its ids (batch.json)."""
    bs = min(ctx.cfg.train.batch_size, len(tr), 8)
    x = tr.x[:bs].cpu().numpy()
    y = tr.y[:bs].cpu().numpy()
    decode = ds.tokenizer.decode
    keep = (lambda row: row[row != ds.pad_id]) if ds.pad_id is not None else (lambda row: row)
    lines = []
    for i in range(bs):
        label = f"label {ds.classes[int(y[i])]!r}" if ds.classes else f"target starts {decode(y[i][:8].tolist())!r}"
        lines.append(f"--- window {i} ({label})\n{decode(keep(x[i]).tolist())}")
    ctx.artifacts.text("batch.txt", "\n".join(lines) + "\n")
    ctx.artifacts.json("batch.json", {"batch_size": bs, "block_size": ds.block_size, "ids": x[:4].tolist(),
                                      "targets": y[:4].tolist()})


# ----------------------------------------------------------------------------- the stage


def run(cfg, ctx) -> StageResult:
    ds = ctx.data()
    report = ctx.upstream_json("inspect", "data_report.json")
    th = ctx.thresholds
    tr, va = ctx.tensors("train"), ctx.tensors("val")
    task = tasks.get(ds.task)
    lm = not task.has_classes
    kwargs = _train_kwargs(cfg, ds)
    checks: list[C.Check] = []
    with ctx.progress("baseline", 5) as bar:
        model = create(cfg, ds, cfg.seed).to(ctx.device)
        built = _as_built(cfg, ds, cfg.seed).to(ctx.device)
        seed_curve = lambda i: ctx.artifacts.path(f"runs/seed_run{i}/metrics.jsonl")   # noqa: E731
        checks.append(B.check_seed(cfg, ds, tr, kwargs, seed_curve))
        if lm:
            results = ngram_baselines(ds)
            unigram = ngram.NGram(1, ds.vocab_size).fit(ds.doc_tokens["train"])
            model_checks, init_loss, expected = _lm_checks(cfg, ctx, ds, model, built, tr, va, unigram)
            dumb = {k: {"train": v["train"]["loss"], "val": v["val"]["loss"],
                        "val_perplexity": v["val"]["perplexity"]} for k, v in results.items()}
            dumb_check = TG.check_ngram_baselines(results, ds.vocab_size)
            best_name = min(dumb, key=lambda k: dumb[k]["val"])
        else:
            model_checks, init_loss, expected = _text_class_checks(cfg, ctx, ds, model, built, tr, report)
            dumb = text_class_baselines(ds, cfg.seed)
            dumb_check = check_text_class_dumb(dumb)
            best_name = max(dumb, key=lambda k: dumb[k]["val"])
        checks += model_checks + [dumb_check]
        bar.update(2)
        t = cfg.train
        epochs = min(t.epochs, B.SHORT_EPOCHS)
        real = E.fit(model, tr, va, **kwargs, epochs=epochs, max_seconds=B.SHORT_SECONDS,
                     metrics_path=ctx.artifacts.path("metrics.jsonl"))
        ctx.artifacts.add("metrics.jsonl")
        bar.update(4)
        real_score = float(real.best.get("score", float("nan")))
        if lm:
            model_rows = S.window_losses(model, va.x, va.y)
            checks.append(S.check_beats_unigram(model_rows, S.unigram_window_losses(unigram, va.y.cpu().numpy()),
                                                th("baseline.input-independent"), cfg.seed))
            early = {"loss": float(real.best.get("loss", real_score)), "steps": real.steps, "best_ngram": best_name,
                     "best_ngram_loss": dumb[best_name]["val"]}
            checks.append(TG.check_target_shift(tr.x, tr.y, th("baseline.target-shift"), None, early))
        else:
            checks.append(_zeroed_tokens_check(cfg, ds, model, tr, va, kwargs, epochs, ctx))
        checks.append(B.check_loss_decreases(init_loss, real, th("baseline.loss-decreases")))
        checks += real.health
        bar.update(5)
    _batch_dump(ctx, ds, tr)
    baselines = {"task": ds.task, "metric": task.metric, "dumb": dumb, "best_dumb": best_name,
                 "best_dumb_val": dumb[best_name]["val"], "best_dumb_train": dumb[best_name]["train"],
                 "expected_init_loss": expected, "init_loss": init_loss,
                 "skeleton": {"val_score": real_score, "epochs": len(real.history), **real.summary()}}
    if lm:
        baselines["ngram"] = {k: {"order": v["order"], "train_loss": v["train"]["loss"], "val_loss": v["val"]["loss"],
                                  "val_perplexity": v["val"]["perplexity"]} for k, v in results.items()}
        summary = (f"best n-gram {best_name} val {dumb[best_name]['val']:.4f} nats/token; skeleton net val "
                   f"{real_score:.4f} after {len(real.history)} epochs; init loss {init_loss:.3f} (unigram "
                   f"{expected:.3f}, ln V {np.log(ds.vocab_size):.3f})")
    else:
        summary = (f"best dumb baseline {best_name} val {dumb[best_name]['val']:.4f}; skeleton net val "
                   f"{real_score:.4f} after {len(real.history)} epochs; init loss {init_loss:.3f} (expected "
                   f"{expected:.3f})")
    ctx.artifacts.json("baselines.json", baselines)
    return StageResult(checks, metrics={"best_dumb_val": dumb[best_name]["val"], "skeleton_val": real_score,
                                        "init_loss": init_loss}, summary=summary)


def _zeroed_tokens_check(cfg, ds, model, tr, va, kwargs, epochs, ctx) -> C.Check:
    """baseline.input-independent for text classification: the same model trained on all-pad documents (every
    token masked) against the real one, on val, as for tables."""
    pad_tr = E.Tensors(torch.full_like(tr.x, ds.pad_id), tr.y)
    pad_va = torch.full_like(va.x, ds.pad_id)
    masked = create(cfg, ds, cfg.seed).to(ctx.device)
    E.fit(masked, pad_tr, E.Tensors(pad_va, va.y), **kwargs, epochs=epochs, max_seconds=B.SHORT_SECONDS,
          metrics_path=ctx.artifacts.path("runs/zero_input/metrics.jsonl"))
    p = cfg.train.precision
    return B.check_input_independent(E.predict(model, va.x, precision=p), E.predict(masked, pad_va, precision=p),
                                     va.y, ds, ctx.thresholds("baseline.input-independent"), cfg.seed)
