"""The one exception type the command line turns into a one-line message."""


class UserError(Exception):
    """A problem with the user's input or environment, with the fix in its message.

    The command line prints ``error: <message>`` on one line and exits with
    status 2, without a traceback and without writing any output file.
    """
