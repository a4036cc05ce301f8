"""baseline.gradcheck: every custom module's backward against float64 finite differences (37 reasons #22, #26).

Every module whose class comes from neither torch nor recipe is checked, innermost first (a custom layer's
own backward matters more than the whole model's, and the whole model is the costliest to check), within a
time budget. A module is counted as verified only if torch.autograd.gradcheck ran on it; one that was never
called, saw no float input, could not run in float64 or was left out by the budget is named with the reason,
and the check is never `pass` while any custom module is unverified.
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from recipe import checks as C

BUDGET_SECONDS = 20.0    # all custom modules together; beyond it the rest are named as not checked
FAST_MODE_ABOVE = 256    # input elements: above this, gradcheck's fast mode (random projections, O(1) passes)


def custom_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module not defined by torch or recipe, innermost first, the model last."""
    found = [(n or type(m).__name__, m) for n, m in model.named_modules()
             if not type(m).__module__.startswith("torch.") and not type(m).__module__.startswith("recipe.")
             and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))]
    return sorted(found, key=lambda nm: -nm[0].count(".") if nm[1] is not model else 1)


def _capture_inputs(model: nn.Module, custom, x: torch.Tensor) -> dict[str, tuple]:
    """The (args, kwargs) each custom module receives in one eval-mode forward pass on two rows."""
    seen: dict[str, tuple] = {}

    def keep(name):
        def hook(module, args, kwargs):   # returns None: the call goes on unchanged
            if name not in seen:
                seen[name] = (tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args), dict(kwargs))
        return hook

    hooks = [m.register_forward_pre_hook(keep(n), with_kwargs=True) for n, m in custom]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return seen


def _verify(module: nn.Module, args: tuple, kwargs: dict) -> tuple[str, str]:
    """('ok' | 'wrong' | 'unverified', detail) for one module on the inputs it saw."""
    floats = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and torch.is_floating_point(a)]
    if not floats:
        return "unverified", "saw no float input"
    m64 = copy.deepcopy(module).double().eval()
    fixed = [a.double() if isinstance(a, torch.Tensor) and torch.is_floating_point(a) else a for a in args]
    inputs = tuple(fixed[i].clone().requires_grad_(True) for i in floats)

    def fn(*xs):
        full = list(fixed)
        for i, t in zip(floats, xs):
            full[i] = t
        return m64(*full, **kwargs)

    try:
        out = fn(*inputs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if not all(isinstance(o, torch.Tensor) for o in outs):
            return "unverified", f"returns {type(out).__name__}, not tensors"
        if any(torch.is_floating_point(o) and o.dtype != torch.float64 for o in outs):
            return "unverified", "could not run in float64 (its output is " + \
                   ", ".join(sorted({str(o.dtype) for o in outs})) + ")"
        size = sum(t.numel() for t in inputs)
        fast = size > FAST_MODE_ABOVE
        ok = torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=False,
                                      fast_mode=fast)
    except Exception as e:   # a module that cannot run in float64 is named, not fatal
        return "unverified", f"could not run in float64 ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
    mode = "fast" if fast else "full"
    return ("ok", mode) if ok else ("wrong", mode)


def check_gradcheck(model: nn.Module, x: torch.Tensor, budget: float = BUDGET_SECONDS) -> C.Check:
    custom = custom_modules(model)
    if not custom:
        return C.make("baseline.gradcheck", "skip", "no custom modules (only torch.nn layers, whose gradients are tested)")
    seen = _capture_inputs(model, custom, x[:2].float())
    results: dict[str, str] = {}
    unverified: dict[str, str] = {}
    wrong: list[str] = []
    start = time.perf_counter()
    for name, module in custom:
        if time.perf_counter() - start > budget:
            unverified[name] = f"not checked: the {budget:.0f} s budget was spent"
        elif name not in seen:
            unverified[name] = "not called in forward"
        else:
            verdict, detail = _verify(module, *seen[name])
            if verdict == "unverified":
                unverified[name] = detail
            else:
                results[name] = f"ok ({detail} gradcheck)" if verdict == "ok" else f"WRONG ({detail} gradcheck)"
                if verdict == "wrong":
                    wrong.append(name)
        if name in unverified:
            results[name] = "not verified: " + unverified[name]
    ev = {"modules": results, "custom_modules": len(custom), "verified": len(custom) - len(unverified),
          "not_verified": unverified, "seconds": round(time.perf_counter() - start, 2)}
    if wrong:
        return C.make("baseline.gradcheck", "fail", f"analytic and numeric gradients disagree in {', '.join(wrong)}",
                      ev, "Fix the custom backward (or drop the custom autograd.Function and let autograd derive it).")
    names = ", ".join(f"{n} ({why})" for n, why in list(unverified.items())[:4]) + \
        (f" and {len(unverified) - 4} more" if len(unverified) > 4 else "")
    if len(unverified) == len(custom):
        return C.make("baseline.gradcheck", "warn", f"none of the {len(custom)} custom module(s) could be gradchecked: "
                      f"{names}", ev,
                      "Make the module run in float64 (no hard-coded float32 tensors; register constants as buffers) "
                      "so its backward can be checked, or test its gradient yourself.")
    if unverified:
        return C.make("baseline.gradcheck", "warn", f"float64 gradcheck agrees on {ev['verified']} custom module(s); "
                      f"not verified: {names}", ev,
                      "The unverified modules' gradients are untested: make them run in float64 on float inputs, "
                      "or check their backward yourself.")
    return C.make("baseline.gradcheck", "pass", f"float64 gradcheck agrees on all {len(custom)} custom module(s)", ev)
