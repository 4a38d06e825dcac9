"""Every Redis key and channel the service uses, built from the namespace in one place.

A counter's keys carry its name as a Redis Cluster hash tag (`{name}`), so they share one
slot and one script can check and change both atomically on a cluster too. That is why
counter names never contain braces.

Channels come in two layouts. On a single server (or a Sentinel-managed one), one
channel carries every counter change and one every app message: a worker subscribes
to both once. On a cluster, sharded pub/sub keeps each channel on the shard that owns
its slot, so each counter's changes go out on a channel in its own slot (its script
can `SPUBLISH` there atomically) and each topic's messages on a channel of their own:
a worker subscribes to the channels of what its pages watch, and each shard carries
only its own traffic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from counter_service.errors import InvalidCounterName

COUNTER_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
ONLINE = "online"
"""The counter the service keeps itself: live connections over every worker."""
PROBE = "probe"
"""The hash tag of the keys and channel the start probe uses (never a counter's keys)."""


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
    """Key and channel names under one namespace; `sharded` selects the cluster layout.

    Redis channels are global across database numbers, so the namespace prefixes
    channels as well as keys: two deployments on one Redis stay apart.
    """

    namespace: str
    sharded: bool = False

    @property
    def publish_command(self) -> str:
        """`SPUBLISH` on a cluster (sharded pub/sub), `PUBLISH` elsewhere."""
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def counter_channel(self, counter: str) -> str:
        """The channel that carries `counter`'s changes."""
        if self.sharded:
            return f"{self.namespace}:events:{{{check_counter_name(counter)}}}"
        return f"{self.namespace}:events"

    def topic_channel(self, topic: str | None) -> str:
        """The channel that carries app messages of `topic` (None: `send_all`)."""
        if not self.sharded:
            return f"{self.namespace}:messages"
        if topic is None:
            return f"{self.namespace}:messages:{{*}}"
        # A topic is any text: its hash, not the text, becomes the hash tag.
        digest = hashlib.blake2s(topic.encode(), digest_size=8).hexdigest()
        return f"{self.namespace}:messages:{{{digest}}}"

    @property
    def static_channels(self) -> tuple[str, ...]:
        """The channels every worker subscribes to whatever its pages do."""
        if self.sharded:
            return (self.topic_channel(None),)
        return (self.counter_channel(ONLINE), self.topic_channel(None))

    def value(self, counter: str) -> str:
        """The string key holding a counter's value (readable with plain GET)."""
        return f"{self.namespace}:counter:{{{check_counter_name(counter)}}}"

    def version(self, counter: str) -> str:
        """The key holding a counter's version, bumped on every change."""
        return f"{self.namespace}:version:{{{check_counter_name(counter)}}}"

    @property
    def presence(self) -> str:
        """The hash of every worker's live connections and their deadlines (in the
        `online` counter's slot, so one script updates both)."""
        return f"{self.namespace}:presence:{{{ONLINE}}}"

    @property
    def probe_keys(self) -> tuple[str, str, str]:
        """A value, a version and a presence hash for the start probe to run the scripts
        on: outside every counter's keys, and in one slot."""
        base = f"{self.namespace}:probe:{{{PROBE}}}"
        return f"{base}:value", f"{base}:version", f"{base}:presence"

    @property
    def probe_channel(self) -> str:
        """The channel the start probe publishes and subscribes to (in its keys' slot)."""
        return f"{self.namespace}:probe:{{{PROBE}}}"
