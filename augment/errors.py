"""The exception types for what a user can mend: a mistake (bad config, bad data, an unusable run
directory) and a machine that refused (disk full, permission denied), each with its exit status; and
the stop request (a signal asked the run to stop: long loops call check_stop once per step; the
signal handlers that set it are augment.runtime's)."""

import signal
import threading


class UserError(Exception):
    """A mistake the user can fix; the CLI prints its message as one line, no traceback, and exits 2.

    The message must name the file, class or config key at fault.
    """

    exit_status = 2


class MachineError(UserError):
    """The machine refused a write (disk full, permission denied, read-only): one line naming the
    file, exit status 3; the same command resumes once it is mended."""

    exit_status = 3


EXIT_STATUS = {cls.__name__: cls.exit_status for cls in (UserError, MachineError)}  # by a Failed state's name


def kind(err: UserError) -> str:
    """The name of err's kind (a key of EXIT_STATUS), also for a subclass such as ingest's BadInput."""
    return MachineError.__name__ if isinstance(err, MachineError) else UserError.__name__


# --------------------------------------------------------------------------- the stop request

_STOP = threading.Event()
_SIGNAL: list[int] = []  # the signal that asked to stop


class Interrupted(UserError):
    """A run stopped on SIGTERM or SIGINT at a step boundary, its resumable state written."""


def request_stop(signum: int) -> None:
    _SIGNAL[:] = [signum]
    _STOP.set()


def stop_requested() -> int | None:
    """The signal number that asked the run to stop, or None."""
    return _SIGNAL[0] if _STOP.is_set() and _SIGNAL else None


def check_stop() -> None:
    """Raise Interrupted if a stop was requested: long loops call this once per step."""
    signum = stop_requested()
    if signum is not None:
        raise Interrupted(f"stopped by {signal.Signals(signum).name}; finished stages and the last GAN checkpoint "
                          "are kept: run the same command again to resume")


def reset_stop() -> None:
    _STOP.clear()
    _SIGNAL.clear()
