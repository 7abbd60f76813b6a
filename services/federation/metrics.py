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
WITNESS_ANSWERS = Counter(
    "timebank_federation_witness_answers",
    "Answers our witness gave to add-checkpoint requests, by HTTP status (200 cosigned; 409, 403, 404, 422, 400).",
    ["status"],
)
ALERTS = Counter(
    "timebank_federation_alerts",
    "Alerts raised about a neighbour's log: fork (two checkpoints that cannot both be true).",
    ["peer", "kind"],
)
COSIGNED = Gauge(
    "timebank_federation_cosigned_size",
    "The size of our log that each witness last cosigned.",
    ["witness"],
)
COSIGN_FAILURES = Counter(
    "timebank_federation_cosign_failures",
    "Requests for a cosignature of our log that a witness did not answer with one, by witness and status.",
    ["witness", "status"],
)
