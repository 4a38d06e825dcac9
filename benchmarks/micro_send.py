"""Microbenchmark: cost of handing one value patch to Flet's `FletApp.send_message`.

Compares a plain `Message(MessageAction.PATCH_CONTROL, body)` (what Flet itself builds)
with `counter_service.flet.internals._ValuePatch` (int action, constant repr), in the same
process, alternating, best of 5 repeats each. The queue is a no-op, so this measures
only the encoding and bookkeeping that precede the websocket send.

    python -m benchmarks.micro_send
"""

from __future__ import annotations

import timeit
import types
from collections.abc import Callable

from flet.messaging.protocol import Message, MessageAction
from flet_web.fastapi.flet_app import FletApp

from counter_service.flet.internals import _ValuePatch, value_patch

N = 200_000


class _NoQueue:
    def put_nowait(self, _item: bytes) -> None:
        return None


def variants() -> dict[str, Callable[[], None]]:
    connection = types.SimpleNamespace(_FletApp__send_queue=_NoQueue())
    send = FletApp.send_message
    body = {"id": 1234, "patch": value_patch("4567")}
    return {
        "Message(MessageAction, body)": lambda: send(
            connection, Message(MessageAction.PATCH_CONTROL, body)
        ),
        "_ValuePatch": lambda: send(connection, _ValuePatch(1234, "4567")),
    }


def main() -> None:
    best: dict[str, float] = {}
    for _ in range(2):  # alternate, so drift hits both alike
        for name, call in variants().items():
            seconds = min(timeit.repeat(call, number=N, repeat=5)) / N
            best[name] = min(best.get(name, seconds), seconds)
    for name, seconds in best.items():
        print(f"{name:30s} {seconds * 1e6:6.2f} us per send_message")


if __name__ == "__main__":
    main()
