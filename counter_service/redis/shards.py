"""Sharded pub/sub over a Redis Cluster: one connection per shard that holds one of our
channels, each read by its own task into one inbox.

Not redis-py's `ClusterPubSub`, for two reasons measured against 8.1:
- `get_sharded_message(timeout)` reads the shards in turn and waits out the timeout on
  each idle one, so a busy shard delivers one message per idle shard per timeout: of a
  burst of 40 `SPUBLISH`es on one shard, with one idle shard and a 1 s timeout, 4
  arrived within 3 s, and the pages fell behind by hundreds of clicks.
- After a slot migration it moves subscriptions to the new owner by itself, in the
  background; the relay must know, to read the counters back (Redis is the truth and
  messages were missed meanwhile).
Here a shard's connection error, or a subscription Redis drops (`SUNSUBSCRIBE` pushed
when a slot moves), reaches the relay, which starts over on a fresh slot map.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import SlotNotCoveredError

from counter_service.tasks import cancel_and_wait

_TYPES = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}
"""Sharded message types as the relay knows them from plain pub/sub."""


@dataclass
class _Shard:
    client: Redis
    pubsub: PubSub
    reader: asyncio.Task[None] | None = None


class ShardPubSub:
    """The relay's `PubSubConnection` on a cluster.

    `cluster` only maps channels to shards; `connect(host, port)` makes the client a
    shard's subscription runs on (with no retries, so that errors reach the relay)."""

    def __init__(self, cluster: RedisCluster, connect: Callable[[str, int], Redis]) -> None:
        self._cluster = cluster
        self._connect = connect
        self._shards: dict[str, _Shard] = {}
        """By node name (`host:port`)."""
        self._shard_of: dict[str, _Shard] = {}
        """By channel subscribed."""
        self._inbox: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()

    async def subscribe(self, channels: list[str]) -> None:
        await self._cluster.initialize()  # the slot map, fetched once per connection
        for group in _by_slot(channels).values():
            node = self._cluster.get_node_from_key(group[0])  # SlotNotCoveredError if none
            if node is None:  # only for replica=True; for the type checker
                raise SlotNotCoveredError(f"no shard serves {group[0]!r}")
            shard = self._shards.get(node.name)
            if shard is None:
                client = self._connect(node.host, int(node.port))
                shard = self._shards[node.name] = _Shard(client, client.pubsub())
            await shard.pubsub.ssubscribe(*group)  # one slot per command, as Redis wants
            if shard.reader is None:  # reading needs the connection SSUBSCRIBE opened
                shard.reader = asyncio.create_task(self._read(shard.pubsub), name="shard-relay")
            self._shard_of.update(dict.fromkeys(group, shard))

    async def unsubscribe(self, channels: list[str]) -> None:
        for group in _by_slot(channels).values():
            shard = self._shard_of.get(group[0])  # a slot's channels share its shard
            for channel in group:
                self._shard_of.pop(channel, None)
            if shard is not None:
                await shard.pubsub.sunsubscribe(*group)

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message of any shard (types as on plain pub/sub), None after
        `timeout`; raises what broke a shard's connection."""
        try:
            async with asyncio.timeout(timeout):
                item = await self._inbox.get()
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            raise item
        item["type"] = _TYPES.get(item["type"], item["type"])
        return item

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    self._inbox.put_nowait(message)
        except Exception as exc:  # the relay raises it from get_message and starts over
            self._inbox.put_nowait(exc)

    async def ping(self) -> None:
        for shard in list(self._shards.values()):
            await shard.pubsub.ping()

    async def aclose(self) -> None:
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            if shard.reader is not None:
                await cancel_and_wait(shard.reader)
            await shard.pubsub.aclose()
            await shard.client.aclose()
        await self._cluster.aclose()


def _by_slot(channels: Iterable[str]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = defaultdict(list)
    for channel in channels:
        groups[key_slot(channel.encode())].append(channel)
    return groups
