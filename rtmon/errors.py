"""The one exception type that reaches the user: printed as `error: …`, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix. The message is one line and says what to do."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
