"""Real Redis topologies for tests, on free loopback ports and stopped by PID: a Sentinel set,
a Redis Cluster, a TLS server with certificates made on the spot, and least-privilege ACL users.

Like `fleet`, the processes are driven synchronously. From async tests, run the calls that wait
for seconds (`start()`, `wait_for_failover`, `wait_for_promotion`) with `asyncio.to_thread`, so
the event loop, and any relay under test, keeps running meanwhile."""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.connection import SSLConnection
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from counter_service.devtools.fleet import (
    HOST,
    START_TIMEOUT_S,
    FleetError,
    RedisProcess,
    free_ports,
)

POLL_S = 0.05
FAILOVER_TIMEOUT_S = 30.0
"""A correctness deadline for a failover, generous on purpose: a loaded machine is slow."""
DOWN_AFTER_MS = 1000
"""Sentinel: a master silent this long is subjectively down."""
SENTINEL_FAILOVER_TIMEOUT_MS = 3000
"""Sentinel: a promotion slower than this is abandoned and retried after twice as long."""
CLUSTER_NODE_TIMEOUT_MS = 1000
"""Cluster: a node silent this long is suspected to have failed."""
CLUSTER_SLOTS = 16384

_NODE_ARGS = (
    # A master starts a replica's full sync at once instead of waiting 5 s for more replicas.
    "--repl-diskless-sync-delay",
    "0",
    # SIGTERM stops a master at once instead of waiting up to 10 s for its replicas.
    "--shutdown-timeout",
    "0",
)
_BAD_CLUSTER_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


class ToolMissing(FleetError):
    """A command-line tool a topology needs is not installed (tests skip on it)."""


def _require(command: str, package: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise ToolMissing(f"`{command}` is not installed (Debian: apt-get install {package})")
    return path


def probe(
    port: int, *command: str, tls: Certificates | None = None, password: str | None = None
) -> Any:
    """One command on a fresh RESP2 connection that fails fast: no retries, short timeouts;
    over TLS, with the client certificate, if `tls` is given; after AUTH with `password`.

    RESP2 and raw replies (no redis-py callback matches `CLUSTER`, `SENTINEL` or `ROLE`
    on their own) keep the parsing here independent of redis-py's reply shapes."""
    client = redis.Redis(
        HOST,
        port,
        protocol=2,
        decode_responses=True,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
        password=password,
        **({"ssl": True, **tls.client_kwargs()} if tls else {}),
    )
    try:
        # redis-py leaves execute_command untyped.
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def replica_in_sync(port: int, tls: Certificates | None = None) -> bool:
    reply = probe(port, "INFO", "replication", tls=tls)
    return bool(reply.get("master_link_status") == "up")


def _role(port: int, tls: Certificates | None = None) -> str:
    return str(probe(port, "ROLE", tls=tls)[0])


def _holds(condition: Callable[[], bool]) -> bool:
    """The condition, where a server that is not there (yet, or any more) means False."""
    try:
        return condition()
    except (redis.RedisError, OSError):
        return False


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, processes: Sequence[RedisProcess]
) -> None:
    """Wait until `condition()` holds; fail at once if one of `processes` died."""
    deadline = time.monotonic() + timeout
    while not _holds(condition):
        for process in processes:
            if not process.running:
                raise FleetError(f"{process.name} exited before {what}:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            logs = processes[0].log_dir if processes else "nowhere"
            raise FleetError(f"not {what} after {timeout}s (logs in {logs})")
        time.sleep(POLL_S)


def data_node(log_dir: Path, port: int, *args: str) -> RedisProcess:
    return RedisProcess(log_dir, port, args=[*_node_args(port), *args])


def _node_args(port: int) -> list[str]:
    # Its own dump file name: replicas in one directory would otherwise load each other's
    # full-sync file, which they write to `dbfilename` before loading it.
    return [*_NODE_ARGS, "--dbfilename", f"dump-{port}.rdb"]


def tls_data_node(
    log_dir: Path, certs: Certificates, port: int, *args: str, require_client_cert: bool = False
) -> TlsRedis:
    """`data_node` speaking TLS only, replication included; it shows the client
    certificate when it connects to another node (its master)."""
    node = TlsRedis(log_dir, certs, require_client_cert=require_client_cert, port=port)
    node.args = [*_node_args(port), *args, *_outgoing_tls(certs)]
    return node


def _outgoing_tls(certs: Certificates) -> list[str]:
    """A node's own connections (replication, the cluster bus, a sentinel's) in TLS, with
    the client certificate: the server certificate is for servers only (serverAuth)."""
    return [
        *("--tls-replication", "yes"),
        *("--tls-client-cert-file", str(certs.client_cert)),
        *("--tls-client-key-file", str(certs.client_key)),
    ]


class _Topology:
    """Processes started together and stopped together by PID, even when the start fails."""

    processes: list[RedisProcess]

    def start(self) -> Self:
        """Start every process and wait until the topology is ready; stop all on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), in the order of `processes`."""
        for process in self.processes:
            process.stop()

    def _running(self) -> list[RedisProcess]:
        return [process for process in self.processes if process.running]

    def _process(self, port: int) -> RedisProcess:
        return next(process for process in self.processes if process.port == port)

    def _poll(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        wait_until(condition, timeout, what, self._running())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# Sentinel ------------------------------------------------------------------------------------


class SentinelProcess(RedisProcess):
    """One `redis-server CONF --sentinel` monitoring one master; the config file lives in
    `log_dir`, and Sentinel rewrites it with what it learns (it needs it writable). With
    `password`, clients must AUTH with it (`requirepass`); with `certs`, it speaks TLS
    only, to clients as to the master, its replicas and the other sentinels, and wants
    clients to show a certificate its CA signed."""

    def __init__(
        self,
        log_dir: Path,
        port: int,
        service: str,
        master_port: int,
        password: str | None = None,
        certs: Certificates | None = None,
    ) -> None:
        super().__init__(log_dir, port)
        self.name = f"sentinel-{port}"
        self.conf = log_dir / f"{self.name}.conf"
        self.service = service
        self.master_port = master_port
        self.password = password
        self.certs = certs

    def start(self) -> Self:
        """Write the config (unless a previous run left its own) and wait for PONG."""
        if not self.conf.exists():
            self.conf.write_text(self._config())
        return super().start()

    def server_args(self) -> list[str]:
        """The config file says everything, ports included."""
        return [str(self.conf), "--sentinel"]

    def ready(self) -> bool:
        """True once the sentinel answers PING (after AUTH if it has a password)."""
        if self.password is None and self.certs is None:
            return self._pong()
        try:
            return bool(probe(self.port, "PING", tls=self.certs, password=self.password))
        except (redis.RedisError, OSError):
            return False

    def _config(self) -> str:
        service = self.service
        lines = [
            *self._listening(),
            f"bind {HOST}",
            "protected-mode no",
            f"dir {self.log_dir}",
            f"sentinel monitor {service} {HOST} {self.master_port} 2",
            f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {service} {SENTINEL_FAILOVER_TIMEOUT_MS}",
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        return "\n".join([*lines, ""])

    def _listening(self) -> list[str]:
        if self.certs is None:
            return [f"port {self.port}"]
        # Config-file lines of the same options as the data nodes' command line.
        tls = [*TlsRedis(self.log_dir, self.certs, port=self.port).tls_args()]
        tls += _outgoing_tls(self.certs)
        return [
            f"{name.removeprefix('--')} {value}"
            for name, value in zip(tls[::2], tls[1::2], strict=True)
        ]


def _pairs(reply: list[Any]) -> dict[str, Any]:
    """A RESP2 flat list of field/value pairs as a dict."""
    return dict(zip(reply[::2], reply[1::2], strict=True))


class SentinelSet(_Topology):
    """A master, one replica and three sentinels that fail the master over in seconds; with
    `certs`, every process speaks TLS only and wants a client certificate its CA signed
    (clients, replication, the sentinels' own connections)."""

    def __init__(
        self,
        log_dir: Path,
        service: str = "mymaster",
        sentinels: int = 3,
        certs: Certificates | None = None,
    ) -> None:
        self.service = service
        self.certs = certs
        master_port, replica_port, *sentinel_ports = free_ports(2 + sentinels)
        replica_of = ("--replicaof", HOST, str(master_port))
        self.nodes = [
            self._node(log_dir, master_port),
            self._node(log_dir, replica_port, *replica_of),
        ]
        self.sentinels = [
            SentinelProcess(log_dir, port, service, master_port, certs=certs)
            for port in sentinel_ports
        ]
        # Sentinels first: they must not fail the master over while the set is stopping.
        self.processes = [*self.sentinels, *reversed(self.nodes)]
        self.master_port = master_port
        """The port of the current master, as `start()` and `wait_for_failover` last saw it."""

    def _node(self, log_dir: Path, port: int, *args: str) -> RedisProcess:
        if self.certs is None:
            return data_node(log_dir, port, *args)
        return tls_data_node(log_dir, self.certs, port, *args, require_client_cert=True)

    @property
    def master(self) -> RedisProcess:
        """The data node that is the master (after a failover: the promoted one)."""
        return self._process(self.master_port)

    @property
    def replica(self) -> RedisProcess:
        """The other data node (after a failover: the old master, killed)."""
        return next(node for node in self.nodes if node.port != self.master_port)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every sentinel, as `redis.asyncio.Sentinel` takes them."""
        return [(HOST, sentinel.port) for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """`redis+sentinel://host:port,host:port,.../SERVICE/0` (the redis-sentinel-url form;
        `rediss+sentinel` with TLS)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        scheme = "rediss+sentinel" if self.certs else "redis+sentinel"
        return f"{scheme}://{hosts}/{self.service}/0"

    def _probe(self, port: int, *command: str) -> Any:
        return probe(port, *command, tls=self.certs)

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        # Sentinels learn replicas from the master's INFO at their first look and only
        # every 10 s after: start them once the replica shows there.
        self._poll(
            lambda: replica_in_sync(self.replica.port, self.certs),
            "replica in sync",
            START_TIMEOUT_S,
        )
        for sentinel in self.sentinels:
            sentinel.start()
        self._poll(self._sentinels_ready, "every sentinel sees the set", START_TIMEOUT_S)

    def _sentinels_ready(self) -> bool:
        return all(self._sentinel_ready(sentinel.port) for sentinel in self.sentinels)

    def _sentinel_ready(self, port: int) -> bool:
        """The sentinel knows the master up, the other sentinels, and the replica in sync."""
        master = _pairs(self._probe(port, "SENTINEL", "MASTER", self.service))
        replicas = [_pairs(r) for r in self._probe(port, "SENTINEL", "REPLICAS", self.service)]
        return (
            master["flags"] == "master"
            and int(master["num-other-sentinels"]) == len(self.sentinels) - 1
            and any(
                r["flags"] == "slave"
                and r["master-link-status"] == "ok"
                and int(r["port"]) == self.replica.port
                for r in replicas
            )
        )

    def kill_master(self) -> RedisProcess:
        """SIGKILL the current master (no goodbye to anyone); returns its handle."""
        master = self.master
        master.kill()
        return master

    def wait_for_failover(self, timeout: float = FAILOVER_TIMEOUT_S) -> int:
        """Wait until every sentinel names a new master that answers ROLE as master; its port."""
        old = self.master_port
        self._poll(lambda: self._failed_over(old), "failed over", timeout)
        return self.master_port

    def _failed_over(self, old: int) -> bool:
        answers = {
            tuple(self._probe(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service))
            for s in self.sentinels
        }
        if len(answers) != 1:
            return False
        port = int(answers.pop()[1])
        if port == old or _role(port, self.certs) != "master":
            return False
        self.master_port = port
        return True


# Cluster -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterMember:
    """One line of `CLUSTER NODES`: a member of the cluster as one node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: tuple[range, ...]

    @classmethod
    def parse(cls, line: str) -> ClusterMember:
        """`<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`."""
        node_id, address, flags, master, _, _, _, link, *slots = line.split()
        return cls(
            node_id=node_id,
            port=int(address.split("@")[0].rsplit(":", 1)[1]),
            flags=frozenset(flags.split(",")),
            master_id=None if master == "-" else master,
            connected=link == "connected",
            # `[slot->-id]` entries are migrations in flight, not slots served.
            slots=tuple(_slot_range(slot) for slot in slots if not slot.startswith("[")),
        )

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def healthy(self) -> bool:
        return self.connected and not self.flags & _BAD_CLUSTER_FLAGS

    def serves(self, slot: int) -> bool:
        return any(slot in slots for slots in self.slots)


def _slot_range(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def cluster_view(port: int, tls: Certificates | None = None) -> list[ClusterMember]:
    """Every node of the cluster as the node on `port` sees it (`CLUSTER NODES`)."""
    lines = probe(port, "CLUSTER", "NODES", tls=tls).splitlines()
    return [ClusterMember.parse(line) for line in lines]


def _cluster_info(port: int, tls: Certificates | None = None) -> dict[str, str]:
    text = probe(port, "CLUSTER", "INFO", tls=tls)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _cluster_ok(port: int, tls: Certificates | None = None) -> bool:
    info = _cluster_info(port, tls)
    return info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == CLUSTER_SLOTS


@dataclass(frozen=True)
class _Handover:
    """What a killed master served, and who may take it over."""

    slots: tuple[range, ...]
    replica_ports: frozenset[int]


class ClusterSet(_Topology):
    """A Redis Cluster of `masters` masters with `replicas_per_master` replicas each; with
    `certs`, every node speaks TLS only (clients, the cluster bus and replication).

    Every node has its own cluster bus port (`--cluster-port`), picked free like the
    others, so no node needs `port + 10000` to be free."""

    def __init__(
        self,
        log_dir: Path,
        masters: int = 3,
        replicas_per_master: int = 1,
        node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS,
        certs: Certificates | None = None,
    ) -> None:
        if masters < 1 or (masters < 3 and replicas_per_master):
            raise ValueError("a cluster needs a master; replicas need three masters or more")
        self.log_dir = log_dir
        self.certs = certs
        self.masters = masters
        self.replicas_per_master = replicas_per_master
        count = masters * (1 + replicas_per_master)
        ports = free_ports(2 * count)
        self.nodes = [
            self._node(port, bus_port, node_timeout_ms)
            for port, bus_port in zip(ports[:count], ports[count:], strict=True)
        ]
        self.processes = list(self.nodes)
        self._handover: _Handover | None = None

    def _node(self, port: int, bus_port: int, node_timeout_ms: int) -> RedisProcess:
        args = [
            *("--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
            *("--cluster-config-file", f"nodes-{port}.conf"),
            *("--cluster-node-timeout", str(node_timeout_ms)),
        ]
        if self.certs is None:
            return data_node(self.log_dir, port, *args)
        # The cluster bus always wants a client certificate, whatever tls-auth-clients says.
        return tls_data_node(self.log_dir, self.certs, port, *args, "--tls-cluster", "yes")

    @property
    def url(self) -> str:
        """`redis+cluster://host:port,...` (`rediss+cluster` with TLS): every node is a
        seed, so a killed one is no gap."""
        scheme = "rediss+cluster" if self.certs else "redis+cluster"
        return f"{scheme}://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def _probe(self, port: int, *command: str) -> Any:
        return probe(port, *command, tls=self.certs)

    def _cluster_view(self, port: int) -> list[ClusterMember]:
        return cluster_view(port, self.certs)

    def _ok(self, port: int) -> bool:
        return _cluster_ok(port, self.certs)

    def _in_sync(self, port: int) -> bool:
        return replica_in_sync(port, self.certs)

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        if self.masters < 3:
            self._create_by_hand()
        else:
            self._create()
        self._poll(self._formed, "formed (every slot served, replicas in sync)", START_TIMEOUT_S)

    def _create_by_hand(self) -> None:
        """What `redis-cli --cluster create` does, for the one or two masters it refuses
        (the benchmarks' shard scaling): equal slot ranges, distinct epochs, MEET."""
        share = -(-CLUSTER_SLOTS // self.masters)
        first = self.nodes[0]
        for index, node in enumerate(self.nodes):
            last = min(CLUSTER_SLOTS, (index + 1) * share) - 1
            self._probe(node.port, "CLUSTER", "ADDSLOTSRANGE", str(index * share), str(last))
            self._probe(node.port, "CLUSTER", "SET-CONFIG-EPOCH", str(index + 1))
            if node is not first:
                bus_port = node.args[node.args.index("--cluster-port") + 1]
                self._probe(first.port, "CLUSTER", "MEET", HOST, str(node.port), bus_port)

    def _create(self) -> None:
        """`redis-cli --cluster create`: slots, epochs, MEET, then replicas, as operators do."""
        argv = [
            _require("redis-cli", "redis-tools"),
            *("--cluster", "create", *(f"{HOST}:{node.port}" for node in self.nodes)),
            *("--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"),
        ]
        if self.certs is not None:
            certs = self.certs
            argv += ["--tls", "--cacert", str(certs.ca_cert)]
            argv += ["--cert", str(certs.client_cert), "--key", str(certs.client_key)]
        log = self.log_dir / "redis-cli-create.log"
        with log.open("ab") as out:
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=60
            )
        if done.returncode != 0:
            raise FleetError(f"redis-cli --cluster create failed:\n{log.read_text()[-3000:]}")

    def _formed(self) -> bool:
        """Every node: state ok, every slot served, the same healthy view of the whole
        cluster with the expected masters and replicas; every replica in sync."""
        views = [self._cluster_view(node.port) for node in self.nodes]
        shapes = {frozenset((n.node_id, n.master_id) for n in view) for view in views}
        view = views[0]
        replicas = [node for node in view if not node.is_master]
        return (
            len(shapes) == 1
            and all(node.healthy for view in views for node in view)
            and len(view) == len(self.nodes)
            and len(replicas) == self.masters * self.replicas_per_master
            and all(self._ok(node.port) for node in self.nodes)
            and all(self._in_sync(node.port) for node in replicas)
        )

    def _view(self) -> list[ClusterMember]:
        return self._cluster_view(self._running()[0].port)

    def master_for_slot(self, slot: int) -> RedisProcess:
        """The process of the master serving `slot`, as the first running node sees it."""
        view = self._view()
        master = next(node for node in view if node.is_master and node.serves(slot))
        return self._process(master.port)

    def master_for_key(self, key: str | bytes) -> RedisProcess:
        """The process of the master serving `key`'s slot (hash tags count)."""
        return self.master_for_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def kill_master_of(self, key: str | bytes) -> RedisProcess:
        """SIGKILL the master serving `key`; returns its handle. `wait_for_promotion` follows."""
        master = self.master_for_key(key)
        view = self._view()
        node = next(node for node in view if node.port == master.port)
        replicas = frozenset(n.port for n in view if n.master_id == node.node_id)
        self._handover = _Handover(node.slots, replicas)
        master.kill()
        return master

    def wait_for_promotion(self, timeout: float = FAILOVER_TIMEOUT_S) -> RedisProcess:
        """Wait until the cluster is ok again on every running node and the killed master's
        slots are served by one of its former replicas; returns that replica's process."""
        handover = self._handover
        if handover is None:
            raise FleetError("no master was killed: call kill_master_of first")
        if not handover.replica_ports:
            raise FleetError("the killed master had no replica to promote")
        self._poll(lambda: self._promoted(handover), "promoted a replica", timeout)
        self._handover = None
        return self.master_for_slot(handover.slots[0].start)

    def _promoted(self, handover: _Handover) -> bool:
        return all(
            self._ok(node.port) and self._handed_over(self._cluster_view(node.port), handover)
            for node in self._running()
        )

    def start_migration(self, slot: int, target_port: int) -> int:
        """Start moving `slot` from its master to the master on `target_port`, as
        `redis-cli --cluster reshard` does (IMPORTING, MIGRATING, then MIGRATE of every key
        in it), and stop before the slot changes hands: its keys now live on the target
        and the source answers for them with ASK. Returns the source's port;
        `finish_migration` completes the move."""
        source_port = self.master_for_slot(slot).port
        source_id, target_id = (
            self._probe(port, "CLUSTER", "MYID") for port in (source_port, target_port)
        )
        self._probe(target_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        self._probe(source_port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        keys = self._probe(source_port, "CLUSTER", "GETKEYSINSLOT", str(slot), "1000")
        if keys:
            self._probe(
                source_port, "MIGRATE", HOST, str(target_port), "", "0", "5000", "KEYS", *keys
            )
        return source_port

    def finish_migration(self, slot: int, target_port: int) -> None:
        """Hand `slot` to the master on `target_port` on every master (SETSLOT NODE), the
        target first; Redis then drops the slot's sharded subscriptions elsewhere."""
        target_id = self._probe(target_port, "CLUSTER", "MYID")
        masters = [n.port for n in self._view() if n.is_master and n.healthy]
        for port in sorted(masters, key=lambda p: p != target_port):
            self._probe(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        self._poll(
            lambda: self._serves_everywhere(slot, target_port), "slot moved", START_TIMEOUT_S
        )

    def _serves_everywhere(self, slot: int, port: int) -> bool:
        """Every running node sees the master on `port` serve `slot`, and is ok."""
        return all(
            self._ok(node.port)
            and any(
                member.port == port and member.serves(slot)
                for member in self._cluster_view(node.port)
            )
            for node in self._running()
        )

    @staticmethod
    def _handed_over(view: list[ClusterMember], handover: _Handover) -> bool:
        return all(
            any(
                node.is_master and node.healthy and node.port in handover.replica_ports
                for node in view
                if node.serves(slots.start) and node.serves(slots[-1])
            )
            for slots in handover.slots
        )


# TLS -----------------------------------------------------------------------------------------

_OPENSSL_CONF = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = counter-service test

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[wrong_host]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wronghost.invalid
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Certificates:
    """The PEM files `make_certificates` wrote: a CA, a server and a client certificate it
    signed, a second CA that signed nothing here (trusting it alone must fail), and a
    server certificate the CA signed for another host (verifying it must fail on the name)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_ca_key: Path
    wrong_host_cert: Path
    wrong_host_key: Path

    @classmethod
    def under(cls, directory: Path) -> Certificates:
        """The file names `make_certificates` uses in `directory`."""
        names = ("ca", "server", "client", "other-ca", "wrong-host")
        paths = [directory / f"{name}.{kind}" for name in names for kind in ("crt", "key")]
        return cls(*paths)

    def client_kwargs(self, trust: Path | None = None, client_cert: bool = True) -> dict[str, Any]:
        """redis-py keyword arguments for a verifying TLS client that trusts `trust` (the CA
        by default) and shows the client certificate unless `client_cert` is False."""
        kwargs: dict[str, Any] = {
            "ssl_ca_certs": str(trust or self.ca_cert),
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
        }
        if client_cert:
            kwargs |= {"ssl_certfile": str(self.client_cert), "ssl_keyfile": str(self.client_key)}
        return kwargs


def make_certificates(directory: Path) -> Certificates:
    """Make a CA, a server certificate for 127.0.0.1 and localhost, a client certificate and
    a server certificate for another host signed by it, and an unrelated second CA, with
    the `openssl` command (ToolMissing if there is none). Short-lived EC keys: quick to
    make, and nothing outlives the test."""
    openssl = _require("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "openssl.cnf"
    conf.write_text(_OPENSSL_CONF)
    certs = Certificates.under(directory)
    run = _OpenSsl(openssl, conf)
    run.authority(certs.ca_cert, certs.ca_key, "counter-service test CA")
    run.authority(certs.other_ca_cert, certs.other_ca_key, "unrelated test CA")
    run.leaf(certs.server_cert, certs.server_key, "localhost", "server", certs)
    run.leaf(certs.client_cert, certs.client_key, "counter-service client", "client", certs)
    run.leaf(certs.wrong_host_cert, certs.wrong_host_key, "wronghost", "wrong_host", certs)
    return certs


# P-256 keys take no time to make, unlike RSA ones; nothing outlives the test anyway.
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class _OpenSsl:
    """The `openssl` invocations `make_certificates` needs."""

    binary: str
    conf: Path
    days: str = "2"

    def authority(self, cert: Path, key: Path, name: str) -> None:
        """A self-signed CA certificate and its key."""
        self._run("req", "-x509", *self._new_key(key, name), "-out", cert, "-extensions", "ca")

    def leaf(self, cert: Path, key: Path, name: str, section: str, ca: Certificates) -> None:
        """A key, and a certificate signed by `ca`'s CA with the extensions of `section`."""
        request = cert.with_suffix(".csr")
        self._run("req", "-new", *self._new_key(key, name), "-out", request)
        signing = ("-CA", ca.ca_cert, "-CAkey", ca.ca_key, "-set_serial", secrets.randbits(63))
        self._run(
            *("x509", "-req", "-in", request, *signing, "-days", self.days, "-out", cert),
            *("-extfile", self.conf, "-extensions", section),
        )

    def _new_key(self, key: Path, name: str) -> tuple[object, ...]:
        subject = ("-subj", f"/CN={name}", "-days", self.days, "-config", self.conf)
        return (*_EC_KEY, "-keyout", key, *subject)

    def _run(self, *args: object) -> None:
        argv = [self.binary, *map(str, args)]
        done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        if done.returncode != 0:
            raise FleetError(f"{' '.join(argv)} failed:\n{done.stderr.decode(errors='replace')}")


class TlsRedis(RedisProcess):
    """A `redis-server` that speaks TLS only, on `port`, with the server certificate of
    `certs`; with `require_client_cert` it refuses clients without a certificate its CA signed."""

    def __init__(
        self,
        log_dir: Path,
        certs: Certificates,
        require_client_cert: bool = True,
        port: int | None = None,
    ) -> None:
        super().__init__(log_dir, port)
        self.certs = certs
        self.require_client_cert = require_client_cert
        self.name = f"redis-tls-{self.port}"

    @property
    def url(self) -> str:
        return f"rediss://{HOST}:{self.port}/0"

    def server_args(self) -> list[str]:
        """The plain defaults, then TLS: the later `--port 0` wins, so no plain port listens."""
        return [*super().server_args(), *self.tls_args()]

    def tls_args(self) -> list[str]:
        """What makes a server listen with TLS only, as `--option value` pairs."""
        certs = self.certs
        return [
            *("--port", "0", "--tls-port", str(self.port)),
            *("--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)),
            *("--tls-ca-cert-file", str(certs.ca_cert)),
            *("--tls-auth-clients", "yes" if self.require_client_cert else "no"),
        ]

    def ready(self) -> bool:
        """True once a TLS connection verified against the CA (client certificate shown)
        gets PONG. Not against the name: a test may give it another host's certificate."""
        context = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        context.check_hostname = False
        context.load_cert_chain(self.certs.client_cert, self.certs.client_key)
        try:
            with (
                socket.create_connection((HOST, self.port), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname=HOST) as sock,
            ):
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:  # refused while starting; ssl.SSLError is an OSError too
            return False


# ACL -----------------------------------------------------------------------------------------


async def create_acl_user(
    client_or_url: AsyncRedis | str, username: str, password: str, rule: Sequence[str]
) -> str:
    """Define `username` from scratch (`ACL SETUSER name reset on >password RULE...`, so an
    earlier definition leaves nothing behind) and return a URL that logs in as it.

    `rule` is the rest of the ACL rule, one token per item, such as `~prefix:*`, `+@read`,
    `-@dangerous`. The client (or a client made from the URL) must be allowed `ACL SETUSER`."""
    if isinstance(client_or_url, str):
        client = AsyncRedis.from_url(client_or_url)
        url = client_or_url
    else:
        client, url = client_or_url, _url_of(client_or_url)
    try:
        setuser = ("ACL", "SETUSER", username, "reset", "on", f">{password}", *rule)
        # redis-py leaves execute_command untyped.
        await client.execute_command(*setuser)  # type: ignore[no-untyped-call]
    finally:
        if client is not client_or_url:
            await client.aclose()
    return with_credentials(url, username, password)


async def create_cluster_acl_user(
    cluster: ClusterSet, username: str, password: str, rule: Sequence[str]
) -> str:
    """`create_acl_user` on every running node of `cluster` (Redis does not replicate ACL
    users, and a replica may become a master); returns the cluster URL that logs in as it."""
    for node in cluster.nodes:
        if node.running:
            await create_acl_user(node.url, username, password, rule)
    return with_credentials(cluster.url, username, password)


def _url_of(client: AsyncRedis) -> str:
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{kwargs.get('host', HOST)}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def with_credentials(url: str, username: str, password: str) -> str:
    """`url` with `username:password@` as its user information (quoted), whatever it had."""
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.quote(username, safe="")
    secret = urllib.parse.quote(password, safe="")
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))
