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
        description="Run every stage (ingest, classical, smote, gan, synthesize, benchmark, expand, report) "
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
