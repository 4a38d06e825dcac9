"""Small helpers shared by the tests."""

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait until `check()` is true; fail with `what` after `timeout` seconds.

    A correctness deadline, not a speed assertion: it is generous on purpose."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or check}")
        await asyncio.sleep(0.02)
