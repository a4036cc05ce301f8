"""Stage 1: become one with the data. Runs the data checks the data's kind declares (recipe/data/kinds/), with
the rows that prove them, draws the kind's pictures and writes its data report."""
from __future__ import annotations

from recipe import checks as C
from recipe.stage import StageResult


def before(cfg, ctx) -> None:
    """The runner calls this before it loads the data: the imports start during the read."""
    _warm_imports()


def _warm_imports() -> None:
    """Import the probes' and pictures' libraries on a side thread while the main thread reads the data:
    pyarrow and numpy release the GIL and the CSV parser keeps about one core busy, so a second of
    sklearn/matplotlib imports costs almost nothing."""
    import threading

    def work():
        try:
            import sklearn.ensemble  # noqa: F401
            import sklearn.linear_model  # noqa: F401
            import sklearn.model_selection  # noqa: F401

            import recipe.plots  # noqa: F401
        except Exception:   # the main thread imports them again and reports any real problem
            pass

    threading.Thread(target=work, name="recipe-warm-imports", daemon=True).start()


def _blocked(check, done: dict) -> bool:
    return check.needs is not None and check.needs[0] in done and done[check.needs[0]].status == "fail"


def _skipped(check) -> C.Check:
    needed, why = check.needs
    return C.make(check.id, "skip", f"skipped: {why} (see {needed})")


def _judge(check, look, done: dict) -> C.Check:
    return _skipped(check) if _blocked(check, done) else check.judge(look, look.thresholds(check.id))


def _probes(probes: list, look) -> dict:
    """The kind's probe checks in order, on one side thread."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the probes' matrices are small, and OpenBLAS threads that spin while another
    # process holds the cores made these checks up to 20x slower on a busy 2-core machine
    with threadpool_limits(1, user_api="blas"):
        return {p.id: p.judge(look, look.thresholds(p.id)) for p in probes}


def run(cfg, ctx) -> StageResult:
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from recipe.data import kinds

    warnings.filterwarnings("ignore", module="sklearn")   # probe warnings (ill-conditioned, convergence) are noise here
    ds = ctx.data()
    kind = kinds.get(ds.kind)
    look = kinds.Look(ds, cfg, ctx.thresholds, ctx.artifacts)
    declared = kind.checks()
    probes = [c for c in declared if c.probe]
    done: dict[str, C.Check] = {}
    with ctx.progress("inspect", 15) as bar, ThreadPoolExecutor(2, thread_name_prefix="recipe-inspect") as pool:
        first = {c.needs[0] for c in probes if c.needs}
        for c in declared:        # what the probes wait for (data.non-finite) runs before them
            if c.id in first and not c.probe:
                done[c.id] = _judge(c, look, done)
        # the probes (sklearn: tree building and BLAS release the GIL) and the pictures (matplotlib, Agg, on
        # one thread only) run on side threads while this one runs the array checks, whose numpy loops
        # release the GIL too: two cores busy instead of one
        ready = [c for c in probes if not _blocked(c, done)]
        side = pool.submit(_probes, ready, look) if ready else None
        drawn = pool.submit(kind.pictures, look)
        for c in declared:
            if not c.probe and c.id not in done:
                done[c.id] = _judge(c, look, done)
        bar.update(12)
        report = kind.report(look)
        ctx.artifacts.json("data_report.json", report)
        pictures = drawn.result()
        bar.update(13)
        if side is not None:
            done.update(side.result())
        for c in probes:
            if c.id not in done:
                done[c.id] = _skipped(c)
        pictures = kind.finish_pictures(look, pictures)
        bar.update(15)
    metrics, summary = kind.outcome(look, report)
    return StageResult([done[c.id] for c in declared], metrics=metrics, summary=summary,
                       extra={"pictures": pictures})
