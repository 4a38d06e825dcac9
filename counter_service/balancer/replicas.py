"""The replicas behind the balancer: their addresses, their ids, and where the list comes
from (given, or re-resolved from DNS names). nginx knows a replica by the IP address it
connects to (`$upstream_addr`), so that is what a replica is: a name is resolved here,
never handed to nginx, which would refuse a configuration with a name it cannot resolve."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ID_CHARS = 10
"""Hex characters of a replica id: 40 bits, so two replicas' ids collide about once in
a trillion pairs, and a cookie stays short."""
DISCOVER_EVERY_S = 5.0

Resolver = Callable[[str, int], Sequence[str]]
"""(name, port) -> the addresses the name resolves to; raises OSError when it does not."""


class AddressError(ValueError):
    """Text that is not HOST:PORT; the message says why."""


def replica_id(address: str) -> str:
    """The opaque, stable id of the replica at `address` ("host:port"): what the
    `cs_replica` cookie carries. No ':' in it, so the routing can split on one."""
    return hashlib.sha256(address.encode()).hexdigest()[:ID_CHARS]


def host_port(host: str, port: int) -> str:
    """`host:port` as nginx writes it in `$upstream_addr` (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, order=True)
class Replica:
    """One replica: where it listens, and what status lines call it."""

    host: str
    port: int
    name: str = field(default="", compare=False)
    """A short label ("1", "2" in `counter-service up`); its address when empty."""

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    @property
    def id(self) -> str:
        return replica_id(self.address)

    @property
    def label(self) -> str:
        return self.name or self.address

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" or "[IPv6]:PORT"; AddressError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        raise AddressError("not HOST:PORT")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise AddressError(f"{port!r} is not a TCP port")
    return host, int(port)


def parse_replicas(text: str) -> list[Replica]:
    """The replicas of "HOST:PORT[,HOST:PORT...]", in the order given, without repeats."""
    found: list[Replica] = []
    for item in text.split(","):
        try:
            replica = Replica(*parse_address(item))
        except AddressError as exc:
            raise AddressError(f"{item.strip()!r}: {exc}" if "," in text else str(exc)) from None
        if replica not in found:
            found.append(replica)
    return found


def is_ip(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(name: str, port: int) -> list[str]:
    """Every address `name` resolves to (Docker's DNS answers a service name with one
    A record per running replica)."""
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class Discovery:
    """The replicas that a DNS name points at, re-resolved every `every_s` seconds.

    When the name does not resolve (a DNS hiccup, or no replica running yet) the last
    answer stands: a replica that really is gone fails its polls and leaves rotation."""

    def __init__(
        self,
        name: str,
        port: int,
        resolver: Resolver = resolve,
        every_s: float = DISCOVER_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.name, self.port = name, port
        self.resolver, self.every_s, self.clock = resolver, every_s, clock
        self.say = say
        """Told when the name stops resolving, and when it resolves again."""
        self.replicas: list[Replica] = []
        self.error: str | None = None
        """Why the last resolution failed, or None after a good one."""
        self._due = float("-inf")

    def __call__(self) -> list[Replica]:
        """The current replicas, resolved again if the last resolution is old enough."""
        now = self.clock()
        if now >= self._due:
            self._due = now + self.every_s
            self._resolve()
        return self.replicas

    def _resolve(self) -> None:
        try:
            addresses = self.resolver(self.name, self.port)
        except OSError as exc:
            self._report(f"{self.name} does not resolve ({exc.strerror or exc})")
            return
        self._report(None)
        self.replicas = sorted(Replica(address, self.port) for address in set(addresses))

    def _report(self, error: str | None) -> None:
        if error != self.error and self.say is not None:
            self.say(f"discover {self.name}: {error or 'resolves again'}")
        self.error = error


class ReplicaList:
    """The replicas of `--replicas`, in the order given: an IP address as it is, a name as
    every address it resolves to, re-resolved as `Discovery` does (a name that does not
    resolve yet stands for no replica until it does, and says so)."""

    def __init__(
        self,
        given: Sequence[Replica],
        resolver: Resolver = resolve,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.parts: list[Replica | Discovery] = [
            replica
            if is_ip(replica.host)
            else Discovery(replica.host, replica.port, resolver, clock=clock, say=say)
            for replica in given
        ]

    def __call__(self) -> list[Replica]:
        """The current replicas, without repeats."""
        found: list[Replica] = []
        for part in self.parts:
            for replica in [part] if isinstance(part, Replica) else part():
                if replica not in found:
                    found.append(replica)
        return found
