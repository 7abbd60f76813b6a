"""How a network is named on NATS: its subject token, its log stream, and the consumers it offers neighbours.

A log origin (``timebank.example/riverside``) holds characters that NATS subjects reserve, so each network is
known on NATS by a short name: by default the origin's last path segment, with anything but letters, digits,
``-`` and ``_`` replaced by ``_`` (``riverside``). Peers are configured explicitly, so a name that two neighbours
would share is refused when the second is added.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def network_name(origin: str) -> str:
    """The default NATS name of the network whose log origin is ``origin``."""
    last = origin.rstrip("/").rsplit("/", 1)[-1]
    return _UNSAFE.sub("_", last)[:64] or "network"


def log_subject(name: str) -> str:
    """The subject the network publishes its log batches on."""
    return f"timebank.{name}.log"


def log_stream(name: str) -> str:
    """The JetStream stream that holds the network's published log."""
    return f"timebank-{name}-log"


def peer_consumer(peer: str) -> str:
    """The durable consumer of our log stream that the neighbour ``peer`` reads from."""
    return f"peer-{peer}"


def witness_subject(name: str) -> str:
    """The subject the network's witness answers C2SP add-checkpoint requests on."""
    return f"timebank.{name}.witness"


def offers_bucket(name: str) -> str:
    """The JetStream key-value bucket the network keeps its shared offers in (key: the listing id)."""
    return f"timebank-{name}-offers"


def offers_stream(name: str) -> str:
    """The stream under the network's offers bucket (JetStream names a bucket's stream ``KV_<bucket>``)."""
    return f"KV_{offers_bucket(name)}"
