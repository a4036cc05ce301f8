"""K tune workers on this machine against one PostgreSQL study: trials per minute and storage round trips per trial.

    python scripts/sim_workers.py [--workers 2 4 8] [--trials 48] [--epochs 2] [--journal] [--json PATH]

What a cluster of `recipe tune --storage postgresql://...` processes does, measured on one machine (issue 20
item 6, docs/scaling.md). The script starts a throwaway PostgreSQL server on loopback (Debian's binaries, as
tests/stages/test_tune.py's fixture does, with pg_stat_statements loaded), then for each K starts K worker
processes that run tune's own worker loop (recipe/stages/tune/worker.py `work`: the study lock, ask, train
through the one engine, tell; what every `recipe tune` process runs) on one fresh study of --trials tiny trials
(digits, an MLP of 16 units, --epochs epochs). Workers load torch and the data first and wait at a barrier, so
start-up is not in the numbers; the statistics are reset while they wait.

Counted on the server, not guessed: `statements/trial` is the calls pg_stat_statements saw in the study's
database (BEGIN and COMMIT included: with psycopg outside pipeline mode each statement is one client round trip),
split into reads (SELECT), writes (INSERT/UPDATE/DELETE) and the rest (BEGIN/COMMIT/ROLLBACK/SET/SHOW, the study
lock); `xacts/trial` is pg_stat_database's xact_commit + xact_rollback delta; `lock ms/trial` the time the server
spent in pg_advisory_lock (the study lock: waiting workers sit there); `hold ms/take` the time a worker held the
study lock per take (timed in the workers around recipe's StudyLock, unlock included): the study hands out at
most 1000 / hold trials a second, whatever K. `SQL/take` counts the statements the storage sent while the lock was
held (SQLAlchemy's, without BEGIN/COMMIT): on a cluster a take costs about that many network round trips under
the lock. `server ms/trial` is the time PostgreSQL spent executing the trial's statements (lock waits
excluded): what is left of the hold is round-trip latency (here: the scheduler of a loaded machine). `join stmts/worker` is what one worker
spends joining the study (opening the storage, loading the study, one look at the budget), measured in a first
pass with a budget of 0; the tune pass pays it again per worker, so it is inside statements/trial too. The server is measured from another
database, so the measuring adds nothing. `trials/min` is counted trials over the time from the barrier until the last
worker's loop returned (`span s`; interpreter teardown excluded); `s in trial` the mean time from a trial's ask to its tell (training, its storage writes, its
checkpoint). With --journal each K also runs on Optuna's journal file (recipe's one-machine default) for
comparison; it has no server to count, so its statement columns are empty.

On a machine with fewer cores than K, K workers share the cores: trials/min then measures the CPUs, not the
storage; the per-trial counts are what scales to a cluster. The load average is printed before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ("storage", "K", "trials", "trials/min", "s in trial", "statements/trial", "reads/trial", "writes/trial",
           "other/trial", "xacts/trial", "server ms/trial", "lock ms/trial", "hold ms/take", "SQL/take",
           "join stmts/worker", "span s")
CONFIG = {"name": "sim", "seed": 0, "data": {"source": "builtin:digits"},
          "model": {"kind": "mlp", "hidden": [16]}, "train": {"lr": 3e-3, "batch_size": 64, "epochs": 2},
          "ensemble": {"top_k": 2}}
SPACE = {"train.lr": {"low": 1e-3, "high": 3e-2, "log": True}, "train.batch_size": {"choices": [32, 64]}}


# ----------------------------------------------------------------------------- a throwaway PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(max_connections: int = 200) -> Iterator[str]:
    """A PostgreSQL server on loopback in a temp folder (trust auth, database `recipe`, pg_stat_statements
    loaded and created in the `postgres` database, from where it is read); yields the study's URL."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        raise SystemExit("sim_workers: PostgreSQL is not installed (apt-get install -y postgresql)")
    bin_dir = bins[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="recipe-sim-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:     # initdb refuses root: run the server as nobody
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(folder, "nobody")
    port, data = _free_port(), folder / "data"

    def run(*cmd):
        subprocess.run(as_user + [str(c) for c in cmd], check=True, capture_output=True)

    run(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust")
    run(bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections={max_connections} "
        "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all", "start")
    try:
        run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "recipe")
        yield f"postgresql://postgres@127.0.0.1:{port}/recipe"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


class Meter:
    """Reads the study database's counters from the `postgres` database (so reading them adds none)."""

    def __init__(self, url: str):
        import psycopg

        self.db = url.rsplit("/", 1)[1]
        self.conn = psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def reset(self) -> None:
        self.conn.execute("SELECT pg_stat_statements_reset()")

    def xacts(self) -> int:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                                (self.db,)).fetchone()
        return int(row[0])

    def statements(self) -> dict[str, float]:
        rows = self.conn.execute(
            "SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s JOIN pg_database d "
            "ON d.oid = s.dbid WHERE d.datname = %s", (self.db,)).fetchall()
        out = {"statements": 0, "reads": 0, "writes": 0, "other": 0, "lock_ms": 0.0, "server_ms": 0.0}
        for query, calls, ms in rows:
            word = query.lstrip("( \n").split(None, 1)[0].upper() if query.strip() else ""
            kind = "reads" if word in ("SELECT", "WITH") else \
                "writes" if word in ("INSERT", "UPDATE", "DELETE") else "other"
            if "pg_advisory_lock" in query:
                kind = "other"
                out["lock_ms"] += ms
            else:
                out["server_ms"] += ms
            out[kind] += calls
            out["statements"] += calls
        return out

    def close(self) -> None:
        self.conn.close()


# ----------------------------------------------------------------------------- the workers


def _time_the_study_lock(held) -> None:
    """Measure, in this worker process, how long each take holds the study lock (from lock granted to unlock
    done) and how many SQL statements the storage sends meanwhile (SQLAlchemy's cursor executes: BEGIN and COMMIT,
    which psycopg sends itself, are not among them): `held` = [seconds held, takes, statements under the lock].
    Wraps recipe's StudyLock, the lock every worker takes trials under."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from recipe.stages.tune.storage import StudyLock

    enter, leave = StudyLock.__enter__, StudyLock.__exit__
    inside = [False]

    @event.listens_for(Engine, "before_cursor_execute")
    def count(*_args):
        if inside[0]:
            held[2] += 1

    def timed_enter(self):
        out = enter(self)
        self._granted, inside[0] = time.perf_counter(), True
        return out

    def timed_exit(self, *exc):
        inside[0] = False
        out = leave(self, *exc)
        held[0] += time.perf_counter() - self._granted
        held[1] += 1
        return out

    StudyLock.__enter__, StudyLock.__exit__ = timed_enter, timed_exit


def _worker(raw: dict, base_dir: str, plans: list, worker: int, jobs: int, barrier, gates, finished,
            held) -> None:
    """One worker process: everything loaded before the first barrier, then tune's own worker loop once per plan
    (each after the next gate opens), writing the time it returned into `finished` and its lock holds of the
    last plan into `held` (3 per worker: seconds, takes, statements under the lock)."""
    from recipe import threads

    threads.configure_env()
    threads.set_share(jobs)
    threads.apply_default()
    from recipe.config import validate
    from recipe.data import load
    from recipe.engine.train import pick_device
    from recipe.stages.tune.objective import Objective  # noqa: F401  (imported before the clock starts)
    from recipe.stages.tune.storage import open_storage
    from recipe.stages.tune.worker import Plan, work

    cfg = validate(raw)
    cfg._base_dir = Path(base_dir)
    ds = load(cfg)
    device = pick_device("cpu")
    import torch

    w = torch.zeros(1, requires_grad=True)        # a process's first optimizer step imports torch._dynamo
    w.sum().backward()                              # (seconds): before the clock, not in the first trial
    torch.optim.Adam([w]).step()
    open_storage(plans[0]["storage"])               # the storage's modules (SQLAlchemy, alembic) imported
    mine = [0.0, 0, 0]
    _time_the_study_lock(mine)
    for plan, gate in zip(plans, gates):
        barrier.wait()
        gate.wait()
        mine[:] = [0.0, 0, 0]
        work(cfg, ds, device, Plan(**plan), worker=worker)
        finished[worker] = time.time()
    held[3 * worker:3 * worker + 3] = mine


def _plan(storage: str, name: str, trials: int, folder: Path):
    from recipe.stages.tune.worker import Plan

    return Plan(storage=storage, study_name=name, method="random", trials=trials, pruner="none", seed=0,
                chosen={}, space=SPACE, checkpoints=str(folder / "checkpoints"), lock=str(folder / "study.lock"))


def simulate(storage: str, kind: str, k: int, trials: int, epochs: int, folder: Path,
             meter: Optional[Meter]) -> dict:
    """K workers on one fresh study of `trials` trials; the row of the table."""
    import optuna

    from recipe.config import validate
    from recipe.stages.tune.recovery import counted
    from recipe.stages.tune.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = {**CONFIG, "train": {**CONFIG["train"], "epochs": epochs}}
    validate(raw)
    name = f"sim-{kind}-k{k}-{os.getpid()}-{time.time_ns() % 10 ** 6}"
    sub = folder / name
    (sub / "checkpoints").mkdir(parents=True)
    optuna.create_study(study_name=name, storage=open_storage(storage), direction="maximize")
    # two runs of the workers' loop on the study: with a budget of 0 (each worker only joins: opens the storage,
    # loads the study, takes the lock once, finds the budget met), then the tune itself; the first measures the
    # per-worker cost of joining, which the second also pays once per worker
    plans = [asdict(_plan(storage, name, 0, sub)), asdict(_plan(storage, name, trials, sub))]
    spawn = mp.get_context("spawn")
    barrier, gates = spawn.Barrier(k + 1), [spawn.Event(), spawn.Event()]
    finished, held = spawn.Array("d", k), spawn.Array("d", 3 * k)
    procs = [spawn.Process(target=_worker, args=(raw, str(folder), plans, w, k, barrier, gates, finished, held),
                           daemon=True) for w in range(k)]
    for p in procs:
        p.start()
    barrier.wait(timeout=900)         # every worker has torch, the data and the code loaded
    join = None
    if meter is not None:
        meter.reset()
    gates[0].set()
    barrier.wait(timeout=900)         # every worker has joined and left
    if meter is not None:
        join = meter.statements()["statements"]
        meter.reset()
        before = meter.xacts()
    start = time.time()
    gates[1].set()
    for p in procs:
        p.join(timeout=1800)
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise SystemExit(f"sim_workers: K={k} {kind}: worker exit codes {bad}")
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    done = [t for t in study.get_trials(deepcopy=False) if counted(t)]
    span = max(max(finished) - start, 1e-9)      # until the last worker's loop returned (not its teardown)
    inside = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done if t.datetime_complete]
    row = {"storage": kind, "K": k, "trials": len(done), "trials/min": round(len(done) / span * 60, 1),
           "s in trial": round(sum(inside) / len(inside), 2), "span s": round(span, 2),
           "hold ms/take": round(1000 * sum(held[0::3]) / max(sum(held[1::3]), 1), 2)}
    if kind == "postgresql":
        row["SQL/take"] = round(sum(held[2::3]) / max(sum(held[1::3]), 1), 1)
    if meter is not None:
        time.sleep(1.5)               # exited backends flush their counters; then read them
        stats, xacts = meter.statements(), meter.xacts() - before
        row.update({"statements/trial": round(stats["statements"] / len(done), 1),
                    "reads/trial": round(stats["reads"] / len(done), 1),
                    "writes/trial": round(stats["writes"] / len(done), 1),
                    "other/trial": round(stats["other"] / len(done), 1),
                    "xacts/trial": round(xacts / len(done), 1),
                    "lock ms/trial": round(stats["lock_ms"] / len(done), 2),
                    "server ms/trial": round(stats["server_ms"] / len(done), 2),
                    "join stmts/worker": round(join / k, 1)})
    return row


def table(rows: list[dict]) -> str:
    cells = [[str(r.get(c, "-")) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))   # noqa: E731
    return "\n".join([line(COLUMNS)] + [line(row) for row in cells])


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8], help="K values (worker processes)")
    ap.add_argument("--trials", type=int, default=48, help="trials per study (one study per K)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per trial (tiny trials: storage cost shows)")
    ap.add_argument("--journal", action="store_true", help="also run each K on the journal file storage")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here too")
    args = ap.parse_args(argv)
    if any(k < 1 for k in args.workers) or args.trials < 1 or args.epochs < 1:
        ap.error("--workers, --trials and --epochs must be >= 1")
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}  usable cores: {len(os.sched_getaffinity(0))}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="recipe-sim-") as tmp, \
            throwaway_postgres(max_connections=max(100, 8 * max(args.workers) + 20)) as url:
        meter = Meter(url)
        try:
            for k in args.workers:
                rows.append(simulate(url, "postgresql", k, args.trials, args.epochs, Path(tmp), meter))
                print(f"  K={k} postgresql: {rows[-1]}", file=sys.stderr, flush=True)
                if args.journal:
                    journal = str(Path(tmp) / f"journal-k{k}.log")
                    rows.append(simulate(journal, "journal", k, args.trials, args.epochs, Path(tmp), None))
                    print(f"  K={k} journal: {rows[-1]}", file=sys.stderr, flush=True)
        finally:
            meter.close()
    print(table(rows))
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
