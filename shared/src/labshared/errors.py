"""Error types the tools catch at the CLI boundary and print as one red line.

Everything else keeps its traceback: these two mean "the user can fix this".
"""

from __future__ import annotations

from pathlib import Path


class LabError(Exception):
    """Base of the errors a CLI turns into one line and exit code 1."""


class ConfigError(LabError):
    """A bad option or combination of options; the message names the flag and the fix."""


class DataLayoutError(LabError):
    """A dataset on disk does not have the expected (official) layout.

    Args:
        path: the file or folder that is missing or malformed.
        problem: what is wrong ("missing", "field 'caption' absent in item 3", ...).
        expected: the expected layout, printed as an indented tree.
    """

    def __init__(self, path: str | Path, problem: str, expected: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        self.expected = expected
        msg = f"{self.path}: {problem}"
        if expected:
            msg += "\nexpected layout:\n" + "\n".join(
                "    " + line for line in expected.strip("\n").splitlines()
            )
        super().__init__(msg)
