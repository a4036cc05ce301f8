"""tune --jobs N: this process is worker 0, N - 1 spawned processes join the same study, one core share each.

Why processes and not threads: one GIL, and a trial on a small model is mostly Python. Why this process takes
trials too: a spawned worker needs seconds to import torch (more on a busy 2-core machine), and this process has
torch and the data loaded already. Threads follow recipe/threads.py: every process is one of N sharing the cores
this process may use (threads.set_share), a fit picks one thread for small work and the share for large work,
and spawned workers import torch with OMP_WAIT_POLICY=PASSIVE already in their environment (threads.configure_env:
an OpenMP pool that spins while another process holds the core slows every worker down).

GPUs (recipe/devices.py plan_jobs): worker i is pinned to GPU i mod G. A spawned worker starts with
CUDA_VISIBLE_DEVICES=<its GPU> in its environment, so CUDA (initialised lazily, on the worker's first tensor on
the device) never sees another GPU and `cuda` means its own. This process, worker 0, keeps its environment
(later stages of `recipe run` may use every GPU) and trains on cuda:0, the first visible GPU, which is GPU 0 of
the plan. Every trial records the GPU its worker was pinned to (recipe:gpu) and the CUDA_VISIBLE_DEVICES that
worker process saw (recipe:cuda_visible_devices).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict
from pathlib import Path

from recipe import interrupts

DATA_BY_PIPE_BYTES = 256 * 2 ** 20   # smaller datasets travel to workers pickled; larger ones are reloaded there
STARTING, JOINED, STOP = 0, 1, -1    # a worker's gate: still importing, took part in the study, told to stop
LARGE_WORK_MACS = 1e15               # a step this size gets the process's whole share of the cores


def _worker_main(raw: dict, base_dir: str, plan: dict, worker: int, jobs: int, device: str, parent: int,
                 ds=None, gate=None, gpu=None) -> None:
    """Entry point of a spawned worker process: rebuild the config (and the data unless it came along), then take
    trials. Its start-up is importing torch (and, on the first optimizer, torch._dynamo): seconds on 2 cores.
    `gate` (shared ints): [0] whether it joined the study (JOINED) or was told to stop while starting (STOP);
    [1] the intra-op threads a large fit gets in it (its share of the cores), [2] 1 when OMP_WAIT_POLICY was
    PASSIVE as torch was imported. `gpu`: the GPU it is pinned to (its environment already says so)."""
    from recipe.devices import pin_this_process

    pin_this_process(gpu)     # a no-op when the environment it started with says so already
    interrupts.arm()     # SIGTERM from the parent (or a cluster) marks the trial in flight for retry
    try:
        passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
        from recipe import threads as thread_policy
        from recipe.config import validate
        from recipe.engine.train import pick_device
        from recipe.stages.tune.worker import Plan, work

        thread_policy.set_share(jobs)    # N workers share the cores, not oversubscribe them
        thread_policy.apply_default()
        cfg = validate(raw)
        cfg._base_dir = Path(base_dir)
        if ds is None:
            from recipe.data import load

            ds = load(cfg)
        if gate is not None:
            with gate.get_lock():
                if gate[0] == STOP:
                    return
                gate[0], gate[1], gate[2] = JOINED, thread_policy.for_work(LARGE_WORK_MACS), int(passive)
        work(cfg, ds, pick_device(device), Plan(**plan), worker=worker, parent=parent, gpu=gpu)
    except KeyboardInterrupt:
        pass   # the trial in flight (if any) was marked for retry; the parent records 'interrupted'


def _nbytes(ds) -> int:
    return sum(a.nbytes for split in (ds.train, ds.val, ds.raw_test()) for a in (split.x, split.y, split.rows))


def start_workers(cfg, ds, plan, numbers, jobs: int, device_name: str = "auto", gpus=None) -> tuple[list, list]:
    """Spawn workers `numbers`, each one of `jobs` processes sharing the cores and, with `gpus` (one entry per
    worker number), pinned to its GPU; returns their processes and gates."""
    from recipe import threads
    from recipe.devices import pinned_env

    threads.configure_env()     # spawned workers import torch with OpenMP told to sleep, not spin, while waiting
    raw, data = cfg.model_dump(mode="json"), (ds if _nbytes(ds) <= DATA_BY_PIPE_BYTES else None)
    spawn = mp.get_context("spawn")
    gates = [spawn.Array("i", [STARTING, 0, 0]) for _ in numbers]
    gpu_of = (lambda w: gpus[w] if gpus and w < len(gpus) else None)   # noqa: E731
    procs = [spawn.Process(target=_worker_main, args=(raw, str(cfg.base_dir), asdict(plan), w, jobs, device_name,
                                                      os.getpid(), data, gate, gpu_of(w)), daemon=True)
             for w, gate in zip(numbers, gates)]
    for w, p in zip(numbers, procs):
        with pinned_env(gpu_of(w)):      # the child's interpreter starts with its GPU as the only visible one
            p.start()
    return procs, gates


def run_jobs(cfg, ds, device, plan, jobs: int, tick=None, device_name: str = "auto", gpus=None) -> list[int]:
    """Take the study's trials with `jobs` processes: this one (worker 0) and jobs - 1 spawned ones, worker i on
    gpus[i] when given (JobsPlan.gpus). This process stops workers still starting when the budget is met, so
    --jobs 2 is not slower than --jobs 1 on a short study. Returns the exit codes of workers that crashed (their
    trials were retried)."""
    from recipe.stages.tune.worker import work

    gpu0 = gpus[0] if gpus else None
    if jobs <= 1:
        work(cfg, ds, device, plan, tick=tick, gpu=gpu0)
        return []
    from recipe import threads
    from recipe.stages.tune.worker import join_study

    threads.set_share(jobs)
    procs, gates = [], []
    try:
        procs, gates = start_workers(cfg, ds, plan, range(1, jobs), jobs, device_name, gpus)
        work(cfg, ds, device, plan, worker=0, tick=tick, gpu=gpu0)
        stopped = set()
        for p, gate in zip(procs, gates):   # still importing torch: it would only find the study done
            with gate.get_lock():
                if gate[0] == STARTING:
                    gate[0] = STOP
                    p.terminate()
                    stopped.add(p.pid)
        study = join_study(cfg, plan) if tick is not None else None
        while any(p.is_alive() for p in procs):     # the others finish the trials they hold
            time.sleep(0.2)
            if study is not None:
                tick(study)
        crashed = [p.exitcode for p in procs if p.exitcode not in (0, None) and p.pid not in stopped]
        if crashed:    # a crashed worker's trial was failed for retry: take its slot here
            work(cfg, ds, device, plan, worker=0, tick=tick, gpu=gpu0)
        return crashed
    except KeyboardInterrupt:
        for p in procs:     # each worker marks its trial in flight for retry, then exits
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=30)
        raise
    finally:
        threads.set_share(1)
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
