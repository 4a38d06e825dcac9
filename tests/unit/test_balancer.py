"""The balancer's decisions without a network: readiness in words, the rotation's
hysteresis, DNS discovery with an injected resolver, when nginx is reloaded, and the
checks of `counter-service balance` (nginx itself: test_nginx.py, e2e/test_routing.py)."""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from counter_service.balancer import command
from counter_service.balancer.command import UsageError
from counter_service.balancer.config import replicas_conf
from counter_service.balancer.core import Balancer
from counter_service.balancer.health import MAX_REASON, READY, Health, missing, probe
from counter_service.balancer.nginx import Nginx
from counter_service.balancer.replicas import (
    AddressError,
    Discovery,
    Replica,
    ReplicaList,
    parse_address,
    parse_replicas,
)
from counter_service.balancer.rotation import STABLE_S, ReloadBudget, Rotation, hold_s
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


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"tasks_down": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"\xff\xfe{",
        b"",
    ],
    ids=["nested-list", "nested-in-report", "not-utf8", "empty"],
)
def test_readiness_of_a_body_that_cannot_be_read_names_nothing(body: bytes) -> None:
    assert missing(body) == ""


def test_a_readiness_line_is_one_short_line_whatever_the_replica_says() -> None:
    body = {"tasks_down": ["relay\nprobe\x00", *(f"task-{n}" for n in range(1000))]}
    line = missing(json.dumps(body).encode())
    assert line.startswith("tasks_down: relay probe ; task-0; task-1")
    assert len(line) == MAX_REASON
    assert line.endswith("...")
    assert line.isprintable()


class Answering(BaseHTTPRequestHandler):
    """/readyz answering 503 with the body the test sets on the server."""

    def do_GET(self) -> None:
        body: bytes = self.server.body  # type: ignore[attr-defined]  # set by the test
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_deeply_nested_503_is_a_plain_not_ready(answering: HTTPServer) -> None:
    answering.body = b"[" * 60_000  # type: ignore[attr-defined]
    replica = Replica("127.0.0.1", answering.server_address[1])
    assert probe(replica) == Health(False, "not ready: HTTP 503")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rotation_after(*polls: dict[Replica, bool], clock: Clock | None = None) -> Rotation:
    """A rotation after `polls`, one second apart on `clock` (its own if none is given)."""
    clock = clock or Clock()
    rotation = Rotation(clock=clock)
    for poll in polls:
        rotation.update(poll.items())
        clock.now += 1
    return rotation


def test_at_start_the_replicas_ready_on_the_first_poll_are_in_rotation_at_once() -> None:
    assert rotation_after({A: True, B: False}).members([A, B]) == [A]
    assert rotation_after({A: True, B: True}).members([A, B]) == [A, B]


def test_a_replica_enters_rotation_after_two_ready_polls_and_leaves_after_two_failed() -> None:
    start, up, down = {A: True, B: False}, {A: True, B: True}, {A: True, B: False}
    assert rotation_after(start, up).members([A, B]) == [A]  # one ready poll: not yet
    assert rotation_after(start, up, up).members([A, B]) == [A, B]
    assert rotation_after(start, up, up, down).members([A, B]) == [A, B]  # one failure: stays
    assert rotation_after(start, up, up, down, down).members([A, B]) == [A]
    assert rotation_after(start, up, up, down, down, up).members([A, B]) == [A]
    assert rotation_after(start, up, up, down, down, up, up).members([A, B]) == [A, B]


def test_a_replica_that_joins_later_waits_for_two_ready_polls() -> None:
    rotation = rotation_after({A: True}, {A: True, B: True})
    assert rotation.members([A, B]) == [A]


def test_readiness_that_alternates_every_poll_never_moves_a_replica() -> None:
    up, down = {A: True, B: True}, {A: True, B: False}
    assert rotation_after(up, up, down, up, down, up, down).members([A, B]) == [A, B]


def test_when_no_replica_is_ready_all_are_in_rotation_so_pages_can_say_so() -> None:
    assert rotation_after({A: False, B: False}).members([A, B]) == [A, B]
    up, down = {A: True, B: True}, {A: False, B: False}
    assert rotation_after(up, up, down, down).members([A, B]) == [A, B]


def test_a_replica_that_is_gone_is_forgotten() -> None:
    rotation = rotation_after({A: True, B: True}, {A: True, B: True}, {A: True})
    assert rotation.members([A, B]) == [A]


def test_each_flap_doubles_the_hold_down_up_to_five_minutes() -> None:
    assert [hold_s(flaps) for flaps in range(1, 10)] == [0, 5, 10, 20, 40, 80, 160, 300, 300]


def flap(rotation: Rotation, clock: Clock, replica: Replica) -> list[tuple[Replica, float]]:
    """Two failed polls of `replica` (A stays ready), a second apart; what they held."""
    held = []
    for _ in range(2):
        held += rotation.update({A: True, replica: False}.items())
        clock.now += 1
    return held


def polls_until_back(rotation: Rotation, clock: Clock, limit: int = 1000) -> int:
    """Ready polls of B, a second apart, until it is in rotation again."""
    for count in range(1, limit + 1):
        rotation.update({A: True, B: True}.items())
        clock.now += 1
        if B in rotation.members([A, B]):
            return count
    raise AssertionError(f"B not back after {limit} ready polls")


def test_a_flapping_replica_stays_out_until_it_has_been_ready_for_its_hold_down() -> None:
    clock = Clock()
    rotation = rotation_after({A: True, B: True}, clock=clock)
    assert flap(rotation, clock, B) == []  # the first exit costs nothing
    assert polls_until_back(rotation, clock) == 2
    assert flap(rotation, clock, B) == [(B, 5.0)]
    assert polls_until_back(rotation, clock) == 6  # ready since its first poll, 5 s later
    assert flap(rotation, clock, B) == [(B, 10.0)]
    assert polls_until_back(rotation, clock) == 11


def test_a_failed_poll_restarts_the_hold_down() -> None:
    clock = Clock()
    rotation = rotation_after({A: True, B: True}, clock=clock)
    flap(rotation, clock, B)
    polls_until_back(rotation, clock)
    assert flap(rotation, clock, B) == [(B, 5.0)]
    for _ in range(4):  # ready for 4 of its 5 seconds
        rotation.update({A: True, B: True}.items())
        clock.now += 1
    rotation.update({A: True, B: False}.items())
    clock.now += 1
    assert polls_until_back(rotation, clock) == 6


def test_a_minute_in_rotation_forgets_the_flaps() -> None:
    clock = Clock()
    rotation = rotation_after({A: True, B: True}, clock=clock)
    flap(rotation, clock, B)
    polls_until_back(rotation, clock)
    clock.now += STABLE_S
    assert flap(rotation, clock, B) == []
    assert polls_until_back(rotation, clock) == 2


def test_reloads_come_three_in_a_row_then_one_every_ten_seconds() -> None:
    clock = Clock()
    budget = ReloadBudget(clock=clock)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 9.9
    assert not budget.take()
    clock.now = 10
    assert budget.take()
    assert not budget.take()
    clock.now = 1000
    assert [budget.take() for _ in range(4)] == [True, True, True, False]  # no more saved


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


def new_sessions(config: str) -> list[str]:
    """The servers of cs_new in a replicas.conf."""
    lines = config.splitlines()
    start = lines.index("upstream cs_new {")
    block = lines[start + 1 : lines.index("}", start)]
    return [line.split()[1] for line in block if line.strip().startswith("server")]


def test_at_start_a_replica_that_is_not_ready_gets_no_new_sessions() -> None:
    nginx = RecordingNginx()
    Balancer(nginx, lambda: [A, B], [].append, Polls(B)).start()
    assert new_sessions(nginx.configs[0]) == [A.address]


class Flapping:
    """/readyz of B flips every `period_s` on `clock` (it starts ready); A is always ready."""

    def __init__(self, clock: Clock, period_s: float) -> None:
        self.clock, self.period_s = clock, period_s

    def __call__(self, replica: Replica) -> Health:
        if replica == B and int(self.clock.now / self.period_s) % 2:
            return Health(False, "not ready: x")
        return Health(True, READY)


def test_a_replica_flapping_every_half_second_stays_out_after_three_reloads() -> None:
    # The second audit's case: /readyz flipping every 0.5 s, polled every 0.2 s, had
    # nginx reloaded 40 times in 30 s.
    clock, nginx, lines = Clock(), RecordingNginx(), []
    balancer = Balancer(nginx, lambda: [A, B], lines.append, Flapping(clock, 0.5), clock)
    balancer.start()
    for _ in range(150):
        clock.now += 0.2
        balancer.step()
    assert nginx.reloads == 3  # out, back (a first exit costs nothing), out and held
    assert new_sessions(nginx.configs[-1]) == [A.address]
    assert f"replica {B.address} flaps: back in rotation once ready for 5 s" in lines


def test_changes_that_come_faster_than_the_reload_budget_wait_for_it() -> None:
    clock, lines = Clock(), []
    resolver = Resolver(["10.0.0.1"])
    discovery = Discovery("app", 8550, resolver, every_s=1, clock=clock)
    nginx = RecordingNginx()
    balancer = Balancer(nginx, discovery, lines.append, Polls(), clock)
    balancer.start()
    for second in range(1, 61):  # the replica set changes every second for a minute
        clock.now = second
        resolver.answer = ["10.0.0.1"] + (["10.0.0.2"] if second % 2 else [])
        balancer.step()
    assert 3 < nginx.reloads <= 3 + 6  # three in a row, then one every 10 s at most
    assert sum(line.startswith("nginx reloads wait") for line in lines) > 1
    resolver.answer = ["10.0.0.3"]
    clock.now += 10
    assert balancer.step()  # the latest set, once the budget allows
    assert f"upstream cs_{C.id}" in nginx.configs[-1]


def test_a_probe_that_raises_is_a_not_ready_replica_and_the_balancer_goes_on() -> None:
    def broken(replica: Replica) -> Health:
        if replica == B:
            raise RecursionError("maximum recursion depth exceeded")
        return Health(True, READY)

    nginx, lines = RecordingNginx(), []
    balancer = Balancer(nginx, lambda: [A, B], lines.append, broken)
    balancer.start()
    balancer.step()
    assert balancer.states[B] == (
        "not ready: probe failed (RecursionError: maximum recursion depth exceeded)"
    )
    assert new_sessions(nginx.configs[-1]) == [A.address]


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


def test_replica_names_are_resolved_to_addresses_and_re_resolved() -> None:
    clock, lines = Clock(), []
    resolver = Resolver(["10.0.0.2"])
    given = parse_replicas("app:8550,10.0.0.1:8550")
    replicas = ReplicaList(given, resolver, clock=clock, say=lines.append)
    assert replicas() == [B, A]
    resolver.answer = ["10.0.0.3"]
    clock.now = 5
    assert replicas() == [C, A]
    assert resolver.calls == 2  # only the name is resolved


def test_a_replica_name_that_does_not_resolve_is_no_replica_until_it_does() -> None:
    clock, lines = Clock(), []
    resolver = Resolver(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    replicas = ReplicaList(
        parse_replicas("h:1,10.0.0.1:8550"), resolver, clock=clock, say=lines.append
    )
    assert replicas() == [A]
    assert lines == ["discover h: h does not resolve (Name or service not known)"]
    resolver.answer = ["10.0.0.2"]
    clock.now = 5
    assert replicas() == [Replica("10.0.0.2", 1), A]


def test_what_nginx_gets_for_a_replica_name_is_its_address() -> None:
    replicas = ReplicaList(parse_replicas("app:8550"), Resolver(["10.0.0.1"]))()
    config = replicas_conf(replicas, replicas)
    assert "app:8550" not in config
    assert f'"10.0.0.1:8550" {A.id};' in config


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
        (
            ["--access-log", "/nonexistent/dir/a.log"],
            "--access-log /nonexistent/dir/a.log: no such directory /nonexistent/dir",
        ),
        (["--access-log", "/tmp"], "--access-log /tmp: a directory, not a file"),
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


def test_balance_options_accept_names_as_replicas() -> None:
    listen = f"127.0.0.1:{free_port()}"
    options = command.check(balance_args("--listen", listen, "--replicas", "app:8550"))
    assert isinstance(options.source, ReplicaList)


def test_a_bad_access_log_fails_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    argv = ["--listen", f"127.0.0.1:{free_port()}", "--replicas", "127.0.0.1:1"]
    args = balance_args(*argv, "--access-log", str(tmp_path / "missing" / "a.log"))
    assert command.run(args) == 2
    assert "--access-log" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_balance_leaves_no_directory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "nginx"
    broken.write_text("#!/bin/sh\necho '[emerg] this nginx is broken' >&2\nexit 1\n")
    broken.chmod(0o755)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    argv = ["--listen", f"127.0.0.1:{free_port()}", "--replicas", f"127.0.0.1:{free_port()}"]
    assert command.run(balance_args(*argv, "--nginx", str(broken))) == 1
    assert "nginx exited (status 1) while listening" in capsys.readouterr().err
    assert list(temp.iterdir()) == []
