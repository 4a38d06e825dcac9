"""Every Redis key and channel the service uses, built from the namespace in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

COUNTER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


class InvalidCounterName(ValueError):
    """A counter name that is not lower-case letters, digits and '_' (max 32)."""


def check_counter_name(name: str) -> str:
    """Return `name` if it is a valid counter name, raise `InvalidCounterName` otherwise."""
    if not COUNTER_NAME_RE.fullmatch(name):
        raise InvalidCounterName(
            f"counter name {name!r}: use 1-32 lower-case letters, digits or '_',"
            " starting with a letter"
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
    def channel(self) -> str:
        """The pub/sub channel that carries every counter change."""
        return f"{self.namespace}:events"

    def value(self, counter: str) -> str:
        """The string key holding a counter's value (readable with plain GET)."""
        return f"{self.namespace}:counter:{check_counter_name(counter)}"

    def version(self, counter: str) -> str:
        """The key holding a counter's version, bumped on every change."""
        return f"{self.namespace}:version:{check_counter_name(counter)}"

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
