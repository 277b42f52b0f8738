"""The one exception type for mistakes a user can make (bad config, bad data)."""


class UserError(Exception):
    """A mistake the user can fix; the CLI prints its message as one line, no traceback.

    The message must name the file, class or config key at fault.
    """
