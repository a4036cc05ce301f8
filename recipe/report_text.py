"""The report's language-model card: the final model's val loss curves (nats/token, beside the best n-gram model)
next to text sampled from it.

Samples are generated when the report is written, from the final model in ensemble.json with a fixed seed, so
the same records give the same page. Their prompts are train text (the starts of the training windows inspect
decoded in data.windows), never test text. This is the one part of the report that imports torch, and only for a
language model whose ensemble has written its final model.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

SEED = 0                     # sample i's seed is SEED + i: a report of the same records shows the same text
TOKENS = 200
TEMPERATURE = 0.8
TOP_K = 40
PROMPTS = 3
PROMPT_CHARS = 24
CURVE_STAGES = ("ensemble", "tune", "regularize", "overfit-batch", "baseline")   # where the final model's kind trained

CSS = """
.lm{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:14px;align-items:start}
.sample{white-space:pre-wrap;background:#f6f8fa;border:1px solid #eaeef2;border-radius:6px;padding:8px 10px;
margin:0 0 8px;font-size:12px;overflow-wrap:anywhere}
.sample b{color:#0969da;font-weight:600}
@media (max-width:900px){.lm{grid-template-columns:1fr}}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prompts(ws) -> list[str]:
    """Train text to start the samples from: the first PROMPT_CHARS characters of the training windows inspect
    showed (data.windows); else the most common train token (data.vocab). Never val or test text."""
    rec = ws.read_record("inspect") or {}
    checks = {c.get("id"): c for c in rec.get("checks") or []}
    shown = [s.get("input", "") for s in (checks.get("data.windows") or {}).get("evidence", {}).get("sample") or []]
    out = [s[:PROMPT_CHARS] for s in shown if s.strip()][:PROMPTS]
    if not out:
        common = (checks.get("data.vocab") or {}).get("evidence", {}).get("most_common") or []
        out = [common[0][0]] if common else []
    return out


def samples(cfg, ws, art: dict[str, Any]) -> tuple[list[dict[str, Any]], Optional[str]]:
    """(samples, why not): each a predict_text.sample result; why not names what stopped them."""
    from recipe import predict_text as PT
    from recipe.errors import RecipeError

    starts = prompts(ws)
    if not starts:
        return [], "inspect recorded no training window to take a prompt from: rerun 'recipe inspect'"
    try:
        final = PT.load(cfg, ws, art, "cpu")
        out = []
        for i, p in enumerate(starts):
            try:      # seed SEED + i: one shared draw sequence would make the samples converge on one text
                out.append(PT.sample(final, p, TOKENS, TEMPERATURE, TOP_K, SEED + i))
            except RecipeError:      # a window of unknown characters only: nothing the tokenizer can encode
                continue
        return out, None if out else "no prompt could be encoded"
    except (RecipeError, OSError, KeyError) as e:
        return [], str(e)


def _curves(ws, art: dict[str, Any]) -> tuple[str, int]:
    """Val loss per epoch of the runs of the first stage (ensemble, tune, ...) that left curves, with the best
    n-gram model's val loss and the final model's as lines."""
    from recipe.engine.runlog import read_metrics
    from recipe.plots import plt

    stage, runs = None, []
    for s in CURVE_STAGES:
        sdir = ws.stage_dir(s)
        for path in sorted(sdir.rglob("metrics.jsonl")) if sdir.exists() else []:
            rows = [r for r in read_metrics(path)[0] if r.get("val_loss") is not None]
            if rows:
                runs.append((path.parent.name if path.parent != sdir else s, rows))
        if runs:
            stage = s
            break
    base = _json(ws.stage_dir("baseline") / "baselines.json") or {}
    if not runs and base.get("best_dumb_val") is None:
        return '<p class="meta">no run left a val loss curve yet</p>', 0
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for name, rows in runs[:12]:
        ax.plot([r["epoch"] for r in rows], [r["val_loss"] for r in rows], marker=".", linewidth=1, label=name)
    if base.get("best_dumb_val") is not None:
        ax.axhline(base["best_dumb_val"], color="#cf222e", linestyle="--", linewidth=1,
                   label=f"best n-gram ({base.get('best_dumb')}) {base['best_dumb_val']:.3f}")
    if isinstance(art.get("val"), (int, float)) and math.isfinite(art["val"]):
        ax.axhline(art["val"], color="#1a7f37", linestyle=":", linewidth=1,
                   label=f"final model ({art.get('final', 'ensemble').replace('_', ' ')}) {art['val']:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.13, right=0.98, bottom=0.15, top=0.97)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    caption = (f"val loss of {len(runs)} {stage} run(s)" if runs else "no run curves") + \
        (" and the best n-gram model" if base.get("best_dumb_val") is not None else "")
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="val loss curve"><figcaption>{_e(caption)}'
            "</figcaption></figure>"), 1


def final_rows(detail: dict[str, Any]) -> list[tuple[str, Any]]:
    """Lines of the final result for a language model's test: perplexity with its interval, and the best n-gram
    model (chosen on val) scored on the same test documents, with the network's gain over it."""
    rows: list[tuple[str, Any]] = []
    if detail.get("perplexity") is not None:
        lo, hi = detail.get("perplexity_ci95") or [math.nan, math.nan]
        rows.append(("test perplexity", f"{detail['perplexity']:.4g} (95% interval {lo:.4g} – {hi:.4g})"))
    ngram = detail.get("ngram") or {}
    best = (ngram.get("models") or {}).get(ngram.get("best"))
    if best:
        g = ngram.get("gain") or {}
        lo, hi = g.get("ci95") or [math.nan, math.nan]
        rows.append((f"best n-gram on test ({ngram['best']}, chosen on val)",
                     f"{best['test_loss']:.4f} nats/token; the final model's gain {g.get('mean', math.nan):+.4f} "
                     f"(95% interval {lo:+.4f} – {hi:+.4f} over {g.get('n_documents', '?')} test documents; > 0: "
                     "the final model predicts test better)"))
    return rows


def section(cfg, ws) -> tuple[str, int]:
    """The card (HTML) and its number of pictures; empty for anything but a language model's final model."""
    from recipe.predict_text import is_language_model

    art = _json(ws.stage_dir("ensemble") / "ensemble.json")
    if not isinstance(art, dict) or not is_language_model(art):
        return "", 0
    curve, n = _curves(ws, art)
    got, why = samples(cfg, ws, art)
    if got:
        shown = "".join(f'<pre class="sample mono"><b>{_e(s["prompt"])}</b>{_e(s["continuation"])}</pre>' for s in got)
    else:
        shown = f'<p class="meta">samples not available: {_e(why)}</p>'
    how = (f"generated when this report was written from the final model ({_e(art.get('final', 'ensemble'))}): "
           f"{TOKENS} tokens each, temperature {TEMPERATURE}, top-k {TOP_K}, seeds {SEED}, {SEED + 1}, ...; prompts "
           f"(bold) are the "
           f"first {PROMPT_CHARS} characters of training windows, never test text")
    return (f'<section class="card" id="samples"><h2>Language model: val loss and samples</h2><div class="lm">'
            f'<div>{curve}</div><div><h3 style="margin-top:0">Samples</h3>{shown}<p class="meta">{how}</p></div>'
            "</div></section>"), n
