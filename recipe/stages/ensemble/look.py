"""ensemble's one look at the sealed test split, and the two ways it avoids a needless one (issue 17 item 4):
- everything that can fail is decided on val first: a check that fails after the config's severity caps
  stops the stage before the test split is opened (no look is spent on a run that fails anyway);
- a rerun that rebuilt the same models (test_reuse.model_key) reports the recorded look instead of a new one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from recipe import checks as C
from recipe import tasks
from recipe.errors import GateError
from recipe.stages.ensemble import sealed_test as T
from recipe.stages.ensemble import reuse as R


def val_failures(checks: list[C.Check], overrides: Optional[dict]) -> list[C.Check]:
    """The checks that still fail after the config's severity caps (the runner applies the same caps)."""
    out = []
    for c in checks:
        o = (overrides or {}).get(c.id)
        capped = o is not None and o.severity is not None and C.STATUS_ORDER[o.severity] < C.STATUS_ORDER["fail"]
        if c.status == "fail" and not capped:
            out.append(c)
    return out


def not_opened(failed: list[C.Check], looks: int) -> C.Check:
    """ensemble.test when val already decided the stage fails: the test split stays sealed."""
    ids = ", ".join(c.id for c in failed)
    ev = {"failed_on_val": {c.id: c.title for c in failed}, "looks_on_record": looks, "test_opened": False}
    advice = (f"Fix what {ids} found and rerun 'recipe ensemble'; or, to ship what val chose (the best single "
              f"model when ensemble.gain fails), cap it in the config (checks: {{{failed[0].id}: {{severity: warn, "
              "reason: ...}}) and rerun: the test split is opened then, for the first time.")
    return C.make("ensemble.test", "skip", f"test split not opened: {ids} failed on val, so this run would fail "
                  "whatever test says; no look spent", ev, advice)


@dataclass
class Look:
    result: dict[str, Any]
    index: int                      # the look's position in the ledger
    before: int                     # looks on record before this one (0: the first look)
    key: str                        # test_reuse.model_key of what was scored
    reused: Optional[dict] = None   # {"look", "at"} when the recorded result was reported again


def take(cfg, ctx, ds, final: str, used, best, student, ngrams: Optional[dict] = None) -> Look:
    """The test numbers of the final model (and of the alternatives, for the record): reused when a scored look
    evaluated exactly these models, else one new look, on disk before the rows are handed out. `ngrams`: a
    language model's n-gram models (ngram_test.fit_ngrams), scored on the test documents inside the look."""
    from recipe.engine import train as E
    from recipe.stages.ensemble.selection import combine

    key = R.model_key(cfg, ctx, ds, final, used, best, student)
    looks = T.read_looks(T.ledger_path(ctx))
    hit = R.find(ctx, looks, key)
    if hit is not None:
        index, result = hit
        R.restore(ctx, index, looks[index])
        T.note_reuse(ctx, index)
        return Look(result, index, 0, key, {"look": index, "at": looks[index].get("scored_at")})
    if looks and not ctx.options.force:   # the gate let it through on equal inputs, but nothing can be reused
        same = [i for i, k in enumerate(looks) if k.get("model_key") == key]
        why = (f"the recorded result of look {same[-1] + 1} was modified or removed "
               f"({ctx.workspace.dir / R.RESULTS / str(same[-1])})" if same else
               f"this rerun had the inputs of a scored look but did not rebuild the same models (weights differ, "
               f"e.g. nondeterministic training on {ctx.device.type})")
        raise GateError([f"{why}, so no recorded test result describes them; the test split was not opened",
                         f"pass --force for a new look (it is recorded in {T.ledger_path(ctx)})"])
    task, precision = ds.task, cfg.train.precision
    # text: the interval resamples test documents (a language model's windows grouped by their document; a
    # text-classification row is one)
    tokens = ds.inputs == "tokens"
    test, index, before = T.open_test(ctx, ds)
    tx = torch.from_numpy(np.ascontiguousarray(ds.normalize(test.x))).to(ctx.device)
    ty = torch.from_numpy(np.ascontiguousarray(ds.target(test.y))).to(ctx.device)

    def probs(out):
        return tasks.get(task).as_output(out)

    ens_out = combine([E.predict(m.model, tx, precision=precision) for m, _ in used], [w for _, w in used], task)
    single_out = E.predict(best.model, tx, precision=precision)
    others = {"best_single": single_out}
    student_out = probs(E.predict(student, tx, precision=precision)) if student is not None else None
    if final != "ensemble":
        others["ensemble"] = ens_out
    if student_out is not None and final != "student":
        others["student"] = student_out
    final_out = {"ensemble": ens_out, "best_single": probs(single_out), "student": student_out}[final]
    ngram = (ngrams, ds.doc_tokens["test"]) if ngrams is not None else None     # read after the look is recorded
    return Look(T.evaluate_test(cfg, ctx, ds, final_out, ty, others, test.rows if tokens else None, ngram), index,
                before, key)


def finish(cfg, ctx, look: Look) -> int:
    """A new look's score and what lets a rerun reuse it go to the ledger; a reuse adds nothing. Returns the
    number of looks on record."""
    if look.reused is not None:
        return len(T.read_looks(T.ledger_path(ctx)))
    saved = R.save(ctx, look.index, look.result)
    ngram = look.result.get("ngram")     # the n-gram models' test numbers are test numbers: on the ledger too
    more = {"ngram_test_loss": {k: v["test_loss"] for k, v in ngram["models"].items()}} if ngram else {}
    return T.finish_look(ctx, look.index, look.result["score"], model_key=look.key,
                         inputs=R.inputs(cfg.model_dump(mode="json"), ctx.workspace), **saved, **more)
