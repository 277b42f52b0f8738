"""The environment Prefect and albumentations should see, applied before Prefect is imported."""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no analytics
    "PREFECT_LOGGING_EXTRA_LOGGERS": "augment",  # our stage logs shown with Prefect's
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # library calls outside a flow
    "NO_ALBUMENTATIONS_UPDATE": "1",  # no network check when albumentations is imported
    # The temporary server Prefect starts for a local run gets 20 s by default; a loaded
    # 2-core machine can need more.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


# -q: warnings and the final summary only, Prefect's own INFO lines and progress bars included.
QUIET = {"PREFECT_LOGGING_LEVEL": "WARNING", "TQDM_DISABLE": "1"}


def apply(quiet: bool = False) -> None:
    """Set each default the user has not set. Call before the first `import prefect`."""
    for key, value in {**DEFAULTS, **(QUIET if quiet else {})}.items():
        os.environ.setdefault(key, value)
