"""One run across devices (train.devices): torchrun-style ranks around the one training loop, DDP inside it.

The process that calls fit is rank 0: it keeps the model, the val split, the callbacks, metrics.jsonl and all
that the stage writes. It starts ranks 1..N-1 as child processes (`python -m recipe.engine.distributed`, with
torchrun's environment: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT on loopback) that only train;
each run reaches them as a payload file (model, train split, fit's arguments) named in the TCPStore. Every
rank runs the same loop (train.fit -> loop.run_epochs) through these hooks:

- batches: the same seeded permutation on every rank; each takes its contiguous share of every global batch;
- gradients: DistributedDataParallel averages them; each rank's mean loss is weighted by its share of the batch
  (local * N / global), so the average is the gradient of the global batch's mean loss even when shares differ;
- metrics and monitors: the global batch loss is all_reduced every step, so metrics.jsonl, health.exploding and
  health.non-finite see what one process would; dead units and saturation are merged over the ranks at the end;
- decisions: rank 0 alone evaluates val and runs early stopping, max_seconds and on_epoch (tune's pruner); it
  broadcasts its stop decision once per epoch.

Under a stage (begin/end, called by the runner) the child ranks stay up from the stage's first run across
devices to its end (a child's start, mostly importing torch, costs seconds); a run outside a stage starts and
ends its own. A rank that dies ends the run: gloo reports the closed connection at the next collective (within
a second), every collective has a timeout (RECIPE_DDP_TIMEOUT seconds), and a rank killed by a signal ends the
stage 'interrupted' (RankLost is a KeyboardInterrupt: exit 130), one that crashed 'failed' with its traceback's
last lines.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from recipe import threads
from recipe.errors import RecipeError



def _timeout_s() -> float:
    """RECIPE_DDP_TIMEOUT: how long a collective (and so rank 0's val pass, which the others wait for) may take."""
    try:
        return max(1.0, float(os.environ.get("RECIPE_DDP_TIMEOUT", 1800)))
    except ValueError:
        return 1800.0


TIMEOUT_S = _timeout_s()
START_TIMEOUT_S = 300.0        # a child rank imports torch and loads the payload within this
STOPS = ("completed", "early_stopping", "max_seconds", "pruned")   # rank 0's reasons, broadcast by index


class RankLost(KeyboardInterrupt):
    """A rank was killed (SIGKILL, OOM killer, Ctrl-C in its terminal): the run is interrupted, not failed."""


# ----------------------------------------------------------------------------- the stage's plan

# Where a stage's runs honour train.devices, and why not elsewhere (recorded as the record's "devices").
DECLINED = {
    "baseline": "its runs are short skeleton checks (2 epochs or a few seconds): starting ranks costs more",
    "overfit-batch": "memorizing one batch and the lr range are short runs: starting ranks costs more than they save",
    "tune": "tune trials run as separate worker processes (tune --jobs, one device each) or as one stacked model "
            "(tune.batch): many short runs gain more from that than from DDP",
}
_plan: Optional[dict[str, Any]] = None


def begin(stage: str, cfg, options) -> dict[str, Any]:
    """The devices plan of a training stage: what each of its runs uses, and why. The record keeps this dict."""
    global _plan
    asked = getattr(options, "devices", None) or cfg.train.devices
    jobs = (getattr(options, "jobs", None) or cfg.regularize.jobs) if stage == "regularize" else 1
    if asked == 1:
        per_run, note = 1, "train.devices is 1: every run trains in this process"
    elif stage in DECLINED:
        per_run, note = 1, f"train.devices {asked} not used here: {DECLINED[stage]}"
    elif jobs > 1:
        per_run, note = 1, (f"train.devices {asked} not used: regularize --jobs {jobs} trains its runs in {jobs} "
                            "worker processes, one device each (--jobs 1 trains each run across the devices)")
    else:
        per_run, note = asked, f"each run trains across {asked} ranks (DDP), this process rank 0"
    _plan = {"asked": asked, "per_run": per_run, "runs_across_devices": 0, "child_ranks_started": 0, "note": note}
    return _plan


def end() -> None:
    """The stage is over: its child ranks stop (see fit) and later runs follow train.devices again."""
    global _plan
    _plan = None
    _close(graceful=True)


def devices_for(cfg) -> int:
    """Ranks for one run of fit_from_config: the stage's plan, else train.devices, and 1 in a --jobs worker."""
    if _plan is not None:
        return _plan["per_run"]
    if threads.share() > 1:      # one of several worker processes that already split the machine
        return 1
    return cfg.train.devices


# ----------------------------------------------------------------------------- a rank inside the loop

_current: Optional["Rank"] = None
_children: list[subprocess.Popen] = []


def current() -> Optional["Rank"]:
    """This process's rank while a run across devices trains, else None."""
    return _current


def rank_pids() -> list[int]:
    """The child ranks of the run under way (rank 1 first); empty when none."""
    return [p.pid for p in _children]


class Rank:
    """This process's place in the group, and the loop's hooks (train.Single calls them)."""

    def __init__(self, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device = rank, world, device
        self.min_rows = 1

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # BatchNorm normalizes over this rank's share (SyncBatchNorm needs CUDA): a share must hold two rows
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            self.min_rows = 2
        ids = [self.device.index or 0] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)      # broadcasts rank 0's weights and buffers to every rank

    def generator(self, device: torch.device, seed: int) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed + 1_000_003 * (self.rank + 1))
        return gen

    def share(self, idx: torch.Tensor) -> Optional[torch.Tensor]:
        """This rank's contiguous part of a global batch; None (on every rank alike) when some share would be too
        small to train on."""
        if len(idx) < self.world * self.min_rows:
            return None
        return torch.tensor_split(idx, self.world)[self.rank]

    def split_loss(self, loss: torch.Tensor, local: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(what this rank backpropagates, the global batch's mean loss). DDP averages gradients over the ranks,
        so each rank's mean is scaled by local * N / total: the average is then the global mean's gradient."""
        weight = local / total
        seen = loss.detach() * weight
        dist.all_reduce(seen)          # sum of the weighted shares = the global batch's mean
        return loss * (weight * self.world), seen

    def agree(self, run, gone: list[int]) -> list[int]:
        """Rank 0's stop decision for the epoch (and its reason) on every rank."""
        reason = run.result.stopped
        code = torch.tensor([(STOPS.index(reason) if reason in STOPS else 0) if gone else -1],
                            device=self._comm_device())
        dist.broadcast(code, src=0)
        if self.rank == 0:
            return gone
        if int(code) < 0:
            return []
        run.result.stopped = STOPS[int(code)]
        return [0]

    def merge(self, run, local_samples: int) -> None:
        """As the run leaves: rank 0 gets every rank's sample count, fired units and saturation fractions."""
        h = run.health
        mine = {"samples": local_samples, "active": {k: v.cpu() for k, v in h.active.items()},
                "saturated": dict(h.saturated)}
        every: list[Any] = [None] * self.world
        dist.all_gather_object(every, mine)
        if self.rank != 0:
            return
        run.result.rank_samples = [e["samples"] for e in every]
        for e in every[1:]:            # a unit fired if it fired on any rank's share
            for name, fired in e["active"].items():
                h.active[name] = h.active[name] | fired if name in h.active else fired
        for name, fractions in h.saturated.items():     # every rank sampled the same steps: mean over ranks
            lists = [e["saturated"].get(name, []) for e in every]
            if all(len(f) == len(fractions) for f in lists):
                h.saturated[name] = [sum(col) / len(col) for col in zip(*lists)]

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


# ----------------------------------------------------------------------------- rank 0: start, watch, stop

CHILD_ONLY = {"on_epoch": None, "progress": None, "metrics_path": None, "early_stopping": None,
              "max_seconds": None, "restore_best": False, "eval_train": False}   # rank 0 alone decides and writes


def backend_for(device: torch.device, devices: int) -> tuple[str, list[str]]:
    """(backend, each rank's device): NCCL with one GPU per rank from the run's GPU on, gloo on CPU."""
    if device.type == "cuda":
        first, count = device.index or 0, torch.cuda.device_count()
        if first + devices > count:
            raise RecipeError(f"train.devices: {devices} ranks from cuda:{first} need {first + devices} GPUs, but "
                              f"{count} {'is' if count == 1 else 'are'} visible (set train.devices: "
                              f"{max(1, count - first)}, or CUDA_VISIBLE_DEVICES)")
        return "nccl", [f"cuda:{first + r}" for r in range(devices)]
    if device.type != "cpu":
        raise RecipeError(f"train.devices: {devices} needs CUDA GPUs or the CPU, not {device.type}")
    return "gloo", ["cpu"] * devices


def fit(train_fit: Callable, model, train, val, devices: int, kwargs: dict[str, Any]):
    """train.fit(...) as rank 0 of `devices` ranks; returns rank 0's RunResult (the model is trained in place).

    Under a stage's plan the child ranks stay up for the stage's next run (a child's start, mostly importing
    torch, costs seconds); otherwise they end with this run."""
    global _pool
    backend, ranks = backend_for(train.x.device, devices)
    if _pool is not None and _pool.ranks != ranks:
        _close(graceful=True)
    if _pool is None:
        _pool = _Pool(backend, ranks)
    ok = False
    try:
        result = _pool.run(train_fit, model, train, val, kwargs)
        ok = True
        if _plan is not None:
            _plan["runs_across_devices"] += 1
        return result
    finally:
        if not ok or _plan is None:
            _close(graceful=ok)


_pool: Optional["_Pool"] = None


def _close(graceful: bool) -> None:
    global _pool
    if _pool is not None:
        pool, _pool = _pool, None
        pool.close(graceful)


class _Pool:
    """Child ranks 1..N-1 of this process (rank 0), joined in one process group, waiting for runs."""

    def __init__(self, backend: str, ranks: list[str]):
        self.backend, self.ranks, self.world, self.jobs = backend, ranks, len(ranks), 0
        self.folder = tempfile.mkdtemp(prefix="recipe-ddp-")        # 0700: the payloads are ours alone
        self.group = False
        try:
            self.store = dist.TCPStore("127.0.0.1", 0, self.world, is_master=True, wait_for_workers=False,
                                       timeout=datetime.timedelta(seconds=START_TIMEOUT_S))
            self._start()
            if _plan is not None:
                _plan["child_ranks_started"] += self.world - 1
            self._wait_ready()
            dist.init_process_group(backend, store=self.store, rank=0, world_size=self.world,
                                    timeout=datetime.timedelta(seconds=TIMEOUT_S))
            self.group = True
        except BaseException:
            self.close(graceful=False)
            raise

    def _start(self) -> None:
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(self.store.port),
               "WORLD_SIZE": str(self.world), "RECIPE_DDP_BACKEND": self.backend,
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "RECIPE_PARENT_PID": str(os.getpid())}
        for r in range(1, self.world):
            log = open(os.path.join(self.folder, f"rank{r}.log"), "wb")
            child = subprocess.Popen([sys.executable, "-m", "recipe.engine.distributed"], stdin=subprocess.DEVNULL,
                                     env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "RECIPE_DDP_DEVICE": self.ranks[r]},
                                     stdout=log, stderr=subprocess.STDOUT)
            child.log_path = log.name          # type: ignore[attr-defined]
            log.close()
            _children.append(child)

    def _wait_ready(self) -> None:
        """Until every child rank is up; one that dies first ends the wait at once."""
        keys = [f"recipe/ready/{r}" for r in range(1, self.world)]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.store.check(keys):     # check does not block (wait's timeouts would warn on stderr)
            lost = _lost(wait_s=0.0)
            if lost is not None:
                raise lost
            if time.monotonic() > deadline:
                raise RuntimeError(f"train.devices: the child ranks did not start within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)

    def run(self, train_fit: Callable, model, train, val, kwargs: dict[str, Any]):
        global _current
        payload = os.path.join(self.folder, f"run{self.jobs}.pt")
        try:
            torch.save({"model": model, "x": train.x.cpu(), "y": train.y.cpu(), "kwargs": {**kwargs, **CHILD_ONLY}},
                       payload)
        except Exception as e:       # a model class defined inside a function, a lambda in the model...
            raise RecipeError(f"train.devices: {self.world}: the model cannot be sent to the other ranks "
                              f"({type(e).__name__}: {e}); set train.devices: 1") from None
        self.store.set(f"recipe/run/{self.jobs}", payload)
        self.jobs += 1
        saved_share = threads.share()
        threads.set_share(self.world)     # N processes share this machine's cores (threads.for_work)
        _current = Rank(0, self.world, train.x.device)
        try:
            return train_fit(model, train, val, devices=self.world, **kwargs)
        except Exception as e:      # a collective that failed: wait a moment for the OS to report the dead rank
            lost = _lost(wait_s=5.0 if isinstance(e, RuntimeError) else 0.0)
            if lost is not None:
                raise lost from e
            raise
        finally:
            _current = None
            threads.set_share(saved_share)
            with contextlib.suppress(OSError):
                os.unlink(payload)

    def close(self, graceful: bool) -> None:
        """graceful: tell the children to stop and wait for them; else (a run failed) end them at once."""
        if graceful and self.group:
            with contextlib.suppress(Exception):
                self.store.set(f"recipe/run/{self.jobs}", STOP)
            _join(60.0)
        if self.group:
            self.group = False
            dist.destroy_process_group()
        for p in _children:
            if p.poll() is None:
                p.terminate()
        _join(5.0)
        for p in _children:
            if p.poll() is None:
                p.kill()
                p.wait()
        _children.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


STOP = "stop"


def _lost(wait_s: float) -> Optional[BaseException]:
    """The first child rank that ended early, as the error to raise; None while all live (or ended with 0)."""
    deadline = time.monotonic() + wait_s
    while True:
        for r, p in enumerate(_children, start=1):
            code = p.poll()
            if code is None or code == 0:
                continue
            if code < 0 or code == 130:     # a signal, or Ctrl-C that reached the child first (it exits 130)
                name = "Ctrl-C" if code == 130 else \
                    signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                return RankLost(f"rank {r} of {len(_children) + 1} (pid {p.pid}) was killed by {name}: the run "
                                "stopped and the record says 'interrupted'; rerun the stage")
            tail = _tail(p.log_path)     # type: ignore[attr-defined]
            return RuntimeError(f"rank {r} of {len(_children) + 1} (pid {p.pid}) failed with exit code {code}"
                                + (f": {tail}" if tail else ""))
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _tail(path: str, lines: int = 6) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def _join(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in _children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))


# ----------------------------------------------------------------------------- a child rank

def _die_with_parent() -> None:
    """Linux: the kernel kills this rank when rank 0's process goes, however it goes."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if str(os.getppid()) != os.environ.get("RECIPE_PARENT_PID"):
        os._exit(1)            # rank 0 went before the death signal was armed


def main() -> int:
    """A child rank: join the group, then train each run rank 0 posts until it posts STOP."""
    global _current
    _die_with_parent()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    from recipe.engine import train as E

    device = torch.device(os.environ["RECIPE_DDP_DEVICE"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    threads.set_share(world)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=datetime.timedelta(seconds=START_TIMEOUT_S))
    store.set(f"recipe/ready/{rank}", "1")
    dist.init_process_group(os.environ["RECIPE_DDP_BACKEND"], store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    job = 0
    while True:
        key = f"recipe/run/{job}"
        while not store.check([key]):
            time.sleep(0.05)
        path = store.get(key).decode()
        if path == STOP:
            break
        # our own file in rank 0's private temp folder, written for this run: a full pickle (the model's class)
        payload = torch.load(path, map_location="cpu", weights_only=False)
        _current = Rank(rank, world, device)
        train = E.Tensors(payload["x"].to(device), payload["y"].to(device))
        E.fit(payload["model"].to(device), train, None, devices=world, **payload["kwargs"])
        _current = None
        job += 1
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    # run main() of the importable module, not of __main__: train.fit finds this rank through recipe.engine.distributed
    from recipe.engine import distributed as _module

    try:
        sys.exit(_module.main())
    except KeyboardInterrupt:      # Ctrl-C reached the whole process group: rank 0 reports it
        os._exit(130)
