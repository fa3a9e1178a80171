"""The one exception type that reaches the user: printed as `error: …`, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix. The message is one line and says what to do."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def one_line(exc: BaseException, prefix: str = "", limit: int = 300, typed: bool = True) -> str:
    """`exc` as one line for a status field or an `error:` message: its first non-empty line,
    after the exception's type (`typed`) unless it is a UserError, whose message says it all;
    the type alone when there is no message."""
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first or (typed and not isinstance(exc, UserError)):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return (f"{prefix}: {first}" if prefix else first)[:limit]
