"""The balancer: nginx in front of the replicas, kept routing new sessions to the ready
ones. Each poll reads the replica list, asks every replica's /readyz, reports what
changed, and rewrites and reloads nginx only when the replica set or the rotation did,
as often as the reload budget allows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from counter_service.balancer.config import replicas_conf
from counter_service.balancer.health import READY, Health, probe, readable
from counter_service.balancer.nginx import Nginx
from counter_service.balancer.replicas import Replica
from counter_service.balancer.rotation import Clock, ReloadBudget, Rotation

Source = Callable[[], Sequence[Replica]]
Probe = Callable[[Replica], Health]
Say = Callable[[str], None]
MAX_PROBES = 32


class Balancer:
    """`nginx` routing to the replicas that `source` lists; status lines go to `say`."""

    def __init__(
        self,
        nginx: Nginx,
        source: Source,
        say: Say,
        check: Probe = probe,
        clock: Clock = time.monotonic,
    ) -> None:
        self.nginx, self.source, self.say, self.check = nginx, source, say, check
        self.rotation = Rotation(clock=clock)
        self.budget = ReloadBudget(clock=clock)
        self.replicas: list[Replica] = []
        self.states: dict[Replica, str] = {}
        self.routed: list[Replica] = []
        self._config = ""
        self._waiting = False
        """A changed configuration waits for the reload budget (said once)."""
        self._probes = ThreadPoolExecutor(MAX_PROBES, thread_name_prefix="readyz")

    def start(self) -> None:
        """Poll once and start nginx with what that found: the replicas ready now take
        new sessions from the start, the others once they are ready."""
        self._poll()
        self.routed = self.rotation.members(self.replicas)
        self._config = replicas_conf(self.replicas, self.routed)
        self.nginx.start(self._config)
        self._report_rotation()

    def step(self) -> bool:
        """One poll; True if nginx was reloaded. NginxError if nginx is not running."""
        if not self.nginx.running:
            raise self.nginx.error(f"nginx exited ({self.nginx.exit_status()})")
        self._poll()
        routed = self.rotation.members(self.replicas)
        config = replicas_conf(self.replicas, routed)
        if config == self._config or not self._may_reload():
            return False
        self.nginx.reload(config)
        self._config, self.routed = config, routed
        self._report_rotation()
        return True

    def stop(self) -> None:
        """Stop nginx and every worker of it; let running probes finish."""
        try:
            self.nginx.stop()
        finally:
            self._probes.shutdown(wait=True)

    def _may_reload(self) -> bool:
        if self.budget.take():
            self._waiting = False
            return True
        if not self._waiting:
            budget = self.budget
            self.say(
                f"nginx reloads wait: {budget.burst} in a row, then one every"
                f" {budget.every_s:g} s (old workers carry websockets meanwhile)"
            )
            self._waiting = True
        return False

    def _poll(self) -> None:
        replicas = list(self.source())
        self._report_set(replicas)
        healths = list(self._probes.map(self._checked, replicas))
        for replica, health in zip(replicas, healths, strict=True):
            if self.states.get(replica) != health.state:
                self.say(f"replica {replica.label} {health.state}")
        self.states = {r: h.state for r, h in zip(replicas, healths, strict=True)}
        polls = ((r, h.ready) for r, h in zip(replicas, healths, strict=True))
        for replica, hold in self.rotation.update(polls):
            self.say(f"replica {replica.label} flaps: back in rotation once ready for {hold:g} s")
        self.replicas = replicas

    def _checked(self, replica: Replica) -> Health:
        """`check(replica)`, whatever it raises: one replica's answer, however odd, must
        never stop the balancer for all the others."""
        try:
            return self.check(replica)
        except Exception as exc:
            why = readable(f"{type(exc).__name__}: {exc}")
            return Health(False, f"not ready: probe failed ({why})")

    def _report_set(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            if replica not in self.replicas:
                self.say(f"replica {replica.label} joined (id {replica.id})")
        for replica in self.replicas:
            if replica not in replicas:
                self.say(f"replica {replica.label} left")

    def _report_rotation(self) -> None:
        routed = [replica.label for replica in self.routed]
        if not routed:
            self.say("nginx has no replica to route to")
            return
        ready = any(self.states.get(r) == READY for r in self.routed)
        note = "" if ready else " (none is ready: pages render and say the store is down)"
        noun = "replica" if len(routed) == 1 else "replicas"
        self.say(f"nginx routes new sessions to {noun} {','.join(routed)}{note}")
