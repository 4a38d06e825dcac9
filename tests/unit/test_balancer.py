"""The balancer's decisions without a network: readiness in words, the rotation's
hysteresis, DNS discovery with an injected resolver, when nginx is reloaded, and the
checks of `counter-service balance` (nginx itself: test_nginx.py, e2e/test_routing.py)."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import pytest

from counter_service.balancer import command
from counter_service.balancer.command import UsageError
from counter_service.balancer.core import Balancer
from counter_service.balancer.health import READY, Health, Rotation, missing
from counter_service.balancer.nginx import Nginx
from counter_service.balancer.replicas import (
    AddressError,
    Discovery,
    Replica,
    parse_address,
    parse_replicas,
)
from counter_service.devtools.fleet import free_port

A, B, C = (Replica("10.0.0.1", 8550), Replica("10.0.0.2", 8550), Replica("10.0.0.3", 8550))


def test_readiness_names_what_the_replica_misses_and_nothing_that_is_healthy() -> None:
    body = {
        "ready": False,
        "redis_reachable": False,
        "relay_subscribed": True,
        "tasks_down": ["relay", "presence"],
        "event_loop_lagging": False,
        "worker": "vm-1",
        "redis_configuration": ["Redis refused the user name or password"],
    }
    assert missing(json.dumps(body).encode()) == (
        "Redis unreachable, tasks_down: relay; presence,"
        " redis_configuration: Redis refused the user name or password"
    )


def test_readiness_names_a_lagging_loop_and_an_unsubscribed_relay() -> None:
    body = {
        "ready": False,
        "redis_reachable": True,
        "relay_subscribed": False,
        "tasks_down": [],
        "event_loop_lagging": True,
    }
    assert missing(json.dumps(body).encode()) == "relay not subscribed, event loop lagging"


def test_readiness_of_an_answer_that_is_not_the_report() -> None:
    assert missing(b"<html>") == ""
    assert missing(b"[1]") == ""
    assert missing(b'{"ready": false, "new_check": false}') == "new_check false"


def rotation_after(*polls: dict[Replica, bool]) -> Rotation:
    rotation = Rotation()
    for poll in polls:
        rotation.update(poll.items())
    return rotation


def test_a_replica_enters_rotation_after_two_ready_polls_and_leaves_after_two_failed() -> None:
    up, down = {A: True, B: True}, {A: True, B: False}
    assert rotation_after(up).members([A, B]) == [A, B]  # none is in yet: all are
    assert rotation_after(up, down).members([A, B]) == [A]  # B never got in
    assert rotation_after(up, up, down).members([A, B]) == [A, B]  # one failure: stays
    assert rotation_after(up, up, down, down).members([A, B]) == [A]
    assert rotation_after(up, up, down, down, up).members([A, B]) == [A]  # one: stays out
    assert rotation_after(up, up, down, down, up, up).members([A, B]) == [A, B]


def test_flapping_readiness_never_moves_a_replica() -> None:
    up, down = {A: True, B: True}, {A: True, B: False}
    assert rotation_after(up, up, down, up, down, up, down).members([A, B]) == [A, B]


def test_when_no_replica_is_ready_all_are_in_rotation_so_pages_can_say_so() -> None:
    down = {A: False, B: False}
    assert rotation_after({A: True, B: True}, {A: True, B: True}, down, down).members([A, B]) == [
        A,
        B,
    ]


def test_a_replica_that_is_gone_is_forgotten() -> None:
    rotation = rotation_after({A: True, B: True}, {A: True, B: True}, {A: True})
    assert rotation.members([A, B]) == [A]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Resolver:
    """Answers what `answer` says; an OSError in it is raised."""

    def __init__(self, answer: list[str] | OSError) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, name: str, port: int) -> list[str]:
        self.calls += 1
        if isinstance(self.answer, OSError):
            raise self.answer
        return list(self.answer)


def test_discovery_re_resolves_every_few_seconds_and_keeps_the_last_good_answer() -> None:
    clock, resolver, lines = Clock(), Resolver(["10.0.0.2", "10.0.0.1"]), []
    discovery = Discovery("app", 8550, resolver, every_s=5, clock=clock, say=lines.append)
    assert discovery() == [A, B]
    resolver.answer = ["10.0.0.3"]
    clock.now = 4.9
    assert discovery() == [A, B]  # not due yet
    clock.now = 5.0
    assert discovery() == [C]
    resolver.answer = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    clock.now = 10.0
    assert discovery() == [C]
    assert lines == ["discover app: app does not resolve (Name or service not known)"]
    resolver.answer = ["10.0.0.3"]
    clock.now = 15.0
    assert discovery() == [C]
    assert lines[-1] == "discover app: resolves again"
    assert resolver.calls == 4


class RecordingNginx(Nginx):
    """An Nginx that records what it would run instead of running it."""

    def __init__(self) -> None:
        super().__init__("nginx", Path("/nonexistent"), Path("/nonexistent"), ("127.0.0.1", 1))
        self.configs: list[str] = []
        self.reloads = 0
        self.alive = False

    @property
    def running(self) -> bool:
        return self.alive

    def start(self, replicas: str) -> None:
        self.configs.append(replicas)
        self.alive = True

    def reload(self, replicas: str) -> None:
        self.configs.append(replicas)
        self.reloads += 1

    def stop(self) -> None:
        self.alive = False


class Polls:
    """A /readyz stand-in: every replica is ready except those in `down`."""

    def __init__(self, *down: Replica) -> None:
        self.down = set(down)

    def __call__(self, replica: Replica) -> Health:
        return Health(False, "not ready: x") if replica in self.down else Health(True, READY)


def test_discover_picks_up_a_changed_address_set_and_reloads_only_then() -> None:
    clock, resolver, lines = Clock(), Resolver(["10.0.0.1", "10.0.0.2"]), []
    discovery = Discovery("app", 8550, resolver, every_s=5, clock=clock)
    nginx = RecordingNginx()
    balancer = Balancer(nginx, discovery, lines.append, Polls())
    balancer.start()
    assert f"upstream cs_{A.id}" in nginx.configs[-1]
    for _ in range(3):
        assert not balancer.step()  # in rotation after two polls: the same config
    assert nginx.reloads == 0
    resolver.answer = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    clock.now = 5
    assert balancer.step()
    assert f"upstream cs_{C.id}" in nginx.configs[-1]
    assert f"replica {C.address} joined (id {C.id})" in lines
    resolver.answer = ["10.0.0.3"]
    clock.now = 10
    assert balancer.step()
    assert f"upstream cs_{A.id}" not in nginx.configs[-1]
    assert f"replica {A.address} left" in lines
    assert lines[-1] == f"nginx routes new sessions to replica {C.address}"


def test_a_replica_that_fails_twice_leaves_rotation_in_one_reload() -> None:
    nginx, lines, polls = RecordingNginx(), [], Polls()
    balancer = Balancer(nginx, lambda: [A, B], lines.append, polls)
    balancer.start()
    balancer.step()
    polls.down = {B}
    assert not balancer.step()
    assert lines[-1] == f"replica {B.address} not ready: x"
    assert balancer.step()
    assert nginx.reloads == 1
    assert lines[-1] == f"nginx routes new sessions to replica {A.address}"
    assert not balancer.step()


def test_with_no_replica_ready_the_line_says_pages_render_anyway() -> None:
    nginx, lines = RecordingNginx(), []
    balancer = Balancer(nginx, lambda: [A, B], lines.append, Polls(A, B))
    balancer.start()
    assert lines[-1] == (
        f"nginx routes new sessions to replicas {A.address},{B.address}"
        " (none is ready: pages render and say the store is down)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("app:8550", ("app", 8550)), ("[::1]:80", ("::1", 80)), (" 10.0.0.1:1 ", ("10.0.0.1", 1))],
)
def test_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("app", "not HOST:PORT"),
        (":80", "not HOST:PORT"),
        ("app:x", "is not a TCP port"),
        ("app:0", "is not a TCP port"),
        ("app:70000", "is not a TCP port"),
    ],
)
def test_bad_addresses_say_why(text: str, problem: str) -> None:
    with pytest.raises(AddressError, match=problem):
        parse_address(text)


def test_a_replica_list_keeps_its_order_without_repeats() -> None:
    assert parse_replicas("10.0.0.2:8550,10.0.0.1:8550,10.0.0.2:8550") == [B, A]


def balance_args(*argv: str) -> argparse.Namespace:
    """Parsed `balance` arguments; nginx is /bin/true unless given (nothing runs it)."""
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    nginx = [] if "--nginx" in argv else ["--nginx", "/bin/true"]
    return parser.parse_args(["balance", *nginx, *argv])


def test_balance_options_pass_with_a_list_or_a_name() -> None:
    listen = f"127.0.0.1:{free_port()}"
    options = command.check(balance_args("--listen", listen, "--replicas", "10.0.0.1:8550"))
    assert list(options.source()) == [A]
    discover = balance_args("--listen", listen, "--discover", "app:8550")
    assert isinstance(command.check(discover).source, Discovery)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "8080"], "--listen 8080: not HOST:PORT"),
        (["--listen", "127.0.0.1:0"], "--listen 127.0.0.1:0: '0' is not a TCP port"),
        (["--replicas", "a"], "--replicas a: not HOST:PORT"),
        (["--replicas", "a:1,b"], "--replicas a:1,b: 'b': not HOST:PORT"),
        (["--discover", "app"], "--discover app: not HOST:PORT"),
        (["--nginx", "/nonexistent/nginx"], "nginx not found (/nonexistent/nginx)"),
        (["--routing", "/nonexistent"], "--routing /nonexistent: no such file"),
        (["--interval", "0"], "--interval 0.0: must be between 0.05 and 60 seconds"),
    ],
)
def test_bad_balance_options_are_named(argv: list[str], message: str) -> None:
    if "--listen" not in argv:
        argv = [*argv, "--listen", f"127.0.0.1:{free_port()}"]
    if "--replicas" not in argv and "--discover" not in argv:
        argv = [*argv, "--replicas", "a:1"]
    with pytest.raises(UsageError) as raised:
        command.check(balance_args(*argv))
    assert str(raised.value).startswith(message)


def test_balance_refuses_a_listen_address_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"--listen 127.0.0.1:{port}: cannot listen there"):
            command.check(balance_args("--listen", f"127.0.0.1:{port}", "--replicas", "a:1"))
