"""User-facing errors.

Every problem a user can fix (bad task name, garbled data, wrong model directory, unwritable output)
is raised as :class:`LadaBertError` with one sentence that names the problem and the fix. The CLI
prints it as a single line and exits with status 2, without a traceback.
"""

from __future__ import annotations


class LadaBertError(Exception):
    """An error the user can fix; its message says what is wrong and what to do."""

    exit_code = 2
