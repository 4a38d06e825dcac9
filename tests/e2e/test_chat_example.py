"""examples/chat on two real worker processes, driven like two browsers each."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from counter_service.devtools.fleet import Fleet
from counter_service.devtools.headless import HeadlessSession

pytestmark = pytest.mark.e2e

WAIT_S = 30.0


def lines(session: HeadlessSession) -> list[str]:
    column = session.control("messages") or {}
    return [str(text.get("value")) for text in column.get("controls", [])]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(2, log_dir=tmp_path, app="examples.chat.app:app") as running:
        yield running


async def test_messages_order_and_count_agree_across_workers(fleet: Fleet) -> None:
    urls = [server.url for server in fleet.servers] * 2
    sessions = [await HeadlessSession.connect(url) for url in urls]
    try:
        for session in sessions:
            await session.wait_for(lambda s: s.value("sent") == "0", WAIT_S)

        async def chat(session: HeadlessSession, who: str) -> None:
            await session.type_text("name", who)
            for i in range(10):
                await session.type_text("text", f"{who} says {i}", submit=True)
                await session.wait_for(lambda s: s.value("text") == "", WAIT_S)

        await asyncio.gather(chat(sessions[0], "ann"), chat(sessions[1], "bob"))
        for session in sessions:
            await session.wait_for(lambda s: len(lines(s)) == 20, WAIT_S)
            await session.wait_for(lambda s: s.value("sent") == "20", WAIT_S)
        transcripts = [lines(s) for s in sessions]
        assert all(t == transcripts[0] for t in transcripts)  # one order everywhere
        for who in ("ann", "bob"):
            mine = [line for line in transcripts[0] if line.startswith(who)]
            assert mine == [f"{who}: {who} says {i}" for i in range(10)]
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
