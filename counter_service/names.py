"""Every Redis key and channel the service uses, built from the namespace in one place.

A counter's two keys carry its name as a Redis Cluster hash tag (`{name}`), so they
share one slot and one script can check and change both atomically on a cluster too.
That is why counter names never contain braces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from counter_service.errors import InvalidCounterName

COUNTER_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
ONLINE = "online"
"""The counter the service keeps itself: live connections over every worker."""


def check_counter_name(name: object) -> str:
    """Return `name` if it is a valid counter name, raise `InvalidCounterName` otherwise."""
    if not isinstance(name, str) or not COUNTER_NAME_RE.fullmatch(name):
        raise InvalidCounterName(
            f"counter name {name!r}: use 1-200 letters, digits or '_', '-', '.', ':'"
            " (for example 'likes:post-42')"
        )
    return name


@dataclass(frozen=True)
class Names:
    """Key and channel names under one namespace.

    Redis channels are global across database numbers, so the namespace prefixes
    channels as well as keys: two deployments on one Redis stay apart.
    """

    namespace: str

    @property
    def counter_events(self) -> str:
        """The channel that carries every counter change."""
        return f"{self.namespace}:events"

    @property
    def messages(self) -> str:
        """The channel that carries the apps' pub/sub messages, every topic in one order."""
        return f"{self.namespace}:messages"

    def value(self, counter: str) -> str:
        """The string key holding a counter's value (readable with plain GET)."""
        return f"{self.namespace}:counter:{{{check_counter_name(counter)}}}"

    def version(self, counter: str) -> str:
        """The key holding a counter's version, bumped on every change."""
        return f"{self.namespace}:version:{{{check_counter_name(counter)}}}"

    @property
    def presence_workers(self) -> str:
        """The set of worker ids that reported live connections."""
        return f"{self.namespace}:presence:workers"

    @property
    def presence_prefix(self) -> str:
        """Prefix of the expiring per-worker connection-count keys."""
        return f"{self.namespace}:presence:worker:"

    def presence_worker(self, worker_id: str) -> str:
        """The expiring key holding one worker's live connection count."""
        return self.presence_prefix + worker_id
