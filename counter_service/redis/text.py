"""What Redis or redis-py said, as one short line for a log or a message."""

from __future__ import annotations

BRIEF_LIMIT = 200


def brief(error: BaseException, limit: int = BRIEF_LIMIT) -> str:
    """`error` as one short line: redis-py's MasterNotFoundError alone carries the repr of
    every sentinel's client, thousands of characters."""
    text = " ".join(str(error).split()).split(" : <redis.", 1)[0] or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
