"""`augment`: the command line. `augment run [CONFIG]` runs the augment-dataset flow locally."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import traceback
from pathlib import Path

from flows import settings

from augment.config_file import DEFAULT_CONFIG, default_config_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="augment",
        description="Expand a scarce labeled image dataset (classical augmentation, SMOTE, class-conditional "
        "DCGANs) and measure with a downstream classifier whether it helped.",
    )
    from augment.version import __version__

    parser.add_argument("--version", action="version", version=f"augment {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the augment-dataset flow once, locally (no Prefect server needed)",
        description="Run every stage (ingest, classical, judge, gan, smote, synthesize, benchmark, expand, report) "
        "as the Prefect flow 'augment-dataset'. Re-running the same config resumes: finished stages whose "
        "inputs and config are unchanged are skipped, an interrupted GAN resumes from its checkpoint.",
    )
    run.add_argument("config", nargs="?", default=None,
                     help=f"YAML config (default: {DEFAULT_CONFIG}, scikit-learn's digits made scarce)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override one config key, e.g. --set gan.steps=500 (repeatable; values are YAML)")
    run.add_argument("--run-dir", default=None, metavar="DIR",
                     help="run directory (default: <run_root>/<config name>, so a re-run resumes)")
    run.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final summary")
    run.add_argument("--plan", action="store_true",
                     help="print which stages would run or be reused, the data, the device and an estimated time "
                     "per stage (from a short timed probe here), then exit without running anything")
    run.add_argument("--max-minutes", type=float, default=None, metavar="M",
                     help="warn, naming the keys that would bring it down, when the estimate exceeds M minutes "
                     "(default: 30 on a CPU)")
    run.add_argument("--force", action="append", default=[], metavar="STAGE",
                     help="run STAGE and every stage after it that depends on it again (repeatable)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="debug logs, and the full trace of any error (also AUGMENT_DEBUG=1)")
    schedule = sub.add_parser(
        "schedule", help="serve the flow as a Prefect deployment that runs on a cron schedule",
        description="Serve the augment-dataset flow as the Prefect deployment 'augment-dataset/NAME' with a cron "
        "schedule, and run its flow runs in this process until stopped (Ctrl-C pauses the schedule). Every run uses "
        "the same run directory: an unchanged dataset and config finish at once (every stage cached); new images "
        "re-run what depends on them; `augment runs` shows each finished result. Needs a Prefect API: set "
        "PREFECT_API_URL to a server started with `prefect server start` (see docs/scheduling.md).")
    schedule.add_argument("config", help="YAML config")
    schedule.add_argument("--cron", required=True, metavar="EXPR",
                          help='cron expression, e.g. "0 2 * * *" (every night at 02:00)')
    schedule.add_argument("--timezone", default="UTC", metavar="TZ",
                          help="IANA time zone the cron expression is read in (default UTC), e.g. Europe/Berlin")
    schedule.add_argument("--name", default=None,
                          help="deployment name (default: the config file's name)")
    schedule.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                          help="override one config key for every scheduled run (repeatable)")
    schedule.add_argument("--run-dir", default=None, metavar="DIR",
                          help="run directory of every scheduled run (default: <run_root>/<config name>)")
    report = sub.add_parser(
        "report", help="re-render the report of a finished run (no recomputation)",
        description="Write report.md, the self-contained report.html and the figures again from a finished run "
        "directory, with the config frozen in it. Nothing is trained or sampled.")
    report.add_argument("run_dir", metavar="RUN_DIR")
    init = sub.add_parser(
        "init", help="write a starting config for your image folder",
        description="Look at FOLDER (one sub-folder per class) and write a commented starting config for it: "
        "classes and counts, colour or grey, image sizes. Then: augment run CONFIG.")
    init.add_argument("folder", metavar="FOLDER")
    init.add_argument("--out", default=None, metavar="FILE",
                      help="where to write (default: <folder name>.yaml in the current folder)")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    runs = sub.add_parser(
        "runs", help="list finished runs with their recommended arm and gain",
        description="One line per finished run under DIR (searched recursively): when it finished, the dataset, "
        "the recommended arm and its test gain over real images alone. Shows a scheduled job's trend.")
    runs.add_argument("root", nargs="?", default="runs", metavar="DIR", help="where to look (default: runs)")
    return parser


def _init(args: argparse.Namespace) -> None:
    """`augment init FOLDER`: survey the folder, write a starting config, say what was found."""
    from augment.atomic import write_text
    from augment.core.data.survey import starting_config, survey_folder
    from augment.errors import UserError

    survey = survey_folder(Path(args.folder))
    out = Path(args.out or f"{Path(survey['path']).name}.yaml")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; choose another --out or add --force to overwrite it")
    write_text(out, starting_config(survey))
    counts = survey["classes"]
    print(f"{len(counts)} classes ({min(counts.values())} to {max(counts.values())} images each), "
          f"{'colour' if survey['channels'] == 3 else 'greyscale'}, {len(survey['sizes'])} image size(s).\n"
          f"Wrote {out}. Next: augment run {out}")


def _plan_text(cfg, run_dir: Path, max_minutes: float | None, record: bool = False) -> str:
    """The plan as text; record=True also writes its estimates to the run directory, where each
    stage's record (stages/<stage>.json) and the report put them beside the actual times."""
    from augment.plan import default_budget_minutes, make_plan

    plan = make_plan(cfg, run_dir)
    if record:
        plan.record(cfg)
    return plan.text(max_minutes if max_minutes is not None else default_budget_minutes(plan.device))


def _plan(cfg, run_dir: Path, args: argparse.Namespace) -> int:
    """`augment run --plan`: the plan, and nothing run or written (the run directory is not created)."""
    if args.force:
        print(f"(--force {' '.join(args.force)} is applied when the run starts, not by --plan)")
    print(_plan_text(cfg, run_dir, args.max_minutes))
    return 0


def _offline(args: argparse.Namespace) -> int:
    """`augment report`, `augment runs` and `augment init`: no Prefect needed."""
    from augment.errors import UserError
    from augment.stages.report import list_runs, rerender

    try:
        if args.command == "init":
            _init(args)
            return 0
        if args.command == "report":
            verdict = rerender(Path(args.run_dir))
            print(f"{verdict}\nReport: {Path(args.run_dir) / 'report' / 'report.html'}")
            return 0
        if not Path(args.root).is_dir():
            raise UserError(f"{args.root}: no such folder")
        table = list_runs(Path(args.root))
    except UserError as err:
        print(f"augment: error: {err}", file=sys.stderr)
        return err.exit_status
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        print(table.to_string(index=False) if len(table) else f"no finished runs under {args.root}")
    if len(table) and table["test set"].nunique() > 1:
        print(f"\nThese runs were scored on {table['test set'].nunique()} different test sets (column test set): "
              "compare figures only between rows that share one.")
    return 0


def _cron(expr: str, timezone: str):
    """A Prefect cron schedule, or a one-line error naming --cron or --timezone."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron
    from pydantic import ValidationError

    from augment.errors import UserError

    try:
        CronSchedule(cron=expr, timezone=timezone)
    except ValidationError as err:
        bad = err.errors()[0]["loc"][0]
        option, value = ("--timezone", timezone) if bad == "timezone" else ("--cron", expr)
        why = "not an IANA time zone (e.g. Europe/Berlin)" if bad == "timezone" else \
            "not a cron expression (five fields: minute hour day-of-month month day-of-week)"
        raise UserError(f"{option} {value!r}: {why}") from None
    return Cron(expr, timezone=timezone)


def _schedule(args: argparse.Namespace, cfg) -> int:
    """`augment schedule`: serve the flow as a deployment with a cron schedule (blocks)."""
    from prefect.settings import PREFECT_API_URL

    from augment.errors import UserError
    from augment.graph import check_run_dir, default_run_dir

    if not PREFECT_API_URL.value():  # Prefect's temporary server has no scheduler
        raise UserError("augment schedule needs a Prefect server, which runs the scheduler: start one with "
                        "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    from flows.augment_flow import augment_dataset

    config = Path(args.config).resolve()
    run_dir = check_run_dir(cfg, Path(args.run_dir) if args.run_dir else default_run_dir(cfg, config)).resolve()
    augment_dataset.serve(
        name=args.name or config.stem,
        schedules=[_cron(args.cron, args.timezone)],
        parameters={"config_path": str(config), "overrides": args.overrides, "run_dir": str(run_dir)},
        description=f"augment {config.name} on a schedule ({args.cron}, {args.timezone}); results in {run_dir}",
        limit=1,  # runs of one job share a run directory: one at a time, the next waits
    )
    return 0


def _typed_config(config, overrides) -> None:
    """The config file and overrides against the typed model, and the input's existence (no other
    stage's checks, no torch import): the commonest mistakes, reported before Prefect's temporary
    server is started. Its warnings are left to _load_config_once."""
    import warnings

    from augment.config_file import load_config
    from augment.stages import ingest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ingest.check(load_config(config, overrides))


def _load_config_once(load_config, config, overrides):
    """load_config, each ConfigWarning (a renamed key, a key that does nothing) one line on stderr, once:
    the flow loads the config again and says nothing more."""
    import warnings

    from augment.config import ConfigWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        cfg = load_config(config, overrides)
    for w in caught:
        if issubclass(w.category, ConfigWarning):
            print(f"augment: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    warnings.filterwarnings("ignore", category=ConfigWarning)
    return cfg


def _imported(own_process: bool) -> None:
    """The start-up's imports are done (torch, Prefect, pandas: about 580,000 objects that live as long as
    the process). With own_process, entry() turned the cyclic garbage collector off for them: they are frozen
    (gc.freeze), so no later collection walks them, and it is turned back on for the run."""
    if own_process:
        gc.freeze()
        gc.enable()


def entry() -> None:
    """The `augment` command (and python -m flows.cli): main() in a process of its own. The collector is off
    during the start-up's imports (each full collection walked every object imported so far: 1.7 s of a
    start-up on 2 cores) and its objects are frozen at the end (the interpreter's last collection walked
    them all again: about 1.7 s at exit). main() called from Python leaves the caller's collector alone."""
    gc.disable()
    try:
        status = main(own_process=True)
    finally:
        gc.freeze()
    sys.exit(status)


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    args = build_parser().parse_args(argv)
    settings.apply(quiet=getattr(args, "quiet", False))  # before anything imports Prefect or albumentations
    if args.command in ("report", "runs", "init"):
        _imported(own_process)  # nothing heavy imported yet: the collector runs for the whole command
        return _offline(args)
    from augment.errors import UserError
    from flows.local_server import EarlyServer, until_the_flow

    debug = os.environ.get("AUGMENT_DEBUG", "") not in ("", "0") or getattr(args, "verbose", False)
    config = args.config or str(default_config_path())
    early = EarlyServer()
    try:  # every mistake the config and the run directory can show, before the flow starts
        if args.command == "run" and not args.plan:
            _typed_config(config, args.overrides)  # the commonest mistakes, in about a second
            early = EarlyServer.start()  # Prefect's temporary server boots while the imports and checks run
        with until_the_flow(early):
            from augment.graph import check_run_dir, default_run_dir, load_config

            cfg = _load_config_once(load_config, config, args.overrides)
            if args.command == "schedule":
                _cron(args.cron, args.timezone)
                _imported(own_process)
                return _schedule(args, cfg)
            run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg, config)
            if args.plan:
                _imported(own_process)
                return _plan(cfg, run_dir, args)
            run_dir = check_run_dir(cfg, run_dir)
            for stage in args.force:
                from augment.plan import force

                print(f"--force {stage}: will run {', '.join(force(cfg, run_dir, stage))}")
            # the flow's imports, while the server still boots; torch's optimizers import torch._dynamo at
            # their first use (the judge's: about 1.5 s on 2 cores): imported here too
            import torch._dynamo  # noqa: F401

            from augment.errors import stop_requested
            from augment.runtime import graceful_stop
            from flows.augment_flow import augment_dataset

            _imported(own_process)
            early.ready()  # before the plan's probe: its timings are this machine's alone
            if not args.quiet:
                print(_plan_text(cfg, run_dir, args.max_minutes, record=True), flush=True)
            else:  # no plan this run: an earlier run's estimates are not this one's
                from augment import rundir

                (run_dir / rundir.PLAN).unlink(missing_ok=True)
    except UserError as err:
        if debug:
            traceback.print_exc()
        print(f"augment: error: {err}", file=sys.stderr)
        return err.exit_status
    level = logging.DEBUG if debug else logging.WARNING if args.quiet else logging.INFO
    logging.getLogger("augment").setLevel(level)
    with early.for_the_flow():  # the flow's API: the server started above, if one was
        try:
            with graceful_stop():  # also during Prefect's start-up; the flow installs it again inside
                state = augment_dataset(config, args.overrides, str(run_dir), return_state=True)
        except KeyboardInterrupt:  # Ctrl-C before the flow started (Prefect's start-up)
            print("augment: stopped by SIGINT before any stage ran", file=sys.stderr)
            return 130
        if stop_requested() is not None:  # SIGTERM/SIGINT: stopped at a step boundary, resumable
            print(f"augment: {state.message}", file=sys.stderr)
            return 128 + stop_requested()
        if state.is_failed():
            from augment.errors import EXIT_STATUS

            print(f"augment: error: {state.message}", file=sys.stderr)
            return EXIT_STATUS.get(state.name, 1)  # 2 a mistake, 3 the machine refused, wherever caught; 1 a bug
        result = state.result()
        report = Path(result["run_dir"]) / "report"
        print(f"\n{result['verdict']}\nReport to send: {report / 'report.html'} (one self-contained file; "
              f"Markdown beside it: {report / 'report.md'})")
        return 0


if __name__ == "__main__":
    entry()
