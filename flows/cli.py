"""`augment`: the command line. `augment run [CONFIG]` runs the augment-dataset flow locally."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import flows  # noqa: F401  (sets Prefect's environment before Prefect is imported)

DEFAULT_CONFIG = "configs/default.yaml"


def _default_config() -> str:
    """configs/default.yaml in the working directory, else the one shipped beside this package."""
    here = Path(DEFAULT_CONFIG)
    if here.is_file():
        return str(here)
    return str(Path(__file__).resolve().parents[1] / DEFAULT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="augment",
        description="Expand a scarce labeled image dataset (classical augmentation, SMOTE, class-conditional "
        "DCGANs) and measure with a downstream classifier whether it helped.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the augment-dataset flow once, locally (no Prefect server needed)",
        description="Run every stage (ingest, classical, gan, smote, synthesize, benchmark, expand, report) "
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
    report = sub.add_parser(
        "report", help="re-render the report of a finished run (no recomputation)",
        description="Write report.md, the self-contained report.html and the figures again from a finished run "
        "directory, with the config frozen in it. Nothing is trained or sampled.")
    report.add_argument("run_dir", metavar="RUN_DIR")
    runs = sub.add_parser(
        "runs", help="list finished runs with their recommended arm and gain",
        description="One line per finished run under DIR (searched recursively): when it finished, the dataset, "
        "the recommended arm and its test gain over real images alone. Shows a scheduled job's trend.")
    runs.add_argument("root", nargs="?", default="runs", metavar="DIR", help="where to look (default: runs)")
    return parser


def _offline(args: argparse.Namespace) -> int:
    """`augment report` and `augment runs`: read a run directory, no Prefect needed."""
    from augment.errors import UserError
    from augment.report import list_runs, rerender

    try:
        if args.command == "report":
            verdict = rerender(Path(args.run_dir))
            print(f"{verdict}\nReport: {Path(args.run_dir) / 'report' / 'report.html'}")
            return 0
        if not Path(args.root).is_dir():
            raise UserError(f"{args.root}: no such folder")
        table = list_runs(Path(args.root))
    except UserError as err:
        print(f"augment: error: {err}", file=sys.stderr)
        return 2
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        print(table.to_string(index=False) if len(table) else f"no finished runs under {args.root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("report", "runs"):
        return _offline(args)
    from augment.config import load_config
    from augment.errors import UserError

    config = args.config or _default_config()
    try:  # fail on a bad config before paying for Prefect's start-up
        load_config(config, args.overrides)
    except UserError as err:
        print(f"augment: error: {err}", file=sys.stderr)
        return 2
    logging.getLogger("augment").setLevel(logging.WARNING if args.quiet else logging.INFO)
    from flows.augment_flow import augment_dataset

    state = augment_dataset(config, args.overrides, args.run_dir, return_state=True)
    if state.is_failed():
        print(f"augment: error: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    print(f"\n{result['verdict']}\nReport: {Path(result['run_dir']) / 'report' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
