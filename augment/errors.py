"""The exception types for what a user can mend: a mistake (bad config, bad data, an unusable run
directory) and a machine that refused (disk full, permission denied). Each has its exit status."""


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
