"""Flet's own `page.pubsub` across two real worker processes on one real Redis."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import Fleet
from counter_service.devtools.headless import HeadlessSession
from tests.support import eventually, worker_metrics

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
APP = "tests.e2e.apps.pubsub_app:app"
MAX_MESSAGE_BYTES = 4096
MESSAGES_CHANNEL = "counter-service:messages"


class Peer:
    """One session of the pubsub test app."""

    def __init__(self, session: HeadlessSession, worker: int) -> None:
        self.session = session
        self.worker = worker
        self.commands = 0

    async def run(self, op: str, **args: Any) -> None:
        """Run a command and return once the session has run it."""
        self.commands += 1
        await self.session.trigger("cmd", "click", json.dumps({"op": op, **args}))
        expected = str(self.commands)
        await self.session.wait_for(lambda s: s.value("done") == expected, WAIT_S)

    def log(self) -> list[Any]:
        return list(json.loads(str(self.session.value("log") or "[]")))

    async def wait_log(self, check: Any, what: str) -> None:
        try:
            await self.session.wait_for(lambda _s: check(self.log()), WAIT_S)
        except TimeoutError as exc:
            raise AssertionError(f"worker {self.worker}: {what}; log {self.log()}") from exc

    async def receives(self, entry: Any) -> None:
        await self.wait_log(lambda log: entry in log, f"never received {entry}")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    env = {"COUNTER_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}
    with Fleet(2, log_dir=tmp_path, server_env=env, app=APP) as running:
        yield running


@pytest.fixture
async def peers(fleet: Fleet) -> AsyncIterator[list[Peer]]:
    """Four sessions: 0 and 2 on worker 0, 1 and 3 on worker 1."""
    opened = []
    for i in range(4):
        session = await HeadlessSession.connect(fleet.servers[i % 2].url)
        await session.wait_for(lambda s: s.value("log") is not None, WAIT_S)
        opened.append(Peer(session, i % 2))
    yield opened
    await asyncio.gather(*(p.session.close() for p in opened))


async def everyone_receives(peers: list[Peer], entry: Any) -> None:
    await asyncio.gather(*(p.receives(entry) for p in peers))


async def test_send_all_reaches_every_session_on_every_worker(peers: list[Peer]) -> None:
    await peers[0].run("send_all", message={"n": 1, "text": "héllo"})
    await everyone_receives(peers, ["*", {"n": 1, "text": "héllo"}])


async def test_send_others_leaves_out_only_the_sender(peers: list[Peer]) -> None:
    await peers[0].run("send_others", message="not for 0")
    await everyone_receives(peers[1:], ["*", "not for 0"])
    await peers[3].run("send_all", message="marker")  # sent after, delivered after
    await peers[0].receives(["*", "marker"])
    assert ["*", "not for 0"] not in peers[0].log()


async def test_topics_reach_only_their_subscribers(peers: list[Peer]) -> None:
    for peer in (peers[1], peers[2]):
        await peer.run("subscribe_topic", topic="news")
    for peer in (peers[0], peers[3]):
        await peer.run("subscribe_topic", topic="sports")
    await peers[0].run("send_all_on_topic", topic="news", message=1)
    await peers[3].run("send_all_on_topic", topic="sports", message=2)
    await everyone_receives([peers[1], peers[2]], ["news", 1])
    await everyone_receives([peers[0], peers[3]], ["sports", 2])
    assert all(["sports", 2] not in p.log() for p in (peers[1], peers[2]))
    assert all(["news", 1] not in p.log() for p in (peers[0], peers[3]))


async def test_send_others_on_topic_leaves_out_the_sender_wherever_it_lives(
    peers: list[Peer],
) -> None:
    for peer in peers:
        await peer.run("subscribe_topic", topic="t")
    await peers[1].run("send_others_on_topic", topic="t", message="x")
    await everyone_receives([peers[0], peers[2], peers[3]], ["t", "x"])
    await peers[2].run("send_all_on_topic", topic="t", message="marker")
    await peers[1].receives(["t", "marker"])
    assert ["t", "x"] not in peers[1].log()


async def test_unsubscribing_stops_delivery(peers: list[Peer]) -> None:
    for peer in peers:
        await peer.run("subscribe_topic", topic="t")
    await peers[0].run("unsubscribe")
    await peers[1].run("unsubscribe_topic", topic="t")
    await peers[2].run("unsubscribe_all")
    await peers[3].run("send_all", message="global")
    await peers[3].run("send_all_on_topic", topic="t", message="topical")
    await peers[3].receives(["t", "topical"])
    await peers[1].receives(["*", "global"])
    await peers[0].receives(["t", "topical"])
    await peers[3].run("send_all", message="marker")
    await peers[1].receives(["*", "marker"])
    assert ["*", "global"] not in peers[0].log()
    assert ["t", "topical"] not in peers[1].log()
    assert peers[2].log() == []


async def test_every_session_sees_one_topic_in_the_same_order(peers: list[Peer]) -> None:
    for peer in peers:
        await peer.run("subscribe_topic", topic="order")
    await asyncio.gather(
        peers[0].run("send_many", topic="order", messages=[f"a{i}" for i in range(50)]),
        peers[1].run("send_many", topic="order", messages=[f"b{i}" for i in range(50)]),
    )

    def ordered(peer: Peer) -> list[str]:
        return [m for t, m in (e for e in peer.log() if len(e) == 2) if t == "order"]

    await asyncio.gather(
        *(p.wait_log(lambda _log, p=p: len(ordered(p)) == 100, "100 messages") for p in peers)
    )
    sequences = [ordered(p) for p in peers]
    assert all(seq == sequences[0] for seq in sequences), sequences
    for sender in "ab":
        mine = [m for m in sequences[0] if m.startswith(sender)]
        assert mine == [f"{sender}{i}" for i in range(50)]


async def plain_log(peer: Peer, count: int) -> list[Any]:
    """What the session's plain handler got, once it got `count` messages."""
    deadline = time.monotonic() + WAIT_S
    while True:
        await peer.run("dump_plain")
        got = json.loads(str(peer.session.value("plain")))
        if len(got) >= count or time.monotonic() > deadline:
            return list(got)
        await asyncio.sleep(0.05)  # the messages are still coming: ask again


async def test_plain_handlers_see_one_topic_in_the_same_order_everywhere(
    peers: list[Peer],
) -> None:
    for peer in peers:
        await peer.run("subscribe_topic_plain", topic="plain")
    await asyncio.gather(
        peers[0].run("send_many", topic="plain", messages=[f"a{i}" for i in range(100)]),
        peers[1].run("send_many", topic="plain", messages=[f"b{i}" for i in range(100)]),
    )
    logs = await asyncio.gather(*(plain_log(p, 200) for p in peers))
    sequences = [[m for _topic, m in log] for log in logs]
    assert all(len(seq) == 200 for seq in sequences), [len(seq) for seq in sequences]
    assert all(seq == sequences[0] for seq in sequences), sequences
    for sender in "ab":
        mine = [m for m in sequences[0] if m.startswith(sender)]
        assert mine == [f"{sender}{i}" for i in range(100)]


async def test_bad_messages_are_refused_at_the_sender(peers: list[Peer]) -> None:
    await peers[0].run("send_set")
    await peers[0].session.wait_for(lambda s: "TypeError" in str(s.value("error")), WAIT_S)
    assert "JSON" in str(peers[0].session.value("error"))
    await peers[1].run("send_big", size=MAX_MESSAGE_BYTES)
    await peers[1].session.wait_for(lambda s: "MessageTooLarge" in str(s.value("error")), WAIT_S)
    await peers[1].run("send_big", size=100)
    await everyone_receives(peers, ["*", "x" * 100])
    assert all(len(p.log()) == 1 for p in peers)  # nothing of the refused ones arrived


def app_metrics(fleet: Fleet, worker: int) -> dict[str, Any]:
    return worker_metrics(fleet.servers[worker].url)


async def test_forged_giant_and_undecodable_envelopes_are_dropped_by_every_worker(
    fleet: Fleet, peers: list[Peer]
) -> None:
    envelope = '{"w":"forger","s":null,"t":null,"m":%s}'
    forgeries = [
        envelope % json.dumps("x" * (6 << 20)),  # 6 MB: only senders checked the size
        envelope % json.dumps("x" * MAX_MESSAGE_BYTES),  # over these workers' own limit
        envelope % ("[" * 100_000 + "]" * 100_000),  # deep enough to exhaust the decoder
        envelope % "[NaN]",  # no sender can send it
        b"\xff\xfe not even text",
    ]
    redis = Redis.from_url(fleet.redis.url)
    try:
        for forged in forgeries:
            assert await redis.publish(MESSAGES_CHANNEL, forged) == 2
    finally:
        await redis.aclose()
    await peers[0].run("send_all", message="marker")  # published after, delivered after
    await everyone_receives(peers, ["*", "marker"])
    assert all(p.log() == [["*", "marker"]] for p in peers)
    for worker in (0, 1):
        assert app_metrics(fleet, worker)["messages"]["invalid"] == len(forgeries)
        assert "Traceback" not in fleet.servers[worker].log_tail(500)


async def test_sessions_hear_that_messages_may_have_been_missed(
    fleet: Fleet, peers: list[Peer]
) -> None:
    redis = Redis.from_url(fleet.redis.url)
    try:
        assert await redis.client_kill_filter(_type="pubsub") == 2
    finally:
        await redis.aclose()
    await everyone_receives(peers, ["missed"])
    await peers[0].run("send_all", message="after")
    await everyone_receives(peers, ["*", "after"])


async def test_a_send_while_redis_is_down_is_refused_and_the_page_hears_it_came_back(
    fleet: Fleet, peers: list[Peer]
) -> None:
    fleet.redis.stop()
    await eventually(lambda: not fleet.servers[0].ready(), WAIT_S, "worker 0 not ready")
    await peers[0].run("send_all", message="into the void")
    assert "StoreUnavailable" in str(peers[0].session.value("error"))
    fleet.redis.start()
    await eventually(lambda: all(s.ready() for s in fleet.servers), WAIT_S, "ready again")
    await everyone_receives(peers, ["missed"])
    await peers[0].run("send_all", message="back")
    await everyone_receives(peers, ["*", "back"])
    assert all(["*", "into the void"] not in p.log() for p in peers)
