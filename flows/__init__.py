"""Prefect flows and the command line: thin wrappers over the `augment` stages."""

import os

# Before Prefect is imported: no analytics, and our stage logs shown with Prefect's.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "augment")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # library calls outside a flow
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# The temporary server Prefect starts for a local run gets 20 s by default; a loaded 2-core
# machine can need more.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
