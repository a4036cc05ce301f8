"""Device names recipe accepts (auto, cpu, cuda, cuda:N) and how --jobs maps worker processes to GPUs.

Checked and parsed without importing torch (the CLI validates --device and --jobs before any work starts);
only `visible_gpus` imports torch, and only when no GPU list is given by the environment.

Why one worker per GPU and not all workers on cuda:0: a worker that sees only its own GPU
(CUDA_VISIBLE_DEVICES=<id>, set before it initialises CUDA) cannot allocate on another by accident, and every
`cuda`/`cuda:0` inside recipe and inside a user's model means that worker's GPU.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional, Union

from recipe.errors import RecipeError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# Tests (and dry runs on a CPU machine) pretend these GPU ids are visible, e.g. "0,1,2,3": the worker
# processes are pinned to them exactly as to real ones; training then finds no CUDA and runs on the CPU.
FAKE_GPUS_ENV = "RECIPE_FAKE_GPUS"

Jobs = Union[int, str]       # a positive count, or "auto"


def check_device_name(name: str) -> str:
    """--device must be auto, cpu, cuda or cuda:N; RecipeError otherwise (before any work starts)."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise RecipeError(f"--device: must be auto, cpu, cuda or cuda:N (got '{name}')")
    return name


def parse_jobs(value: Optional[str], flag: str = "--jobs") -> Optional[Jobs]:
    """--jobs N (N >= 1) or --jobs auto; None when not given. RecipeError naming the flag otherwise."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if re.fullmatch(r"\d+", text) and int(text) >= 1:
        return int(text)
    raise RecipeError(f"{flag}: must be a whole number of worker processes >= 1, or 'auto' (one per GPU; on a "
                      f"CPU one per two cores) (got '{value}')")


def visible_gpus() -> list[str]:
    """The GPUs this process can see, as the ids a child's CUDA_VISIBLE_DEVICES takes: the entries of this
    process's own CUDA_VISIBLE_DEVICES (so `CUDA_VISIBLE_DEVICES=2,3 recipe tune --jobs auto` pins to 2 and 3),
    else 0..count-1. torch's count does not create a CUDA context in this process."""
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake is not None:
        return [g.strip() for g in fake.split(",") if g.strip()]
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [g.strip() for g in listed.split(",") if g.strip()][:count]


@dataclass
class JobsPlan:
    """How many worker processes, which GPU each is pinned to (None: not pinned), and why (printed, recorded)."""

    requested: Jobs
    jobs: int
    gpus: list[Optional[str]] = field(default_factory=list)    # per worker: its CUDA_VISIBLE_DEVICES value
    reason: str = ""

    def record(self) -> dict:
        return {"requested": self.requested, "jobs": self.jobs, "gpus": list(self.gpus), "reason": self.reason}


def plan_jobs(requested: Jobs, device_name: str = "auto", source: str = "--jobs") -> JobsPlan:
    """Resolve --jobs against --device: N or auto workers, each pinned to a GPU when workers use GPUs.

    Worker i takes GPU i mod G (more workers than GPUs share them round-robin, and the reason says so).
    --device cpu pins nothing; --device cuda:N puts every worker on that one GPU (it names one device).
    `source` names where the request came from (--jobs or a config key) in the reason."""
    gpus = [] if device_name == "cpu" or device_name.startswith("cuda:") else visible_gpus()
    from recipe.threads import usable_cores

    cores = usable_cores()
    if requested == "auto":
        if gpus:
            jobs, why = len(gpus), f"{source} auto: one worker per visible GPU ({len(gpus)}: {','.join(gpus)})"
        elif device_name.startswith("cuda:"):
            jobs, why = 1, f"{source} auto: --device {device_name} names one GPU: one worker"
        else:
            jobs = max(1, cores // 2)
            where = "--device cpu" if device_name == "cpu" else "no GPU visible"
            why = f"{source} auto: {where}: one worker per two usable cores ({cores} usable)"
    else:
        jobs = int(requested)
        if jobs < 1:
            raise RecipeError(f"{source}: must be >= 1 (got {requested})")
        why = f"{source} {jobs}"
    if not gpus:
        if device_name.startswith("cuda:") and jobs > 1:
            why += f"; every worker on {device_name} (it names one GPU)"
        elif jobs > 1 and requested != "auto":
            why += f"; CPU workers, each with its share of the {cores} usable cores"
        return JobsPlan(requested, jobs, [], why)
    pinned = [gpus[i % len(gpus)] for i in range(jobs)]
    if jobs > len(gpus):
        why += (f" on {len(gpus)} GPU(s): shared round-robin, worker i on GPU i mod {len(gpus)} "
                f"({_count_per_gpu(pinned)})")
    elif requested != "auto":
        why += f": one GPU per worker (GPU {','.join(pinned)} of {len(gpus)} visible)"
    return JobsPlan(requested, jobs, pinned, why)


def _count_per_gpu(pinned: list[Optional[str]]) -> str:
    counts: dict[str, int] = {}
    for g in pinned:
        counts[str(g)] = counts.get(str(g), 0) + 1
    return ", ".join(f"GPU {g}: {n} worker{'s' if n > 1 else ''}" for g, n in counts.items())


class pinned_env:
    """Within the block, os.environ carries CUDA_VISIBLE_DEVICES=<gpu> (None: unchanged), so a process started in
    it (multiprocessing spawn inherits the environment as it starts) initialises CUDA on that GPU only."""

    def __init__(self, gpu: Optional[str]):
        self.gpu, self.saved = gpu, None

    def __enter__(self):
        if self.gpu is not None:
            self.saved = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu
        return self

    def __exit__(self, *exc):
        if self.gpu is not None:
            if self.saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = self.saved
        return False


def pin_this_process(gpu: Optional[str]) -> None:
    """In a fresh worker process, before anything touches CUDA: see only `gpu`. A process whose CUDA runtime is
    already up cannot be re-pinned (the variable is read once, at initialisation): that is a bug, said loudly."""
    if gpu is None:
        return
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized() and os.environ.get("CUDA_VISIBLE_DEVICES") != gpu:
        raise RuntimeError(f"worker cannot be pinned to GPU {gpu}: CUDA was initialised in it already")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
