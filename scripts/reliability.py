"""Reliability harness (issue 11): bad inputs, fuzzed configs, SIGKILL at random moments in every stage,
SIGTERM/SIGINT, two processes on one run folder, a tampered checkpoint, a full disk. Prints one table.

    .venv/bin/python scripts/reliability.py [--kills 54] [--fuzz 1000] [--seed 0] [--only kills,fuzz,...]

Exit status 0 when every case is clean: no traceback, no record that claims more than happened, every rerun passed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipe.workspace import PASSING, STAGES, Workspace, stage_state  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# the fast iris experiment; the model-quality verdict is not under test here, only honesty after a crash
HARNESS_CONFIG = """\
name: kill
seed: 0
data: {source: builtin:iris}
model: {kind: mlp, hidden: [32]}
train: {lr: 1.0e-2, batch_size: 16, epochs: 20}
overfit: {samples: 16, steps: 100}
regularize: {seeds: 1, ladder: [dropout]}
tune: {trials: 2}
ensemble: {top_k: 2}
checks:
  regularize.beats-baselines: {severity: warn, reason: "crash-consistency harness, not a model study"}
  tune.improves: {severity: warn, reason: "crash-consistency harness, not a model study"}
  ensemble.gain: {severity: warn, reason: "crash-consistency harness, not a model study"}
  overfit.train-fit: {severity: warn, reason: "crash-consistency harness, not a model study"}
"""


@dataclass
class Tally:
    tried: int = 0
    clean: int = 0
    tracebacks: int = 0
    inconsistent: int = 0
    reruns: int = 0
    reruns_passed: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, ok: bool, traceback: bool = False, inconsistent: bool = False, note: str = "") -> None:
        self.tried += 1
        self.clean += ok and not traceback and not inconsistent
        self.tracebacks += traceback
        self.inconsistent += inconsistent
        if note and not (ok and not traceback and not inconsistent):
            self.notes.append(note)


def recipe(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recipe", *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def invoke(*args):
    from tests.conftest import invoke as cli

    return cli(*args)


# ----------------------------------------------------------------------------- consistency after a crash


def inconsistencies(runs: Path, name: str, config_now: dict, killed: str | None = None) -> list[str]:
    """What a crash may have left that lies: unreadable records, half-written files, passed records whose
    artifacts do not match, a killed stage that the gate does not report as missing or interrupted."""
    problems = []
    ws = Workspace(runs, name)
    for path in sorted(ws.dir.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or "study" in path.parts:
            continue          # dot files are temp names (never read) and the lock; tune's study is a journal
        if path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except ValueError:
                problems.append(f"{path}: half-written JSON")
        elif path.suffix == ".pt":
            try:
                with zipfile.ZipFile(path) as z:
                    if z.testzip() is not None:
                        problems.append(f"{path}: corrupt checkpoint")
            except zipfile.BadZipFile:
                problems.append(f"{path}: half-written checkpoint")
    for stage in STAGES:
        rec = ws.read_record(stage)
        if rec is None:
            continue
        if rec.get("status") == "corrupt":
            problems.append(f"{stage}: unreadable record")
            continue
        if rec.get("status") in PASSING:
            if not rec.get("finished"):
                problems.append(f"{stage}: says {rec['status']} without a finish time")
            for rel, digest in (rec.get("artifacts") or {}).items():
                p = ws.stage_dir(stage) / rel
                if not p.exists():
                    problems.append(f"{stage}: says {rec['status']} but {rel} is missing")
    if killed is not None:
        state, _ = stage_state(ws, killed, config_now)
        rec = ws.read_record(killed) or {}
        # a kill that lands after the final record write (while the CLI prints) finds the work done: the
        # record is then complete (finish time, artifacts matching their digests) and says so honestly
        finished_before_kill = state in PASSING and bool(rec.get("finished"))
        if state not in ("missing", "interrupted") and not finished_before_kill:
            problems.append(f"{killed}: killed mid-stage, but the gate reports it as {state}")
    return problems


def _wait_started(p: subprocess.Popen, rec: Path, timeout: float) -> bool:
    """Until the record of this process (status interrupted, our pid) exists: the stage is running."""
    deadline = time.time() + timeout
    needle = f'"pid": {p.pid}'
    while time.time() < deadline and p.poll() is None:
        try:
            if needle in rec.read_text():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def kills(total: int, seed: int, tally: Tally, signals_tally: Tally, log=print) -> None:
    """SIGKILL each stage at seeded random moments; check honesty; rerun and require a pass.
    One SIGTERM or SIGINT per stage checks exit 130 and an interrupted record."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="recipe-kills-"))
    cfg = work / "kill.yaml"
    cfg.write_text(HARNESS_CONFIG)
    runs = work / "runs"
    from recipe.config import load

    config_now = load(cfg).model_dump(mode="json")
    per_stage = -(-total // len(STAGES))
    for stage in STAGES:
        rec = runs / "kill" / stage / "record.json"
        r = invoke(stage, cfg, "--runs", runs, "-q")
        # the stage's own time from its first record write to its last: kills land inside that window
        duration = float(Workspace(runs, "kill").read_record(stage).get("seconds") or 1.0)
        if r.exit_code != 0:
            tally.notes.append(f"{stage}: calibration run exited {r.exit_code}: {r.stderr[-300:]}")
            return
        done = attempts = 0
        while done < per_stage and attempts < per_stage * 4:
            attempts += 1
            # ensemble looks at test once; every later look (each kill's run and rerun) needs --force
            again = ["--force"] if stage == "ensemble" else []
            p = recipe(stage, cfg, "--runs", runs, "-q", *again)
            if not _wait_started(p, rec, timeout=120):
                p.kill()
                p.communicate()
                continue
            time.sleep(rng.uniform(0.0, duration))
            if p.poll() is not None:           # finished before the kill: not a kill, but it must be honest
                p.communicate()
                continue
            p.send_signal(signal.SIGKILL)
            _, err = p.communicate()
            done += 1
            bad = inconsistencies(runs, "kill", config_now, killed=stage)
            rerun = invoke(stage, cfg, "--runs", runs, "-q", *again)
            tally.reruns += 1
            passed = rerun.exit_code == 0 and Workspace(runs, "kill").read_record(stage)["status"] == "passed"
            tally.reruns_passed += passed
            bad += [f"after rerun: {b}" for b in inconsistencies(runs, "kill", config_now)]
            tally.add(passed, traceback="Traceback" in err + rerun.stderr, inconsistent=bool(bad),
                      note=f"SIGKILL {stage}: {bad or rerun.stderr[-300:]}")
            log(f"  SIGKILL {stage} #{done}: {'ok' if passed and not bad else bad or 'rerun failed'}")
        # SIGTERM / SIGINT: exit 130, record interrupted, rerun passes
        sig = (signal.SIGTERM, signal.SIGINT)[STAGES.index(stage) % 2]
        again = ["--force"] if stage == "ensemble" else []
        p = recipe(stage, cfg, "--runs", runs, "-q", *again)
        if _wait_started(p, rec, timeout=120):
            time.sleep(rng.uniform(0.0, duration / 2))
            if p.poll() is None:
                p.send_signal(sig)
            _, err = p.communicate(timeout=300)
            status = (Workspace(runs, "kill").read_record(stage) or {}).get("status")
            honest = status == "interrupted" or (p.returncode == 0 and status == "passed")   # the record
            exit_ok = p.returncode == 130 or (p.returncode == 0 and status == "passed")
            rerun = invoke(stage, cfg, "--runs", runs, "-q", *again)
            signals_tally.reruns += 1
            signals_tally.reruns_passed += rerun.exit_code == 0
            signals_tally.add(exit_ok and honest and rerun.exit_code == 0, traceback="Traceback" in err,
                              inconsistent=not honest, note=f"{sig.name} {stage}: exit {p.returncode}, {status}; stderr: {err[-600:]}")
            log(f"  {sig.name} {stage}: exit {p.returncode}, record {status}")
        else:
            p.kill()
            p.communicate()


# ----------------------------------------------------------------------------- the other families


def bad_inputs(tally: Tally) -> None:
    from tests.bad_input.corpus import CASES, escaped

    for name, case in sorted(CASES.items()):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            argv, needles = case(folder)
            try:
                r = invoke(*argv)
            except Exception as e:       # reached the user as a traceback
                tally.add(False, traceback=True, note=f"{name}: {type(e).__name__}: {e}")
                continue
            message = " ".join(r.stderr.split())
            ok = r.exit_code == 2 and all(n in message for n in needles) and not escaped(folder)
            tally.add(ok, traceback="Traceback" in r.stderr, note=f"{name}: exit {r.exit_code}: {message[-200:]}")


def fuzz(n: int, seed: int, tally: Tally) -> None:
    from tests.hardening.fuzz import BASE, mutate
    from tests.hardening.test_fuzz_config import run_case

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(n):
            config, touched, as_override = BASE, [], False
            for _ in range(rng.randint(1, 2)):
                config, now, as_override = mutate(config, rng.choice)
                touched += now
            try:
                run_case(config, touched, as_override and len(touched) == 1, Path(tmp))
                tally.add(True)
            except AssertionError as e:
                tally.add(False, note=f"fuzz {touched}: {str(e)[:200]}")
            except Exception as e:
                tally.add(False, traceback=True, note=f"fuzz {touched}: {type(e).__name__}: {e}")


def pytest_family(tally: Tally, tests: list[str], label: str) -> None:
    """Families whose setup is a test already (locks, tampering, disk full): run them, count each test."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *tests], cwd=ROOT, env=ENV, capture_output=True, text=True)
        import xml.etree.ElementTree as ET

        for tc in ET.parse(report).getroot().iter("testcase"):
            failure = tc.find("failure")
            error = tc.find("error")
            bad = failure if failure is not None else error
            text = (bad.text or "") if bad is not None else ""
            if tc.find("skipped") is not None:
                continue
            tally.add(bad is None, traceback=error is not None, note=f"{label} {tc.get('name')}: {text[-300:]}")


FAMILIES = ("bad-input", "fuzz", "kills", "signals", "locks", "tamper", "disk-full")
PYTEST_FAMILIES = {   # families whose cases are tests in tests/hardening/test_concurrency_tamper_disk.py
    "locks": ("test_exclusive_lock_refuses_a_second_holder_naming_its_pid",
              "test_shared_locks_coexist_but_exclude_a_stage",
              "test_second_stage_on_same_run_folder_exits_2_at_once"),
    "tamper": ("test_checkpoint_that_runs_code_is_refused_directly",
               "test_ensemble_refuses_a_tampered_tune_checkpoint",
               "test_artifact_edited_after_record_is_named_by_gate_and_status",
               "test_record_corrupted_by_hand_reads_as_missing"),
    "disk-full": ("test_atomic_write_failure_names_path_and_keeps_old_file",
                  "test_disk_full_during_stage_exits_nonzero_naming_path_earlier_work_intact"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=54, help="SIGKILLs in all, spread over the six stages")
    ap.add_argument("--fuzz", type=int, default=1000, help="fuzzed configs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(FAMILIES), help="comma-separated families to run")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    tallies = {f: Tally() for f in FAMILIES}
    started = time.perf_counter()
    log = lambda m: print(m, file=sys.stderr, flush=True)   # noqa: E731
    if "bad-input" in only:
        log("bad inputs ...")
        bad_inputs(tallies["bad-input"])
    if "fuzz" in only:
        log(f"fuzz ({args.fuzz} configs) ...")
        fuzz(args.fuzz, args.seed, tallies["fuzz"])
    if only & {"kills", "signals"}:
        log(f"kills ({args.kills}) and signals ...")
        kills(args.kills, args.seed, tallies["kills"], tallies["signals"], log=log)
    hardening = "tests/hardening/test_concurrency_tamper_disk.py"
    for family, tests in PYTEST_FAMILIES.items():
        if family in only:
            pytest_family(tallies[family], [f"{hardening}::{t}" for t in tests], family)
    print(table({f: t for f, t in tallies.items() if f in only}))
    print(f"({time.perf_counter() - started:.0f} s)")
    notes = [n for t in tallies.values() for n in t.notes]
    for n in notes[:30]:
        print("  !", n)
    ok = all(t.tried and t.clean == t.tried and t.reruns_passed == t.reruns
             for f, t in tallies.items() if f in only)
    return 0 if ok else 1


def table(tallies: dict[str, Tally]) -> str:
    head = ("family", "cases tried", "clean outcomes", "tracebacks", "records inconsistent after kills",
            "reruns passed")
    rows = [(f, str(t.tried), str(t.clean), str(t.tracebacks), str(t.inconsistent),
             f"{t.reruns_passed}/{t.reruns}" if t.reruns else "-") for f, t in tallies.items()]
    total = Tally(sum(t.tried for t in tallies.values()), sum(t.clean for t in tallies.values()),
                  sum(t.tracebacks for t in tallies.values()), sum(t.inconsistent for t in tallies.values()),
                  sum(t.reruns for t in tallies.values()), sum(t.reruns_passed for t in tallies.values()))
    rows.append(("total", str(total.tried), str(total.clean), str(total.tracebacks), str(total.inconsistent),
                 f"{total.reruns_passed}/{total.reruns}"))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"   # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


if __name__ == "__main__":
    sys.exit(main())
