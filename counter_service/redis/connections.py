"""How Redis clients are made: a single server, a Sentinel-managed master, a Cluster,
or the embedded fake store; and the pub/sub connection each of them listens on.

Connections stay O(workers) whatever the number of sessions: commands share a bounded
pool (per node on a cluster) and pub/sub is one connection (one per shard on a cluster).
"""

from __future__ import annotations

from typing import Any, Protocol

import fakeredis
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from counter_service.pubsub.subscriber import PubSubConnection
from counter_service.redis.shards import ShardPubSub
from counter_service.redis.tls import tls_options
from counter_service.redis.urls import TLS_OPTIONS, RedisTarget, parse_redis_url
from counter_service.settings import Settings

# How long a command waits for a free pooled connection before failing.
POOL_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# Commands are short; a reply slower than this means the server is in trouble.
COMMAND_TIMEOUT_S = 5.0

Client = Redis | RedisCluster


class Connections(Protocol):
    """Source of Redis clients for one process."""

    @property
    def commands(self) -> Client:
        """The shared client for commands, over a bounded pool."""
        ...

    @property
    def sharded(self) -> bool:
        """True on a cluster: channels live on shards (SSUBSCRIBE/SPUBLISH)."""
        ...

    def new_pubsub(self) -> PubSubConnection:
        """A fresh pub/sub connection; the caller closes it."""
        ...

    async def aclose(self) -> None:
        """Close every connection this object opened."""
        ...


def _url_options(target: RedisTarget, subscriber: bool = False) -> dict[str, Any]:
    """The URL's other query options. Not its socket_timeout for the subscription: a
    quiet channel is normal there, and the subscriber has its own probes."""
    skip = ("socket_timeout",) if subscriber else ()
    return {k: v for k, v in target.options.items() if k not in TLS_OPTIONS and k not in skip}


def _subscriber_options(name: str) -> dict[str, Any]:
    # No socket_timeout: a quiet channel is normal; the subscriber detects a deaf
    # connection with its own PINGs. No retries: it reconnects itself, to resync.
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"{name}:relay",
    }


def _command_options(name: str) -> dict[str, Any]:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": COMMAND_TIMEOUT_S,
        "socket_keepalive": True,
        "client_name": f"{name}:commands",
    }


def _server_options(settings: Settings, target: RedisTarget) -> dict[str, Any]:
    """Where one server is and how to log in: redis-py connection pool arguments."""
    options: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password,
    }
    if target.socket_path is not None:
        return options | {
            "connection_class": UnixDomainSocketConnection,
            "path": target.socket_path,
        }
    [(host, port)] = target.hosts
    tls = tls_options(settings, target)
    connection_class = SSLConnection if target.tls else Connection
    return options | {"connection_class": connection_class, "host": host, "port": port, **tls}


def _for_socket(options: dict[str, Any], target: RedisTarget) -> dict[str, Any]:
    # A Unix socket has no TCP keepalive (redis-py refuses the argument there).
    if target.socket_path is None:
        return options
    return {k: v for k, v in options.items() if k != "socket_keepalive"}


class ServerPubSub:
    """A pub/sub connection to one server (plain channels)."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pubsub: PubSub = client.pubsub()

    async def subscribe(self, channels: list[str]) -> None:
        await self._pubsub.subscribe(*channels)

    async def unsubscribe(self, channels: list[str]) -> None:
        await self._pubsub.unsubscribe(*channels)

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        message: dict[str, Any] | None = await self._pubsub.get_message(timeout=timeout)
        return message

    async def ping(self) -> None:
        await self._pubsub.ping()

    async def aclose(self) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()


class ServerConnections:
    """Clients for one real Redis server, from a `redis://`, `rediss://` or `unix://` URL."""

    sharded = False

    def __init__(self, settings: Settings, name: str, target: RedisTarget | None = None) -> None:
        assert settings.redis_url is not None
        target = target or parse_redis_url(settings.redis_url)
        self._name = name
        self._target = target
        self._server = _server_options(settings, target)
        options = _for_socket(_command_options(name) | _url_options(target), target)
        pool = BlockingConnectionPool(
            max_connections=settings.max_connections,
            timeout=POOL_TIMEOUT_S,
            **options,
            **self._server,
        )
        self._commands = Redis(connection_pool=pool)

    @property
    def commands(self) -> Redis:
        return self._commands

    def new_pubsub(self) -> PubSubConnection:
        options = _subscriber_options(self._name) | _url_options(self._target, subscriber=True)
        pool = ConnectionPool(
            max_connections=1, **_for_socket(options, self._target), **self._server
        )
        return ServerPubSub(Redis.from_pool(pool))

    async def aclose(self) -> None:
        # A pool passed in explicitly is not closed by the client unless asked.
        await self._commands.aclose(close_connection_pool=True)


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (connections go to the current master) that waits for a free
    connection, like the single-server pool, instead of failing when all are busy."""


class SentinelConnections:
    """Clients for the master that Sentinel names; each new connection asks the
    sentinels, so commands and the subscription follow the master through a failover."""

    sharded = False

    def __init__(self, settings: Settings, target: RedisTarget, name: str) -> None:
        self._name = name
        self._target = target
        # The sentinels get the URL's connection and TLS options too (with rediss+ they
        # speak TLS as the data nodes do), and no retries: they are asked in turn, and
        # whoever asked retries on its own.
        tls = {"ssl": True, **tls_options(settings, target)} if target.tls else {}
        sentinel_options = {"socket_connect_timeout": CONNECT_TIMEOUT_S, **_url_options(target)}
        self._sentinel = Sentinel(
            list(target.hosts),
            sentinel_kwargs={**sentinel_options, **tls, "retry": Retry(NoBackoff(), 0)},
            username=target.username,
            password=target.password,
            db=target.db,
            **tls,
        )
        self._commands = self._sentinel.master_for(
            target.service,
            connection_pool_class=BlockingSentinelPool,
            max_connections=settings.max_connections,
            timeout=POOL_TIMEOUT_S,
            **_command_options(name),
            **_url_options(target),
        )

    @property
    def sentinel(self) -> Sentinel:
        """The sentinels, for asking them directly (the start probe does)."""
        return self._sentinel

    @property
    def commands(self) -> Redis:
        return self._commands  # type: ignore[no-any-return]  # redis-py leaves it unannotated

    def new_pubsub(self) -> PubSubConnection:
        options = _subscriber_options(self._name) | _url_options(self._target, subscriber=True)
        client = self._sentinel.master_for(self._target.service, **options)
        return ServerPubSub(client)

    async def aclose(self) -> None:
        await self._commands.aclose(close_connection_pool=True)


class ClusterConnections:
    """Clients for a Redis Cluster from its seed nodes; each node has a bounded pool."""

    sharded = True

    def __init__(self, settings: Settings, target: RedisTarget, name: str) -> None:
        self._settings = settings
        self._target = target
        self._name = name
        # Besides the store's calls (bounded by max_connections), presence, the publisher
        # and readiness PINGs each use a node's pool: headroom, since it cannot wait.
        self._commands = self._cluster(_command_options(name), settings.max_connections + 3)

    def _cluster(self, options: dict[str, Any], max_connections: int) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._target.hosts],
            max_connections=max_connections,
            **self._options(options),
        )

    def _options(self, options: dict[str, Any], subscriber: bool = False) -> dict[str, Any]:
        """Credentials, TLS and the URL's options added to `options`."""
        target = self._target
        tls = {"ssl": True, **tls_options(self._settings, target)} if target.tls else {}
        credentials = {"username": target.username, "password": target.password}
        return {**options, **_url_options(target, subscriber), **credentials, **tls}

    @property
    def commands(self) -> RedisCluster:
        return self._commands

    def new_pubsub(self) -> PubSubConnection:
        options = self._options(_subscriber_options(self._name), subscriber=True)

        def connect(host: str, port: int) -> Redis:
            return Redis(host=host, port=port, **options)

        slot_map = {**_command_options(self._name), "client_name": f"{self._name}:slots"}
        return ShardPubSub(self._cluster(slot_map, 1), connect)

    async def aclose(self) -> None:
        await self._commands.aclose()


class EmbeddedPubSub(ServerPubSub):
    """The embedded store's pub/sub (fakeredis)."""


class EmbeddedConnections:
    """An in-process fake Redis with Lua scripting: for one process in development."""

    sharded = False

    def __init__(self) -> None:
        self._server = fakeredis.FakeServer()
        self._commands = fakeredis.FakeAsyncRedis(server=self._server)

    @property
    def commands(self) -> Redis:
        return self._commands

    def new_pubsub(self) -> PubSubConnection:
        return EmbeddedPubSub(fakeredis.FakeAsyncRedis(server=self._server))

    async def aclose(self) -> None:
        await self._commands.aclose()


def connections_for(settings: Settings, name: str = "counter-service") -> Connections:
    """The Redis named by the settings (a server, Sentinel or a cluster), or the embedded
    store if none is. `name` labels the connections in Redis's CLIENT LIST
    (`NAME:commands`, `NAME:relay`)."""
    if settings.redis_url is None:
        return EmbeddedConnections()
    target = parse_redis_url(settings.redis_url)
    if target.kind == "sentinel":
        return SentinelConnections(settings, target, name)
    if target.kind == "cluster":
        return ClusterConnections(settings, target, name)
    return ServerConnections(settings, name, target)
