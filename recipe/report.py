"""One self-contained HTML page per experiment: every stage's verdict, checks, evidence, pictures and the test result.

The page has inline CSS and base64 PNGs, no script and nothing from the network, so it can be mailed or
archived as one file. Imports neither torch nor scikit-learn: it only reads records, artifacts and the runs'
metrics.jsonl curves. The one exception is a language model's card (recipe/report_text.py), whose samples are
generated from the final model when the report is written.
"""
from __future__ import annotations

import base64
import html
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from recipe.workspace import PASSING, STAGES, Workspace, atomic_write_bytes, stage_state

TITLES = {
    "inspect": "Become one with the data",
    "baseline": "End-to-end skeleton and dumb baselines",
    "overfit-batch": "Overfit one batch, then the train set",
    "regularize": "Regularize: trade train fit for validation",
    "tune": "Tune hyperparameters",
    "ensemble": "Squeeze out the juice, then touch test once",
}
STATE_COLORS = {"passed": "#1a7f37", "forced": "#9a6700", "failed": "#cf222e", "interrupted": "#8250df",
                "stale": "#bc4c00", "missing": "#6e7781", "pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e",
                "skip": "#6e7781"}
HIDDEN_EVIDENCE = ("row_hashes",)     # bulky and meaningless to a reader; the record keeps them

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:0;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
h3{font-size:15px;margin:18px 0 8px}
.meta{color:#57606a;font-size:12.5px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 18px;margin:16px 0}
.pill{display:inline-block;border-radius:999px;padding:1px 10px;color:#fff;font-size:12px;font-weight:600;
text-transform:uppercase;letter-spacing:.03em;white-space:nowrap}
.pipeline{display:grid;grid-template-columns:repeat(6,1fr);gap:8px;margin:16px 0}
.step{display:block;background:#fff;border:1px solid #d0d7de;border-top:5px solid;border-radius:8px;padding:8px 10px;
text-decoration:none;color:inherit}
.step b{display:block;font-size:13px;margin-bottom:3px}.step .count{font-size:12px;color:#57606a}
.final{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-end}
.big{font-size:40px;font-weight:700;line-height:1}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13px}
.kv dt{color:#57606a}.kv dd{margin:0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;vertical-align:top;border-bottom:1px solid #eaeef2;padding:6px 8px}
th{background:#f6f8fa;font-weight:600}
tr.warn td{background:#fff8c5}tr.fail td{background:#ffebe9}
td.id{white-space:nowrap}
.ev{font-size:12px;color:#424a53;max-width:420px;overflow-wrap:anywhere}
.ev span{display:inline-block;margin-right:10px}.ev b{font-weight:600;color:#57606a}
.advice{font-size:12.5px}
.refs{color:#6e7781;font-size:11.5px}
.reasons{margin:10px 0;padding:8px 12px 8px 28px;background:#fff1e5;border:1px solid #ffd8b5;border-radius:6px}
.reasons.failed{background:#ffebe9;border-color:#ffcecb}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:12px;margin-top:10px}
figure{margin:0;background:#fff;border:1px solid #eaeef2;border-radius:6px;padding:6px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:12px;color:#57606a;text-align:center;margin-top:4px}
details summary{cursor:pointer;color:#0969da;font-size:12px}
.num{text-align:right;font-variant-numeric:tabular-nums}
@media print{.figs{grid-template-columns:1fr 1fr}body{background:#fff}}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any, depth: int = 0) -> str:
    """A compact, readable rendering of an evidence value."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, bool) or v is None or isinstance(v, int):
        return json.dumps(v)
    if isinstance(v, str):
        return v if len(v) <= 160 else v[:157] + "…"
    if isinstance(v, (list, tuple)):
        items = [_fmt(x, depth + 1) for x in v[:8]]
        return "[" + ", ".join(items) + (f", … ({len(v)} in all)" if len(v) > 8 else "") + "]"
    if isinstance(v, dict):
        if depth > 1:
            return "{…}"
        items = [f"{k}: {_fmt(x, depth + 1)}" for k, x in list(v.items())[:8]]
        return "{" + ", ".join(items) + (f", … ({len(v)} keys)" if len(v) > 8 else "") + "}"
    return str(v)


def _pill(state: str) -> str:
    return f'<span class="pill" style="background:{STATE_COLORS.get(state, "#6e7781")}">{_e(state)}</span>'


def _evidence(ev: dict[str, Any]) -> str:
    parts = [f"<span><b>{_e(k)}</b> {_e(_fmt(v))}</span>" for k, v in ev.items() if k not in HIDDEN_EVIDENCE]
    return "".join(parts)


def _checks_table(checks: list[dict]) -> str:
    if not checks:
        return '<p class="meta">no checks recorded</p>'
    rows = []
    for c in checks:
        status = c.get("status", "skip")
        ev = _evidence(c.get("evidence") or {})
        if status in ("pass", "skip") and ev:
            ev = f"<details><summary>evidence</summary>{ev}</details>"
        refs = " ".join(c.get("refs") or [])
        rows.append(f'<tr class="{_e(status)}"><td>{_pill(status)}</td><td class="id"><code>{_e(c.get("id"))}</code>'
                    f'</td><td>{_e(c.get("title", ""))}<div class="ev">{ev}</div></td>'
                    f'<td class="advice">{_e(c.get("advice") or "")}<div class="refs">{_e(refs)}</div></td></tr>')
    return ("<table><thead><tr><th>status</th><th>check</th><th>finding and evidence</th><th>advice · source</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _caption(rel: str) -> str:
    return Path(rel).stem.replace("_", " ")


def _figures(stage_dir: Path, record: dict) -> tuple[str, int]:
    rels = [rel for rel in (record.get("artifacts") or {}) if rel.lower().endswith(".png")]
    figs = []
    for rel in rels:
        path = stage_dir / rel
        try:
            data = base64.b64encode(path.read_bytes()).decode()
        except OSError:
            figs.append(f'<figure><figcaption>{_e(rel)}: missing on disk</figcaption></figure>')
            continue
        figs.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_e(stage_dir.name + "/" + rel)}">'
                    f'<figcaption>{_e(_caption(rel))}</figcaption></figure>')
    if not figs:
        return "", 0
    return '<h3>Pictures</h3><div class="figs">' + "".join(figs) + "</div>", len(rels)


MAX_CURVES = 40      # runs drawn per stage (tune can have hundreds); the rest are counted in the caption


def _run_curves(stage_dir: Path) -> tuple[str, int]:
    """Every run's metrics.jsonl under the stage folder, drawn as train and val loss per epoch (one line a run)."""
    import io

    from recipe.engine.runlog import read_metrics
    from recipe.plots import plt

    paths = sorted(stage_dir.rglob("metrics.jsonl"))
    runs = []
    for path in paths:
        epochs, _ = read_metrics(path)
        if epochs:
            name = path.parent.name if path.parent != stage_dir else "skeleton"
            runs.append((name, epochs))
    if not runs:
        return "", 0
    shown = runs[:MAX_CURVES]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for name, rows in shown:
        xs = [r["epoch"] for r in rows]
        axes[0].plot(xs, [r.get("train_loss", math.nan) for r in rows], label=name, linewidth=1)
        axes[1].plot(xs, [r.get("val_loss", math.nan) for r in rows], label=name, linewidth=1)
    for ax, what in zip(axes, ("train loss", "val loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if len(shown) <= 10:
        axes[1].legend(fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.95, wspace=0.25)   # tight_layout costs 0.1 s
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    more = f" (first {MAX_CURVES} of {len(runs)})" if len(runs) > MAX_CURVES else ""
    caption = f"curves of {len(runs)} run(s) from their metrics.jsonl{more}"
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<h3>Every run\'s curve</h3><div class="figs"><figure><img src="data:image/png;base64,{data}" '
            f'alt="{_e(stage_dir.name)} run curves"><figcaption>{_e(caption)}</figcaption></figure></div>'), 1


def _health_table(rows: list[dict]) -> str:
    """The worst status per health check over every run a stage trained, and the run that had it."""
    if not rows:
        return ""
    body = "".join(f'<tr class="{_e(r["worst"])}"><td class="id mono">{_e(r["id"])}</td><td>{_pill(r["worst"])}</td>'
                   f'<td>{_e(r["run"])}</td><td>{_e(r["title"])}</td>'
                   f'<td class="ev">{_e(", ".join(f"{k} {v}" for k, v in r["runs"].items()))}</td></tr>'
                   for r in rows)
    return ("<h3>Health of every run</h3><table><thead><tr><th>check</th><th>worst</th><th>run</th><th>what</th>"
            f"<th>runs by status</th></tr></thead><tbody>{body}</tbody></table>")


def _counts(checks: list[dict]) -> str:
    n = {s: sum(1 for c in checks if c.get("status") == s) for s in ("pass", "warn", "fail", "skip")}
    return " · ".join(f"{v} {k}" for k, v in n.items() if v) or "no checks"


def _final(ws: Workspace, state: str) -> str:
    """The headline: the final model's test score with its interval, beside the alternatives."""
    path = ws.stage_dir("ensemble") / "ensemble.json"
    try:
        art = json.loads(path.read_text())
    except (OSError, ValueError):
        rec = ws.read_record("ensemble") or {}
        skipped = [c for c in rec.get("checks") or [] if c.get("id") == "ensemble.test" and c.get("status") == "skip"]
        why = (f"the ensemble stage did not open the sealed test split: {_e(skipped[0].get('title'))}. "
               f"{_e(skipped[0].get('advice'))}" if skipped else "the sealed test split is evaluated by "
               "<code>recipe ensemble</code>, which has not run.")
        return f'<section class="card" id="final"><h2>Final test result</h2><p class="meta">not available: {why}</p></section>'

    detail = art.get("test_detail") or {}
    metric = art.get("test_metric") or detail.get("metric", "score")
    lo, hi = art.get("test_ci95") or [math.nan, math.nan]
    final = art.get("final", "ensemble").replace("_", " ")
    rows = [("ensemble val", art.get("val")), ("best single member", f"{art.get('best_member')} "
            f"(val {_fmt(art.get('best_single_val'))}, test {_fmt(art.get('best_single_test'))})")]
    if detail.get("ensemble_score") is not None:     # only where it did not ship: never shown as the result
        rows.append(("ensemble test (not shipped)", detail["ensemble_score"]))
    st = art.get("student")
    if st:
        rows.append(("distilled student", f"val {_fmt(st.get('val'))}, test {_fmt(st.get('test'))}, "
                     f"temperature {st.get('temperature')}"))
    if detail.get("ece") is not None:
        rows.append(("calibration (ECE)", detail["ece"]))
    if detail.get("rmse") is not None:
        rows.append(("RMSE (target units)", detail["rmse"]))
    from recipe.report_text import final_rows

    rows += final_rows(detail)        # a language model: test perplexity and the n-gram models on test
    rows.append(("test rows", detail.get("rows")))
    cost = art.get("inference_cost") or {}
    for name, c in cost.items():
        rows.append((f"inference cost, {name.replace('_', ' ')}",
                     f"{c.get('parameters', 0):,} parameters, {_fmt(c.get('ms_per_1000_rows'))} ms / 1000 rows"))
    kv = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_fmt(v))}</dd>" for k, v in rows)
    stale = ""
    if state == "failed":
        rec = ws.read_record("ensemble") or {}
        failed = [f"{c['id']}: {c.get('title')}" for c in rec.get("checks") or [] if c.get("status") == "fail"]
        stale = (f'<div class="reasons failed"><b>The ensemble stage failed</b>, so the final model is the '
                 f"{_e(final)}:<ul>" + "".join(f"<li>{_e(f)}</li>" for f in failed) + "</ul></div>")
    elif state not in PASSING:
        stale = (f'<p class="reasons">the ensemble record is {_e(state)}: these numbers may not describe the '
                 "current config and data; rerun <code>recipe ensemble --force</code></p>")
    rows.insert(0, ("final model (what recipe predict applies)", final))
    # members are what the ensemble averages (weight > 0); a candidate the selection gave no weight is not one
    members = "".join(f'<tr><td>{_e(m.get("name"))}</td><td>{_e(m.get("source"))}</td>'
                      f'<td class="num">{_fmt(m.get("weight"))}</td><td class="num">{_fmt(m.get("val"))}</td></tr>'
                      for m in art.get("members") or [] if (m.get("weight") or 0) > 0)
    unused = [f"{c.get('name')} (val {_fmt(c.get('val'))})" for c in art.get("candidates") or []
              if not (c.get("weight") or 0) > 0]
    unused_line = (f'<p class="meta">candidates given no weight (not members): {_e(", ".join(unused))}</p>'
                   if unused else "")
    from recipe.predict_text import is_language_model

    figures = ("Confusion matrix and reliability diagram" if detail.get("per_class") is not None
               else "Val loss curve and samples below; pictures" if is_language_model(art)
               else "Predicted against true values")
    per_class = ""
    if detail.get("per_class"):
        per_class = ("<h3>Per class (test)</h3><table><thead><tr><th>class</th><th class=num>precision</th>"
                     "<th class=num>recall</th><th class=num>F1</th><th class=num>support</th></tr></thead><tbody>"
                     + "".join(f'<tr><td>{_e(p["class"])}</td><td class="num">{_fmt(p["precision"])}</td>'
                               f'<td class="num">{_fmt(p["recall"])}</td><td class="num">{_fmt(p["f1"])}</td>'
                               f'<td class="num">{p["support"]}</td></tr>' for p in detail["per_class"])
                     + "</tbody></table>")
    return (f'<section class="card" id="final"><h2>Final test result {_pill(state)}</h2>{stale}'
            f'<div class="final"><div><div class="meta">test {_e(metric)} of the {_e(final)}</div>'
            f'<div class="big">{_e(_fmt(art.get("test")))}</div>'
            f'<div class="meta">95% bootstrap interval {_e(_fmt(lo))} – {_e(_fmt(hi))}</div></div>'
            f'<dl class="kv">{kv}</dl></div>'
            f'<h3>Members (selection on val: {_e(art.get("method"))})</h3><table><thead><tr><th>member</th>'
            f'<th>source</th><th class="num">weight</th><th class="num">val {_e(metric)}</th></tr></thead>'
            f'<tbody>{members}'
            f"</tbody></table>{unused_line}{per_class}<p class=\"meta\">{figures}: see "
            '<a href="#stage-ensemble">6. ensemble</a>.</p></section>')


def _stage_section(ws: Workspace, i: int, stage: str, state: str, reasons: list[str]) -> tuple[str, int]:
    rec = ws.read_record(stage) or {}
    checks = rec.get("checks") or []
    head = (f'<section class="card" id="stage-{_e(stage)}"><h2>{i}. {_e(stage)} {_pill(state)}'
            f'<span class="meta" style="font-weight:400">{_e(TITLES[stage])}</span></h2>')
    if state == "missing":
        return head + (f'<p class="meta">{_e("; ".join(reasons))}: run <code>recipe {_e(stage)}</code>.</p>'
                       "</section>"), 0
    parts = [head]
    meta = [f"finished {rec.get('finished', '?')}", f"{rec.get('seconds', 0):.1f} s", f"device {rec.get('device', '?')}",
            f"data {rec.get('data_fingerprint', '?')}"]
    parts.append(f'<p class="meta">{_e(" · ".join(meta))} · {_e(_counts(checks))}</p>')
    if state not in PASSING:
        cls = "failed" if state == "failed" else ""
        why = {"stale": "Stale: rerun this stage, because", "failed": "Failed:",
               "interrupted": "Interrupted:"}.get(state, state)
        parts.append(f'<div class="reasons {cls}"><b>{_e(why)}</b><ul>'
                     + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul></div>")
    if rec.get("force_history"):
        parts.append('<p class="meta">forced past the gate: ' + _e("; ".join(
            f"{h.get('at')}: {', '.join(h.get('reasons', []))}" for h in rec["force_history"])) + "</p>")
    if rec.get("error"):
        parts.append(f'<p class="reasons failed">{_e(rec["error"])}</p>')
    if rec.get("summary"):
        parts.append(f"<p><b>Summary.</b> {_e(rec['summary'])}</p>")
    parts.append(_checks_table(checks))
    parts.append(_health_table(rec.get("health") or []))
    figs, n = _figures(ws.stage_dir(stage), rec)
    parts.append(figs)
    curves, k = _run_curves(ws.stage_dir(stage))
    parts.append(curves)
    n += k
    parts.append("</section>")
    return "".join(parts), n


def render(cfg, runs: Path) -> tuple[str, int]:
    """The report's HTML and the number of pictures in it."""
    ws = Workspace(runs, cfg.name)
    config_now = cfg.model_dump(mode="json")
    states = {stage: stage_state(ws, stage, config_now) for stage in STAGES}
    steps = []
    for i, stage in enumerate(STAGES, 1):
        state, _ = states[stage]
        rec = ws.read_record(stage) or {}
        steps.append(f'<a class="step" href="#stage-{_e(stage)}" style="border-top-color:'
                     f'{STATE_COLORS.get(state, "#6e7781")}"><b>{i}. {_e(stage)}</b>{_pill(state)}<br>'
                     f'<span class="count">{_e(_counts(rec.get("checks") or []) if rec else "not run")}</span></a>')
    from recipe import report_text

    lm_card, images = report_text.section(cfg, ws)     # empty unless the final model is a language model
    sections = []
    for i, stage in enumerate(STAGES, 1):
        state, reasons = states[stage]
        body, n = _stage_section(ws, i, stage, state, reasons)
        sections.append(body)
        images += n
    first_bad = next((s for s in STAGES if states[s][0] not in PASSING), None)
    verdict = ("every stage passed and is fresh" if first_bad is None else
               f"stopped at {first_bad} ({states[first_bad][0]}): run recipe {first_bad}")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recipe report: {_e(cfg.name)}</title>
<style>{CSS}{report_text.CSS if lm_card else ""}</style></head>
<body><main>
<h1>recipe report: {_e(cfg.name)}</h1>
<p class="meta">config <code>{_e(cfg.path)}</code> · data <code>{_e(cfg.data.source or cfg.data.train)}</code> ·
generated {_e(now)} · {_e(verdict)}</p>
<nav class="pipeline">{"".join(steps)}</nav>
{_final(ws, states["ensemble"][0])}
{lm_card}
{"".join(sections)}
<p class="meta">Stages follow Karpathy's "A Recipe for Training Neural Networks"; check sources: recipe:N = step N
of the recipe, 37:N = "37 Reasons why your Neural Network is not working", item N. Every number here comes from
the records under <code>{_e(ws.dir)}</code>.</p>
</main></body></html>
"""
    return doc, images


def write_report(cfg, runs: Path, out: Optional[Path] = None) -> tuple[Path, dict[str, Any]]:
    start = time.perf_counter()
    doc, images = render(cfg, runs)
    path = out or (Workspace(runs, cfg.name).dir / "report.html")
    data = doc.encode()
    atomic_write_bytes(path, data)
    return path, {"bytes": len(data), "images": images, "seconds": round(time.perf_counter() - start, 3)}
