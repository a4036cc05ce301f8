"""How many threads recipe's math uses: chosen from the cores this process may use and the size of the work.

Why: torch's intra-op threads (OpenMP) spin while they wait for each other. When another process holds a core,
or recipe runs under `nice`, one of them cannot get a core and the others spin against it: a small MLP that
trains in 0.4 s with one thread took 5.4 s with two beside one busy two-thread torch job (bench_load.py
measures this). On small models a second thread buys nothing even on an idle machine, so work below
SMALL_WORK_MACS runs on one thread; larger work gets this process's share of the cores it may use, with
OpenMP told to sleep instead of spin while it waits (OMP_WAIT_POLICY=PASSIVE, set before torch is imported).
A user's own OMP_NUM_THREADS or RECIPE_THREADS wins over all of this.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

# Multiply-adds per training step (forward, whole batch) below which one thread is as fast as two on an idle
# machine (measured on 2 cores: 5e6 one thread 951 steps/s vs two 718; 4e7 equal; 3e8 two threads 1.3x faster).
SMALL_WORK_MACS = 1e8

_share = 1            # processes splitting this machine's cores (tune/regularize --jobs)


def configure_env() -> None:
    """Before torch (or scikit-learn's OpenMP) is imported: waiting threads sleep instead of spinning."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on (taskset / cgroup affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def user_threads() -> Optional[int]:
    """Threads the user asked for with RECIPE_THREADS or OMP_NUM_THREADS, if any."""
    for name in ("RECIPE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def set_share(processes: int) -> None:
    """This process is one of `processes` that split the cores (worker processes of --jobs)."""
    global _share
    _share = max(1, int(processes))


def share() -> int:
    """How many processes split this machine's cores now (1 unless this is one of --jobs or train.devices)."""
    return _share


def _low_priority() -> bool:
    try:
        return os.nice(0) > 0
    except OSError:
        return False


def for_work(macs_per_step: float) -> int:
    """Intra-op threads for a loop whose steps cost `macs_per_step` multiply-adds."""
    asked = user_threads()
    if asked is not None:
        return asked
    if macs_per_step < SMALL_WORK_MACS:
        return 1
    if _low_priority():      # under nice, a second thread waits behind every normal-priority process
        return 1
    return max(1, usable_cores() // _share)


def default() -> int:
    """Threads for the odd tensor work outside training loops (checks, probes): small, so one."""
    return user_threads() or 1


def apply_default() -> None:
    """Once torch is imported (a stage that never imports it is left alone): one inter-op thread, the default
    intra-op count."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return

    torch.set_num_threads(default())
    with contextlib.suppress(RuntimeError):    # only settable before the first inter-op parallel work
        torch.set_num_interop_threads(1)


@contextlib.contextmanager
def using(threads: int) -> Iterator[int]:
    """Run a block with `threads` intra-op threads, then put the previous count back."""
    import torch

    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def macs_per_sample(model, sample) -> float:
    """Multiply-adds of one forward pass per sample, from the layers' weights and output sizes (hooks on a
    two-row no-grad forward in eval mode). Layers it does not know count their parameters once."""
    import torch
    from torch import nn

    total = [0.0]

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        rows = output.shape[0] if output.ndim else 1
        per_row = output.numel() / max(rows, 1)
        if isinstance(module, nn.Linear):
            total[0] += per_row * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            total[0] += per_row * module.weight[0].numel()
        elif not list(module.children()):
            total[0] += sum(p.numel() for p in module.parameters(recurse=False))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample[:2])
    except Exception:     # a model that cannot run on two rows: fall back to its size
        return float(sum(p.numel() for p in model.parameters()))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return total[0]
