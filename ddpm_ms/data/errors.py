"""The one error every data problem raises: missing or unreadable data, with where and what to do."""
from __future__ import annotations


class DataError(RuntimeError):
    """The data is missing or unreadable; the message says where and what to do.

    A message that tells the user to point at another folder names the command's folder flag
    as FOLDER_FLAG: train.py's `--data` by default, and `for_flag` words it for a command whose
    flag is another (`--data-root`, `--root`)."""

    FOLDER_FLAG = "{folder_flag}"

    def __init__(self, message: str):
        self.template = message
        super().__init__(self.for_flag("--data"))

    def for_flag(self, flag: str) -> str:
        """The message with `flag` as the flag that names the data folder."""
        return self.template.replace(self.FOLDER_FLAG, flag)
