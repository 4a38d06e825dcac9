"""The relay's sharded pub/sub on a real three-master cluster: every shard's messages
arrive, a busy shard is not held up by idle ones, and a broken shard connection or a
dropped subscription reaches the relay."""

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from counter_service.backoff import Backoff
from counter_service.devtools.fleet import HOST
from counter_service.devtools.topologies import ClusterSet, ToolMissing, probe
from counter_service.pubsub.subscriber import Subscriber
from counter_service.redis.connections import connections_for
from counter_service.redis.shards import ShardPubSub
from counter_service.settings import Settings
from tests.support import eventually

POLL_S = 0.05  # as the relay reads


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSet]:
    try:
        topology = ClusterSet(Path(tempfile.mkdtemp(prefix="shards-")), replicas_per_master=0)
        topology.start()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    try:
        yield topology
    finally:
        topology.stop()


def channels_on_shards(cluster: ClusterSet, per_shard: int = 1) -> list[list[str]]:
    """`per_shard` channels (in distinct slots) on each master, in `cluster.nodes` order."""
    found: dict[int, list[str]] = {node.port: [] for node in cluster.nodes}
    for i in range(10_000):
        channel = f"t:{{c{i}}}"
        on_shard = found[cluster.master_for_slot(key_slot(channel.encode())).port]
        if len(on_shard) < per_shard:
            on_shard.append(channel)
        if all(len(channels) == per_shard for channels in found.values()):
            return [found[node.port] for node in cluster.nodes]
    raise AssertionError("no channel for some shard")


def channel_per_shard(cluster: ClusterSet) -> list[str]:
    return [channels[0] for channels in channels_on_shards(cluster)]


@pytest.fixture
async def relay(cluster: ClusterSet) -> AsyncIterator[ShardPubSub]:
    connections = connections_for(Settings(redis_url=cluster.url), "test")
    pubsub = connections.new_pubsub()
    assert isinstance(pubsub, ShardPubSub)
    try:
        yield pubsub
    finally:
        await pubsub.aclose()
        await connections.aclose()


async def spublish(port: int, channel: str, messages: list[str]) -> None:
    async with Redis(host=HOST, port=port) as client, client.pipeline(False) as pipe:
        for message in messages:
            pipe.execute_command("SPUBLISH", channel, message)
        assert await pipe.execute() == [1] * len(messages)  # one subscriber each


class Inbox:
    """Reads the relay's messages as the Subscriber does, in the background."""

    def __init__(self, pubsub: ShardPubSub) -> None:
        self.messages: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._read(pubsub))

    async def _read(self, pubsub: ShardPubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=POLL_S)
                if message is not None:
                    self.messages.append(message)
        except Exception as exc:
            self.error = exc

    def of(self, kind: str, channel: str) -> list[bytes]:
        return [
            m["data"]
            for m in self.messages
            if m["type"] == kind and m["channel"] == channel.encode()
        ]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_every_shard_delivers_and_a_busy_one_is_not_held_up_by_idle_ones(
    cluster: ClusterSet, relay: ShardPubSub
) -> None:
    channels = channel_per_shard(cluster)
    await relay.subscribe(channels)
    inbox = Inbox(relay)
    try:
        await eventually(lambda: all(inbox.of("subscribe", c) for c in channels), what="confirmed")
        burst = [str(i) for i in range(500)]
        # redis-py's ClusterPubSub took one poll interval per idle shard per message here:
        # 500 x 2 x 50 ms = 50 s; the deadline below is five times shorter.
        await spublish(cluster.nodes[0].port, channels[0], burst)
        for node, channel in zip(cluster.nodes[1:], channels[1:], strict=True):
            await spublish(node.port, channel, [channel])
        await eventually(lambda: len(inbox.of("message", channels[0])) == 500, timeout=10.0)
        assert inbox.of("message", channels[0]) == [m.encode() for m in burst]  # in order
        for channel in channels[1:]:
            await eventually(lambda c=channel: inbox.of("message", c) == [c.encode()])
        assert inbox.error is None
    finally:
        await inbox.stop()


async def test_an_unsubscribed_channel_is_confirmed_and_silent(
    cluster: ClusterSet, relay: ShardPubSub
) -> None:
    channels = channel_per_shard(cluster)
    await relay.subscribe(channels)
    inbox = Inbox(relay)
    try:
        await eventually(lambda: all(inbox.of("subscribe", c) for c in channels))
        await relay.unsubscribe([channels[1]])
        await eventually(lambda: bool(inbox.of("unsubscribe", channels[1])))
        async with Redis(host=HOST, port=cluster.nodes[1].port) as client:
            assert await client.execute_command("SPUBLISH", channels[1], "x") == 0
        await spublish(cluster.nodes[2].port, channels[2], ["still here"])
        await eventually(lambda: inbox.of("message", channels[2]) == [b"still here"])
        assert inbox.of("message", channels[1]) == []
    finally:
        await inbox.stop()


async def test_a_broken_shard_connection_reaches_the_relay(
    cluster: ClusterSet, relay: ShardPubSub
) -> None:
    channels = channel_per_shard(cluster)
    await relay.subscribe(channels)
    inbox = Inbox(relay)
    try:
        await eventually(lambda: all(inbox.of("subscribe", c) for c in channels))
        async with Redis(host=HOST, port=cluster.nodes[2].port) as client:
            assert await client.client_kill_filter(_type="pubsub") == 1
        await eventually(lambda: inbox.error is not None, what="the error surfaced")
        assert isinstance(inbox.error, RedisConnectionError)
    finally:
        await inbox.stop()


async def test_connections_are_one_per_shard_with_a_subscription(
    cluster: ClusterSet, relay: ShardPubSub
) -> None:
    on_shards = channels_on_shards(cluster, per_shard=2)
    await relay.subscribe([*on_shards[0], *on_shards[1]])  # none on the third shard
    counts = []
    for node in cluster.nodes:
        async with Redis(host=HOST, port=node.port) as client:
            clients = await client.client_list(_type="pubsub")
            counts.append(sum(c["name"] == "test:relay" for c in clients))
    assert counts == [1, 1, 0]


def move_slot(cluster: ClusterSet, slot: int, source: int, target: int) -> None:
    """Hand an empty slot from one master to another, as `redis-cli --cluster reshard`
    does: IMPORTING, MIGRATING (no keys to move), then NODE on every master."""
    source_id, target_id = probe(source, "CLUSTER", "MYID"), probe(target, "CLUSTER", "MYID")
    probe(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    probe(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    others = [node.port for node in cluster.nodes if node.port not in (source, target)]
    for port in (target, source, *others):
        probe(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)


async def test_a_slot_moving_makes_the_relay_resubscribe_on_the_new_owner(
    cluster: ClusterSet,
) -> None:
    channel = f"moving:{{{uuid.uuid4().hex}}}"
    slot = key_slot(channel.encode())
    source = cluster.master_for_slot(slot).port
    target = next(n.port for n in cluster.nodes if n.port != source)
    connections = connections_for(Settings(redis_url=cluster.url), "test")
    subscriber = Subscriber(connections.new_pubsub, backoff=Backoff(base=0.01, cap=0.1))
    received: list[bytes] = []
    subscriber.route(channel, received.append)
    await subscriber.start()
    try:
        await eventually(lambda: subscriber.subscribed, what="subscribed")
        move_slot(cluster, slot, source, target)
        # Redis drops the subscription of a slot that moved; the relay starts over on a
        # fresh slot map (and, in the service, reads every counter back).
        await eventually(lambda: subscriber.stats.subscribes >= 2, what="re-subscribed")
        await eventually(lambda: subscriber.subscribed)
        async with Redis(host=HOST, port=target) as client:
            assert await client.execute_command("SPUBLISH", channel, "after the move") == 1
        await eventually(lambda: received == [b"after the move"])
    finally:
        await subscriber.stop()
        await connections.aclose()
        move_slot(cluster, slot, target, source)  # the module's cluster, as it was
