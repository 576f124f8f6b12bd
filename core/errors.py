"""How an error reads in one line: an operator's log line or a member's sentence never carries a traceback."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of what the exception says, or its type's name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
