"""Tables for people: check results, the check catalog and stage status, readable at 80 columns.

Below COMPACT_BELOW columns (CI logs, `tee` and `make` output default to 80) each table switches to a
compact layout: fewer, wider columns (advice under the finding, thresholds under what a check catches,
counts and time under the state) and no refs column. Evidence is always short `key=value` text here;
--json and the records keep it structured. Imports neither torch nor scikit-learn (`recipe checks`).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

COMPACT_BELOW = 100     # the wide layouts need about 100 columns before Rich folds words inside a cell
MAX_TEXT = 60           # characters of one string value in evidence text
MAX_LIST = 5            # items of one list shown


def compact(width: int) -> bool:
    return width < COMPACT_BELOW


# ----------------------------------------------------------------------------- evidence text


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    s = " ".join(str(v).split())                 # a value never breaks the line
    s = s if len(s) <= MAX_TEXT else s[:MAX_TEXT - 1] + "…"
    # logfmt's rule: a value with a space (or = or ,) is quoted, so `key=value` items stay separable
    return '"' + s.replace('"', "'") + '"' if not s or any(c in s for c in ' =,"') else s


def _value(v: Any) -> str:
    """A list as comma-separated items (at most MAX_LIST), a nested list or mapping as its size."""
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, (list, tuple, dict)) for x in v):
            return f"({len(v)} entries)"
        shown = ",".join(_scalar(x) for x in v[:MAX_LIST])
        return shown + (f",…(+{len(v) - MAX_LIST})" if len(v) > MAX_LIST else "") if v else "none"
    if isinstance(v, dict):
        return f"({len(v)} entries)" if v else "none"
    return _scalar(v)


def _pairs(evidence: dict[str, Any], prefix: str = "", depth: int = 0) -> Iterable[tuple[str, str]]:
    """(dotted key, text) leaves: nested mappings flatten to `outer.inner` two levels deep."""
    for k, v in evidence.items():
        key = prefix + "_".join(str(k).split())
        if isinstance(v, dict) and v and depth < 2:
            yield from _pairs(v, key + ".", depth + 1)
        else:
            yield key, _value(v)


def evidence_text(evidence: dict[str, Any], limit: int = 8) -> str:
    """`key=value` items separated by two spaces; past `limit` items, how many more the record holds."""
    evidence = evidence or {}
    if "overridden" in evidence:     # a severity override is what a reader must not miss: it goes first
        evidence = {"overridden": evidence["overridden"], **evidence}
    pairs = list(_pairs(evidence))
    text = "  ".join(f"{k}={v}" for k, v in pairs[:limit])
    if len(pairs) > limit:
        text += f"  (+{len(pairs) - limit} more in the record)"
    return text


# ----------------------------------------------------------------------------- tables


def check_table(checks: list, width: int, title: str = "checks", verbose: bool = False):
    """Stage results: evidence and advice for warnings and failures (all of it is in the record)."""
    from rich.markup import escape
    from rich.table import Table

    from recipe.checks import STATUS_STYLE

    narrow = compact(width)
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("finding", overflow="fold")      # a long evidence item wraps; it is never cut off
    if not narrow:
        table.add_column("advice")
        table.add_column("refs", overflow="fold")
    for c in checks:
        style = STATUS_STYLE.get(c.status, "")
        flagged = c.status in ("warn", "fail")
        shown = c.evidence if flagged or verbose else {}
        finding = escape(c.title) + (f"\n[dim]{escape(evidence_text(shown))}[/dim]" if shown else "")
        advice = escape(c.advice) if flagged and c.advice else ""
        status = f"[{style}]{c.status}[/{style}]"
        if narrow:
            table.add_row(c.id, status, finding + (f"\n[italic]→ {advice}[/italic]" if advice else ""))
        else:
            table.add_row(c.id, status, finding, advice, escape(" ".join(c.refs)))
    return table


def refs_caption(narrow: bool) -> str:
    from recipe.checks import REF_SOURCES

    legend = "; ".join(text for text in REF_SOURCES.values() if text)
    if narrow:
        return (f"refs (the sources of each check) are left out below {COMPACT_BELOW} columns: widen the terminal "
                f"(COLUMNS={COMPACT_BELOW + 20}) or use --json. {legend}")
    return f"refs: {legend}"


def catalog_table(specs: Iterable, width: int):
    """`recipe checks`: id, stage, what it catches, statuses, refs, thresholds; the refs legend under it."""
    from rich.markup import escape
    from rich.table import Table

    narrow = compact(width)
    table = Table(title="recipe checks", caption=refs_caption(narrow), caption_justify="left")
    if narrow:
        for col in ("id", "stage", "what it catches"):
            table.add_column(col, no_wrap=col != "what it catches")
    else:
        for col in ("id", "stage", "catches", "statuses", "refs", "thresholds"):
            # ids and refs are single tokens: fold them rather than cut them off with an ellipsis
            table.add_column(col, no_wrap=col in ("id", "stage"), overflow="fold")
    for s in specs:
        thresholds = ("  " if narrow else "\n").join(f"{k}={_scalar(v)}" for k, v in s.thresholds.items())
        if narrow:
            extra = f"statuses: {' '.join(s.statuses)}" + (f"  {thresholds}" if thresholds else "")
            table.add_row(s.id, s.stage, f"{escape(s.catches)}\n[dim]{escape(extra)}[/dim]")
        else:
            table.add_row(s.id, s.stage, escape(s.catches), " ".join(s.statuses), " ".join(s.refs), escape(thresholds))
    return table


def _when(finished: str) -> str:
    """2026-12-01T12:30:12+00:00 -> 2026-12-01 12:30 (the record keeps the full time)."""
    return finished[:16].replace("T", " ") if finished else ""


def status_table(title: str, rows: list[dict], width: int):
    """`recipe status`: one row per stage, its state, check counts, when it finished and why."""
    from rich.markup import escape
    from rich.table import Table

    from recipe.checks import STATUS_STYLE

    narrow = compact(width)
    table = Table(title=escape(title))
    columns = ("stage", "state", "why / summary") if narrow else ("stage", "state", "checks", "finished", "why / summary")
    for col in columns:
        table.add_column(col, no_wrap=col == "stage")
    for r in rows:
        style = STATUS_STYLE.get(r["state"], "")
        why = escape("; ".join(r["reasons"]) if r["reasons"] else r["summary"])
        n = r["checks"]
        counts = "" if not n else " ".join(f"[{STATUS_STYLE[k]}]{v} {k}[/{STATUS_STYLE[k]}]" for k, v in n.items() if v)
        state = f"[{style}]{escape(r['state'])}[/{style}]"
        if narrow:
            below = "\n".join(x for x in (counts, f"[dim]{_when(r['finished'] or '')}[/dim]" if r["finished"] else "") if x)
            table.add_row(r["stage"], state + (f"\n{below}" if below else ""), why)
        else:
            table.add_row(r["stage"], state, counts, r["finished"] or "", why)
    return table
