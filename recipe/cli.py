"""The command line: one thin function per command; errors become exit codes (DESIGN §1).

Commands that train nothing (--help, status, checks, schema, init) import neither torch nor scikit-learn.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from recipe import interrupts, threads
from recipe.errors import RecipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Karpathy's 'A Recipe for Training Neural Networks' as six gated stages.")

EXIT_INTERRUPTED = 130
NEXT = {"inspect": "baseline", "baseline": "overfit-batch", "overfit-batch": "regularize", "regularize": "tune",
        "tune": "ensemble"}


def console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def handled(fn: Callable) -> Callable:
    """Map recipe's errors to exit codes with one message, no traceback (RECIPE_DEBUG=1 shows it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        saved = interrupts.save()
        interrupts.arm()
        as_json = kwargs.get("as_json", False)
        try:
            return fn(*args, **kwargs)
        except RecipeError as e:
            if os.environ.get("RECIPE_DEBUG"):
                raise
            con = console()
            from rich.markup import escape

            label = "refused" if e.exit_code == 3 else "error"
            for i, m in enumerate(e.messages):
                con.print(f"[bold red]{label}:[/bold red] {escape(m)}" if i == 0 else f"  {escape(m)}", soft_wrap=True)
            if as_json:
                typer.echo(json.dumps({"status": label, "exit_code": e.exit_code, "errors": e.messages}))
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt as e:
            interrupts.hold()   # a second Ctrl-C while exiting must not turn 130 into a crash
            from rich.markup import escape

            # a stage that keeps its finished work says how to continue (regularize names the exact command)
            hint = str(e) or "the record says 'interrupted'; rerun the stage"
            console().print(f"[magenta]interrupted[/magenta]: {escape(hint)}", soft_wrap=True)
            if as_json:
                typer.echo(json.dumps({"status": "interrupted", "exit_code": EXIT_INTERRUPTED,
                                       **({"message": str(e)} if str(e) else {})}))
            raise typer.Exit(EXIT_INTERRUPTED)
        finally:
            interrupts.restore(saved)

    return wrapper


# ----------------------------------------------------------------------------- shared options

ConfigArg = typer.Argument(None, help="Experiment YAML; defaults to the last one used (runs/LATEST).",
                           show_default=False)
SetOpt = typer.Option(None, "-o", "--set", help="Override a config key: key.path=value (YAML-typed). Repeatable.")
RunsOpt = typer.Option(Path("runs"), "--runs", help="Folder holding every experiment's records.")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")
ForceOpt = typer.Option(False, "--force", help="Proceed past a refusing gate; recorded in the record.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable summary on stdout.")
QuietOpt = typer.Option(False, "-q", "--quiet", help="Only the final line on stderr.")
DevicesOpt = typer.Option(None, "--devices", min=1, help="Train each run across N devices (DDP; gloo processes on "
                                                         "CPU): train.devices for this run.")


def _load_config(config: Optional[Path], overrides: Optional[List[str]], runs: Path):
    from recipe.config import load
    from recipe.workspace import latest_config

    if config is None:
        config = latest_config(runs)
        if config is None:
            raise RecipeError(f"no CONFIG given and {runs / 'LATEST'} does not exist: pass the experiment YAML "
                              "(e.g. recipe inspect configs/digits.yaml)")
        if not config.exists():
            raise RecipeError(f"{runs / 'LATEST'} points to {config}, which no longer exists: pass the config file")
    return load(config, overrides or [])


def _check_device(device: str) -> None:
    from recipe.devices import check_device_name

    check_device_name(device)


def _jobs(value: Optional[str]):
    """--jobs N or auto, checked before any work starts (recipe/devices.py resolves auto)."""
    from recipe.devices import parse_jobs

    return parse_jobs(value)


def _options(runs, device, force, quiet, as_json, **extra):
    from recipe.stage import Options

    _check_device(device)
    return Options(runs=runs, device=device, force=force, quiet=quiet, json=as_json, **extra)


def _stage(stage: str, config, overrides, runs, device, force, quiet, as_json, **extra) -> int:
    from recipe import checks as C
    from recipe.runner import execute

    cfg = _load_config(config, overrides, runs)
    con = console()
    options = _options(runs, device, force, quiet, as_json, **extra)
    if not quiet:
        con.print(f"[bold]recipe {stage}[/bold] · {cfg.name} · {cfg.path}")
    record, code = execute(stage, cfg, options, con)
    checks = [C.Check.from_dict(c) for c in record.get("checks", [])]
    if not quiet:
        C.render(checks, con, title=f"{stage} checks")
        if record.get("summary"):
            from rich.markup import escape

            con.print(escape(record["summary"]), soft_wrap=True)
    style = C.STATUS_STYLE.get(record["status"], "")
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("pass", "warn", "fail", "skip")}
    tail = ""
    if code == 0 and stage in NEXT:
        tail = f" · next: recipe {NEXT[stage]}"
    elif code == 1:
        failed = [c.id for c in checks if c.status == "fail"]
        tail = f" · failed: {', '.join(failed)}"
    con.print(f"[{style}]{stage} {record['status']}[/{style}] ({counts['pass']} pass, {counts['warn']} warn, "
              f"{counts['fail']} fail) in {record.get('seconds', 0):.1f}s{tail}", soft_wrap=True)
    if as_json:
        typer.echo(json.dumps({"stage": stage, "status": record["status"], "exit_code": code,
                               "summary": record.get("summary", ""), "checks": record.get("checks", []),
                               "metrics": record.get("metrics", {}),
                               "record": str(options.runs / cfg.name / stage / "record.json")}, default=str))
    return code


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------- stage commands


@app.command()
@handled
def inspect(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
            device: str = DeviceOpt, force: bool = ForceOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt):
    """Stage 1: become one with the data (NaN, leaks, imbalance, scale, label noise, signal...)."""
    _exit(_stage("inspect", config, overrides, runs, device, force, quiet, as_json))


@app.command()
@handled
def baseline(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
             device: str = DeviceOpt, force: bool = ForceOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt):
    """Stage 2: end-to-end skeleton, dumb baselines, and the silent model bugs."""
    _exit(_stage("baseline", config, overrides, runs, device, force, quiet, as_json))


@app.command("overfit-batch")
@handled
def overfit_batch(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
                  device: str = DeviceOpt, force: bool = ForceOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt):
    """Stage 3: memorize one batch, find a learning rate, fit the train set."""
    _exit(_stage("overfit-batch", config, overrides, runs, device, force, quiet, as_json))


@app.command()
@handled
def regularize(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
               device: str = DeviceOpt, force: bool = ForceOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
               jobs: Optional[str] = typer.Option(None, "--jobs", help="Worker processes for the ladder: N, or auto "
                                                  "(one per GPU, each pinned to its own; CPU: one per two cores)."),
               devices: Optional[int] = DevicesOpt):
    """Stage 4: bias vs variance, each regularizer alone with seed noise, the combination kept."""
    _exit(_stage("regularize", config, overrides, runs, device, force, quiet, as_json, jobs=_jobs(jobs), devices=devices))


class Pruner(str, Enum):
    none = "none"
    asha = "asha"
    median = "median"


@app.command()
@handled
def tune(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
         device: str = DeviceOpt, force: bool = ForceOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
         random_search: bool = typer.Option(False, "--random-search", help="Random search (the default)."),
         grid_search: bool = typer.Option(False, "--grid-search", help="Grid over choices and 3 points per range."),
         quasi_random: bool = typer.Option(False, "--quasi-random", help="Scrambled Sobol sequence."),
         tpe: bool = typer.Option(False, "--tpe", help="Tree-structured Parzen estimator."),
         trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Trials in the study (total)."),
         jobs: Optional[str] = typer.Option(None, "--jobs", help="Worker processes sharing the study: N, or auto "
                                            "(one per GPU, each pinned to its own; CPU: one per two cores)."),
         pruner: Optional[Pruner] = typer.Option(None, "--pruner", help="asha | median | none"),
         storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (postgresql://...).")):
    """Stage 5: search hyperparameters around regularize's choice."""
    flags = [m for m, on in (("random", random_search), ("grid", grid_search), ("quasi-random", quasi_random),
                             ("tpe", tpe)) if on]
    if len(flags) > 1:
        raise RecipeError(f"choose one search method, not {' and '.join('--' + f for f in flags)}")
    opts = {"method": flags[0] if flags else None, "trials": trials, "jobs": _jobs(jobs),
            "pruner": pruner.value if pruner else None, "storage": storage}
    _exit(_stage("tune", config, overrides, runs, device, force, quiet, as_json, tune=opts))


@app.command()
@handled
def ensemble(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
             device: str = DeviceOpt, force: bool = ForceOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
             devices: Optional[int] = DevicesOpt):
    """Stage 6: ensemble the top tuned models, then evaluate the sealed test split once."""
    _exit(_stage("ensemble", config, overrides, runs, device, force, quiet, as_json, devices=devices))


@app.command()
@handled
def run(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
        device: str = DeviceOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
        rerun: bool = typer.Option(False, "--rerun", help="Rerun stages that are already up to date."),
        devices: Optional[int] = DevicesOpt):
    """All stages in order; stages already passed and fresh are skipped; stops at the first that does not pass."""
    from recipe.workspace import STAGES, Workspace, stage_state

    cfg = _load_config(config, overrides, runs)
    con = console()
    ws = Workspace(runs, cfg.name)
    results = []
    code = 0
    for stage in STAGES:
        state, _ = stage_state(ws, stage, cfg.model_dump(mode="json"))
        if state == "passed" and not rerun:
            con.print(f"[green]{stage}[/green]: up to date (passed); --rerun to run it again")
            results.append({"stage": stage, "status": "up to date", "exit_code": 0})
            continue
        code = _stage(stage, cfg.path, overrides, runs, device, False, quiet, False, devices=devices)
        results.append({"stage": stage, "exit_code": code})
        if code:
            break
    if as_json:
        typer.echo(json.dumps({"stages": results, "exit_code": code}))
    _exit(code)


# ----------------------------------------------------------------------------- commands that train nothing


@app.command()
@handled
def status(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
           as_json: bool = JsonOpt):
    """One row per stage: passed / failed / forced / stale / missing, and why."""
    from recipe.render import status_table
    from recipe.workspace import STAGES, Workspace, stage_state

    cfg = _load_config(config, overrides, runs)
    ws = Workspace(runs, cfg.name)
    now = cfg.model_dump(mode="json")
    rows = []
    for stage in STAGES:
        state, reasons = stage_state(ws, stage, now)
        rec = ws.read_record(stage) or {}
        counts = {k: sum(1 for c in rec.get("checks", []) if c.get("status") == k) for k in ("pass", "warn", "fail")}
        rows.append({"stage": stage, "state": state, "reasons": reasons, "finished": rec.get("finished"),
                     "summary": rec.get("summary", ""), "checks": counts if rec else None})
    if as_json:
        typer.echo(json.dumps({"name": cfg.name, "stages": rows}))
        return
    con = console()
    con.print(status_table(f"{cfg.name} ({runs / cfg.name})", rows, con.width))


@app.command("checks")
@handled
def checks_cmd(as_json: bool = JsonOpt):
    """The check catalog: id, stage, what it catches, the statuses it can return, source, thresholds."""
    from recipe.checks import CATALOG
    from recipe.render import catalog_table

    if as_json:
        typer.echo(json.dumps([{"id": s.id, "stage": s.stage, "catches": s.catches, "refs": list(s.refs),
                                "statuses": list(s.statuses), "thresholds": s.thresholds} for s in CATALOG.values()]))
        return
    con = console()
    con.print(catalog_table(CATALOG.values(), con.width))


@app.command()
@handled
def schema():
    """JSON Schema of the config (point your editor's YAML plugin at it)."""
    from recipe.config import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
@handled
def init(directory: Path = typer.Argument(Path("."), help="Where to write the starter config."),
         name: Optional[str] = typer.Option(None, "--name", help="Experiment name (default: the folder's name)."),
         force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
         data: Optional[Path] = typer.Option(None, "--data", help="A .csv/.parquet table: propose the config from it."),
         target: Optional[str] = typer.Option(None, "--target", help="With --data: the target column.")):
    """Write a commented starter config (or one proposed from --data) and a Makefile snippet."""
    import re

    from rich.markup import escape

    from recipe.config import MAKEFILE_SNIPPET, STARTER
    from recipe.workspace import atomic_write_bytes

    if target is not None and data is None:
        raise RecipeError("--target goes with --data FILE (the table whose column it names)")
    name = name or re.sub(r"[^A-Za-z0-9._-]", "-", directory.resolve().name).strip("-.") or "experiment"
    config_path, make_path = directory / f"{name}.yaml", directory / "recipe.mk"
    for p in (config_path, make_path):
        if p.exists() and not force:
            raise RecipeError(f"{p} already exists: pass --force to overwrite it")
    con = console()
    if data is not None:
        from recipe.data import propose as P

        proposal = P.propose(data, target)        # reads the file before anything is written
        text = P.render(proposal, name, P.relative_to(directory, data))
        con.print(f"{data}: {proposal.rows} rows; target '{escape(proposal.target)}' ({proposal.task}), "
                  f"{len(proposal.features)} features, data.missing: {proposal.missing}", soft_wrap=True)
        for column, why in proposal.dropped.items():
            con.print(f"  dropped '{escape(column)}': {escape(why)}", soft_wrap=True)
        for note in proposal.notes:
            con.print(f"  note: {escape(note)}", soft_wrap=True)
    else:
        text = STARTER.format(name=name)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(config_path, text.encode())
    atomic_write_bytes(make_path, MAKEFILE_SNIPPET.format(name=name).encode())
    con.print(f"wrote {config_path} and {make_path}")
    con.print(f"next: recipe inspect {config_path}")


@app.command()
@handled
def predict(args: Optional[List[Path]] = typer.Argument(None, metavar="[CONFIG] [INPUT]",
                                                        help="Optional experiment YAML, then a .csv/.parquet/.npz of "
                                                             "new rows, or an image folder; for text, a .txt file, a "
                                                             "folder of them or a table with the text column."),
            out: Optional[Path] = typer.Option(None, "--out", help="Write predictions (CSV) here; default stdout."),
            overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt, device: str = DeviceOpt,
            as_json: bool = JsonOpt,
            strict: bool = typer.Option(False, "--strict", help="Exit 2, writing nothing, if any row holds an input "
                                                                "train never saw (or the inputs cannot be checked)."),
            prompt: Optional[str] = typer.Option(None, "--prompt", help="Language model: continue this text."),
            tokens: int = typer.Option(200, "--tokens", help="--prompt: tokens to generate."),
            temperature: float = typer.Option(0.8, "--temperature", help="--prompt: sampling temperature (> 0)."),
            top_k: int = typer.Option(40, "--top-k", help="--prompt: sample among the k most likely tokens."),
            seed: Optional[int] = typer.Option(None, "--seed", help="--prompt: seed (default: the config's).")):
    """Apply the final model (ensemble, best single or student) to new rows, with the recorded preprocessing.
    Rows with category levels, far values or missing values train never had are flagged (recipe_warnings).
    Text: score documents (loss, perplexity) or label them; --prompt samples from a language model."""
    from rich.markup import escape

    from recipe import predict as P
    from recipe import predict_text as PT
    from recipe import tasks
    from recipe.workspace import Workspace, atomic_write_bytes

    args = list(args or [])
    if prompt is not None:     # [CONFIG] --prompt TEXT: the prompt and a sampled continuation on stdout
        PT.check_sampling(tokens, temperature, top_k)      # a bad option is exit 2 before anything loads
        if len(args) > 1:
            raise RecipeError(f"predict --prompt takes only [CONFIG], got {len(args)} paths")
        cfg = _load_config(args[0] if args else None, overrides, runs)
        _check_device(device)
        ws = Workspace(runs, cfg.name)
        result, line = PT.sample_final(cfg, ws, P.load_final(ws, cfg.model_dump(mode="json")), prompt, tokens,
                                       temperature, top_k, cfg.seed if seed is None else seed, device)
        typer.echo(json.dumps(result) if as_json else result["prompt"] + result["continuation"])
        console().print(escape(line), soft_wrap=True)
        return
    if not args:
        raise RecipeError("predict takes [CONFIG] INPUT (or --prompt TEXT for a language model)")
    if len(args) > 2:
        raise RecipeError(f"predict takes [CONFIG] INPUT, got {len(args)} paths")
    config, data = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    if data.suffix.lower() in (".yaml", ".yml"):
        raise RecipeError(f"{data} is a config: pass the rows to predict after it (recipe predict CONFIG INPUT.csv)")
    cfg = _load_config(config, overrides, runs)
    _check_device(device)
    ws = Workspace(runs, cfg.name)
    art = P.load_final(ws, cfg.model_dump(mode="json"))
    if PT.is_text(art):       # documents: per-document loss (language model) or labels, as CSV
        text, summary, line = PT.predict_documents(cfg, ws, art, data, device, out, strict)
        if out is not None:
            atomic_write_bytes(out, text.encode())
        elif not as_json:
            typer.echo(text, nl=False)
        console().print(escape(line), soft_wrap=True)
        if as_json:
            typer.echo(json.dumps(summary, default=str))
        return
    names = None
    if data.is_dir():      # an image folder: rows are its images, named by file in the output
        from recipe.data.seen import Flags

        x, y, names = P.read_images(data, art)
        flags = Flags.unchecked(len(x), "images are not checked against train")
    else:
        x, y, flags = P.read_rows(data, art)
    if strict:
        flags.refuse_if_any(data)      # before the model runs: nothing is written
    probs = P.apply(cfg, art, ws.stage_dir("ensemble"), x, device)
    text = P.to_csv(probs, art, names, flags.per_row if flags.checked else None)
    con = console()
    predicted = P.labels(probs, art)
    summary: dict[str, Any] = {"rows": len(x), "final": art.get("final", "ensemble"), "out": str(out) if out else None,
                               "input_warnings": flags.to_json()}
    if y is not None and tasks.get(art["task"]).has_classes:     # labels to compare with the target column
        summary["accuracy"] = sum(str(p) == str(t) for p, t in zip(predicted, y)) / len(y) if len(y) else None
    if out is not None:
        atomic_write_bytes(out, text.encode())
    elif not as_json:
        typer.echo(text, nl=False)
    extra = f"; accuracy against its '{art.get('target_column')}' column {summary['accuracy']:.4f}" \
        if summary.get("accuracy") is not None else ""
    con.print(f"predicted {len(x)} rows with the {summary['final'].replace('_', ' ')} of {cfg.name}"
              + (f" -> {out}" if out else "") + extra, soft_wrap=True)
    con.print(escape(flags.summary()), style="yellow" if flags.counts or not flags.checked else None, soft_wrap=True)
    if as_json:
        row_warnings = {"row_warnings": flags.per_row} if flags.checked else {}
        typer.echo(json.dumps({**summary, "predictions": predicted, **row_warnings}, default=str))


@app.command()
@handled
def report(config: Optional[Path] = ConfigArg, overrides: Optional[List[str]] = SetOpt, runs: Path = RunsOpt,
           out: Optional[Path] = typer.Option(None, "--out", help="Where to write it (default runs/<name>/report.html)."),
           as_json: bool = JsonOpt):
    """One self-contained HTML page: every stage's status, checks, evidence, pictures and the test result."""
    from recipe.report import write_report

    cfg = _load_config(config, overrides, runs)
    path, info = write_report(cfg, runs, out)
    console().print(f"wrote {path} ({info['bytes'] / 1e6:.2f} MB, {info['images']} pictures, "
                    f"{info['seconds']:.2f}s)", soft_wrap=True)
    if as_json:
        typer.echo(json.dumps({"report": str(path), **info}))


def main() -> None:
    """Console entry point. Interrupts that land outside a command (while parsing arguments, importing)
    still end with exit 130, and SIGTERM is treated like Ctrl-C from the first moment."""
    interrupts.own()
    interrupts.arm()
    threads.configure_env()    # before torch is imported: waiting OpenMP threads sleep instead of spinning
    try:
        app()
    except KeyboardInterrupt:
        interrupts.hold()
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        interrupts.hold()   # the command is over: a Ctrl-C during shutdown must not replace its exit code
        raise


if __name__ == "__main__":
    main()
