"""The one exception type users see.

Anything a user can cause (a missing path, an unknown name, a bad value) raises `ImgclsError` with a
one-line message that names the problem and the fix; the CLI prints it without a traceback.
"""


class ImgclsError(Exception):
    """A user-facing error: bad input, missing data, unknown name."""
