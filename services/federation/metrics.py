"""The federation's Prometheus metrics: how far each neighbour's log is replicated, and what was refused."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REJECTED = Counter(
    "timebank_federation_rejected",
    "Messages from neighbours refused and never applied, by peer and reason (signature, origin, root, gap, ...).",
    ["peer", "reason"],
)
REPLICATED_SIZE = Gauge(
    "timebank_federation_replicated_entries",
    "Entries of the neighbour's log held in our verified copy.",
    ["peer"],
)
PUBLISHED_SIZE = Gauge(
    "timebank_federation_published_entries",
    "Entries of our own log published to our log stream.",
)
