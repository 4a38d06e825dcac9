"""How Redis clients are made: a real server from a URL, or the embedded fake store."""

from __future__ import annotations

from typing import Protocol

import fakeredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from counter_service.settings import Settings

# How long a command waits for a free pooled connection before failing.
POOL_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# Commands are short; a reply slower than this means the server is in trouble.
COMMAND_TIMEOUT_S = 5.0


class Connections(Protocol):
    """Source of Redis clients for one process."""

    @property
    def commands(self) -> Redis:
        """The shared client for commands, over a bounded pool."""
        ...

    def new_subscriber(self) -> Redis:
        """A fresh client for one pub/sub connection; the caller closes it."""
        ...

    async def aclose(self) -> None:
        """Close every connection this object opened."""
        ...


class RedisConnections:
    """Clients for a real Redis server. Commands share a blocking pool of at most
    `max_connections`, so connections stay O(workers) whatever the number of sessions."""

    def __init__(self, url: str, max_connections: int, name: str = "counter-service") -> None:
        self._url = url
        self._name = name
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=POOL_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_keepalive=True,
            client_name=f"{name}:commands",
        )
        self._commands = Redis(connection_pool=pool)

    @property
    def commands(self) -> Redis:
        return self._commands

    def new_subscriber(self) -> Redis:
        # No socket_timeout: a quiet channel is normal; the relay detects a deaf
        # connection with its own PINGs. No retries: the relay reconnects itself
        # so that it can resync after every reconnect.
        return Redis.from_url(
            self._url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            client_name=f"{self._name}:relay",
        )

    async def aclose(self) -> None:
        # A pool passed in explicitly is not closed by the client unless asked.
        await self._commands.aclose(close_connection_pool=True)


class EmbeddedConnections:
    """An in-process fake Redis with Lua scripting: for one process in development."""

    def __init__(self) -> None:
        self._server = fakeredis.FakeServer()
        self._commands = fakeredis.FakeAsyncRedis(server=self._server)

    @property
    def commands(self) -> Redis:
        return self._commands

    def new_subscriber(self) -> Redis:
        return fakeredis.FakeAsyncRedis(server=self._server)

    async def aclose(self) -> None:
        await self._commands.aclose()


def connections_for(settings: Settings, name: str = "counter-service") -> Connections:
    """The real server named by the settings, or the embedded store if none is.

    `name` labels the connections in Redis's CLIENT LIST (`NAME:commands`, `NAME:relay`)."""
    if settings.redis_url is None:
        return EmbeddedConnections()
    return RedisConnections(settings.redis_url, settings.max_connections, name)
