"""The routing of deploy/nginx/counter-service.conf through a real nginx, run by the
balancer in front of stand-in replicas (tiny HTTP servers that name themselves and answer
/readyz as told): who gets new browsers, who keeps pinned ones, who is re-pinned, and that
stopping the balancer leaves no nginx process. Real replicas: test_stack.py, test_balance.py."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from counter_service.balancer import config
from counter_service.balancer.config import MainOptions, replicas_conf, routing_file
from counter_service.balancer.core import Balancer, Source
from counter_service.balancer.nginx import Nginx, NginxError, find_nginx
from counter_service.balancer.replicas import Replica, ReplicaList
from counter_service.balancer.rotation import Clock
from counter_service.devtools.fleet import HOST, free_port
from tests.stack import alive, children_of

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (CI installs it)"),
]

REQUESTS = 30  # cookie-less requests: fewest connections and ties in turn reach every replica
NOBODY = 65534


@dataclass
class StandIn:
    """A replica stand-in: answers every path with its name, /readyz with `status`."""

    name: str
    status: int = 200
    server: ThreadingHTTPServer = field(init=False)

    def __post_init__(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # for the websocket's 101

            def do_GET(self) -> None:
                if self.path == "/ws":
                    self.hold_websocket()
                    return
                ready = self.path != "/readyz" or stand_in.status == 200
                body = json.dumps({"name": stand_in.name, "ready": ready}).encode()
                self.send_response(stand_in.status if self.path == "/readyz" else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def hold_websocket(self) -> None:
                """Switch protocols and hold the connection until the other side closes."""
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                with contextlib.suppress(OSError):
                    while self.rfile.read(1):
                        pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        serving = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        serving.start()

    @property
    def replica(self) -> Replica:
        return Replica(HOST, self.server.server_address[1], self.name)

    def kill(self) -> None:
        """Stop listening: connections are refused from now on."""
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Routed:
    balancer: Balancer
    stand_ins: dict[str, StandIn]
    port: int
    lines: list[str]

    def id_of(self, name: str) -> str:
        return self.stand_ins[name].replica.id

    def settle(self) -> None:
        """Two polls: what the replicas answer now decides the rotation."""
        self.balancer.step()
        self.balancer.step()


@dataclass(frozen=True)
class Answer:
    status: int
    served_by: str | None
    cookie: str | None
    """The `cs_replica` value nginx set, or None when it set none."""


def get(port: int, path: str = "/", cookie: str | None = None) -> Answer:
    """GET `path` through nginx on `port` as a browser with that cookie (or none)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        headers = {} if cookie is None else {"Cookie": f"cs_replica={cookie}"}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        set_cookie = response.getheader("Set-Cookie")
    finally:
        connection.close()
    served_by = json.loads(body)["name"] if body.startswith(b"{") else None
    value = set_cookie.split(";")[0].removeprefix("cs_replica=") if set_cookie else None
    return Answer(response.status, served_by, value)


def new_browsers(routed: Routed) -> set[str | None]:
    """Who serves REQUESTS cookie-less requests; each sets the cookie of its server."""
    answers = [get(routed.port) for _ in range(REQUESTS)]
    assert all(a.cookie == routed.id_of(str(a.served_by)) for a in answers)
    return {answer.served_by for answer in answers}


@contextlib.contextmanager
def routing(
    tmp_path: Path,
    not_ready: str = "",
    source: Callable[[list[Replica]], Source] | None = None,
    clock: Clock = time.monotonic,
) -> Iterator[Routed]:
    """nginx run by the balancer in front of stand-ins a, b and c, started with those in
    `not_ready` answering 503; `source` makes the replica list from their replicas."""
    stand_ins = {name: StandIn(name, 503 if name in not_ready else 200) for name in "abc"}
    port = free_port()
    directory, log = tmp_path / "nginx", tmp_path / "nginx.log"
    main = MainOptions(workers="1")
    nginx = Nginx(str(find_nginx()), directory, routing_file(), (HOST, port), main, log=log)
    replicas = [stand_in.replica for stand_in in stand_ins.values()]
    lines: list[str] = []
    listed = source(replicas) if source else lambda: replicas
    balancer = Balancer(nginx, listed, lines.append, clock=clock)
    try:
        balancer.start()
        yield Routed(balancer, stand_ins, port, lines)
    finally:
        balancer.stop()
        for stand_in in stand_ins.values():
            stand_in.kill()


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[Routed]:
    with routing(tmp_path) as running:
        running.settle()
        yield running


def test_new_browsers_spread_over_every_ready_replica_and_are_pinned_to_it(routed: Routed) -> None:
    assert new_browsers(routed) == {"a", "b", "c"}


def test_from_the_start_a_replica_that_is_not_ready_gets_no_new_browsers(tmp_path: Path) -> None:
    with routing(tmp_path, not_ready="b") as routed:
        assert new_browsers(routed) == {"a", "c"}  # before any second poll
        assert routed.lines[-1] == "nginx routes new sessions to replicas a,c"


def by_name(replicas: list[Replica]) -> Source:
    """The stand-ins as `--replicas localhost:PORT,...` names them."""
    return ReplicaList([Replica("localhost", replica.port) for replica in replicas])


def test_replicas_given_by_name_are_pinned_by_their_address(tmp_path: Path) -> None:
    with routing(tmp_path, source=by_name) as routed:
        first = get(routed.port)
        assert first.status == 200
        served = Replica(HOST, routed.stand_ins[str(first.served_by)].replica.port)
        assert first.cookie == served.id
        assert get(routed.port, cookie=first.cookie) == Answer(200, first.served_by, None)


def open_websocket(port: int) -> socket.socket:
    """A websocket through nginx (the handshake only), held open by the caller."""
    sock = socket.create_connection((HOST, port), timeout=30)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flapping_replica_leaves_few_nginx_workers_behind(tmp_path: Path) -> None:
    # The second audit: /readyz flipping every 0.5 s and a websocket opened every poll
    # left 60 nginx workers (58 shutting down, each holding websockets) after 30 s.
    clock = FakeClock()
    with routing(tmp_path, clock=clock) as routed, contextlib.ExitStack() as held:
        flapping = routed.stand_ins["b"]
        for poll in range(40):  # 10 s of polls every 0.25 s, /readyz flipping every 0.5 s
            held.enter_context(open_websocket(routed.port))
            if poll % 2 == 0:
                flapping.status = 503 if flapping.status == 200 else 200
            clock.now += 0.25
            routed.balancer.step()
        # The generation that runs, and one per reload: out, back in, out and held.
        assert len(routed.balancer.nginx.workers()) <= 4
        assert any("flaps: back in rotation once ready for 5 s" in x for x in routed.lines)


def test_a_pinned_browser_stays_and_is_not_told_again(routed: Routed) -> None:
    answers = [get(routed.port, cookie=routed.id_of("b")) for _ in range(10)]
    assert {(a.served_by, a.cookie) for a in answers} == {("b", None)}


def test_a_replica_that_is_up_but_not_ready_keeps_its_browsers_and_gets_no_new_ones(
    routed: Routed,
) -> None:
    routed.stand_ins["b"].status = 503
    routed.settle()
    assert "replica b not ready: HTTP 503" in routed.lines
    assert routed.lines[-1] == "nginx routes new sessions to replicas a,c"
    assert new_browsers(routed) == {"a", "c"}
    assert get(routed.port, cookie=routed.id_of("b")) == Answer(200, "b", None)
    routed.stand_ins["b"].status = 200
    routed.settle()
    assert routed.lines[-1] == "nginx routes new sessions to replicas a,b,c"
    assert new_browsers(routed) == {"a", "b", "c"}


def test_a_dead_replicas_browsers_are_re_pinned_to_a_ready_one(routed: Routed) -> None:
    routed.stand_ins["a"].status = 503  # first in the list: nginx would try it first
    routed.settle()
    routed.stand_ins["b"].kill()  # before the balancer notices: nginx's passive health
    moved = {get(routed.port, cookie=routed.id_of("b")) for _ in range(10)}  # ten browsers
    assert moved == {Answer(200, "c", routed.id_of("c"))}  # the only other one in rotation
    assert get(routed.port, cookie=routed.id_of("c")) == Answer(200, "c", None)
    assert new_browsers(routed) == {"c"}


@pytest.mark.parametrize("cookie", ["0123456789", "a:b", "", "x" * 100])
def test_a_cookie_that_names_no_replica_gets_a_new_one(routed: Routed, cookie: str) -> None:
    answer = get(routed.port, cookie=cookie)
    assert answer.served_by in {"a", "b", "c"}
    assert answer.cookie == routed.id_of(str(answer.served_by))


def test_when_no_replica_answers_nginx_says_502_and_pins_nobody(routed: Routed) -> None:
    for stand_in in routed.stand_ins.values():
        stand_in.kill()
    assert get(routed.port) == Answer(502, None, None)
    assert get(routed.port, cookie=routed.id_of("a")) == Answer(502, None, None)


def test_metrics_stay_inside_and_nginx_answers_its_own_health(routed: Routed) -> None:
    assert get(routed.port, "/metrics") == Answer(404, None, None)
    assert get(routed.port, "/metrics.json").status == 404
    assert get(routed.port, "/balancer/healthz") == Answer(200, None, None)


def test_stopping_the_balancer_leaves_no_nginx_process(routed: Routed) -> None:
    nginx = routed.balancer.nginx
    pids = [nginx.pid, *nginx.workers()]
    assert len(pids) == 2
    routed.balancer.stop()
    assert not [pid for pid in pids if pid is not None and alive(pid)]


def test_when_the_master_dies_its_workers_are_stopped_too(routed: Routed) -> None:
    nginx = routed.balancer.nginx
    workers = nginx.workers()
    assert nginx.pid is not None
    assert workers
    assert nginx.proc is not None
    os.kill(nginx.pid, signal.SIGKILL)
    nginx.proc.wait()
    assert all(alive(pid) for pid in workers)  # orphans, still holding the port
    with pytest.raises(NginxError, match="nginx exited"):
        routed.balancer.step()
    routed.balancer.stop()
    assert not [pid for pid in workers if alive(pid)]


@pytest.fixture
def nobodys_directory() -> Iterator[Path]:
    """A directory outside root's 0700 temporary ones, for nginx as nobody."""
    directory = Path(tempfile.mkdtemp(prefix="balancer-nobody-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to an unprivileged user needs root")
def test_nginx_serves_the_balancers_files_as_an_unprivileged_user_as_in_the_image(
    nobodys_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # compose's image runs the balancer, so nginx, as a user that is not root: no `user`
    # line then, and nginx writes only into the balancer's directory.
    monkeypatch.setattr(config.os, "geteuid", lambda: NOBODY)
    stand_in, port = StandIn("a"), free_port()
    target = Nginx(str(find_nginx()), nobodys_directory, routing_file(), (HOST, port))
    target.write(replicas_conf([stand_in.replica], [stand_in.replica]))
    for path in [nobodys_directory, *nobodys_directory.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    argv = [target.binary, "-p", str(nobodys_directory), "-c", str(target.config), "-e", "stderr"]
    nobody = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    proc = subprocess.Popen([*argv, "-g", "daemon off;"], stderr=subprocess.PIPE, **nobody)
    try:
        deadline = time.monotonic() + 30
        while not answers(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a port: nothing to wait on
        assert get(port) == Answer(200, "a", stand_in.replica.id)
        pids = [proc.pid, *children_of(proc.pid)]
        assert len(pids) >= 2
        assert {os.stat(f"/proc/{pid}").st_uid for pid in pids} == {NOBODY}
    finally:
        proc.terminate()
        errors = proc.communicate(timeout=30)[1].decode()
        stand_in.kill()
    assert "[emerg]" not in errors
    assert "[alert]" not in errors
