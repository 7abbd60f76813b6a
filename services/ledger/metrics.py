"""The ledger writer's Prometheus metrics: batch sizes, batches written or failed, and commands waiting.

They live in prometheus_client's default registry, which every app's ``/metrics`` serves. The writer records them
once per batch: labelled children are bound here, once, so recording is a plain increment or observation.
"""

from __future__ import annotations

from collections.abc import Sized

from prometheus_client import Counter, Gauge, Histogram

# Powers of two up to past the largest batch the writer takes (ledger.max_batch, 2000 by default).
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, float("inf"))

BATCH_COMMANDS = Histogram(
    "timebank_ledger_batch_commands",
    "Commands decided and committed together in one group-commit transaction.",
    buckets=_BATCH_BUCKETS,
)
_BATCHES = Counter(
    "timebank_ledger_batches",
    "Group-commit batches, by outcome: written (committed and answered) or failed (their callers got an error).",
    ["outcome"],
)
BATCHES_WRITTEN = _BATCHES.labels(outcome="written")
BATCHES_FAILED = _BATCHES.labels(outcome="failed")

QUEUE_DEPTH = Gauge(
    "timebank_ledger_queue_depth",
    "Commands submitted and waiting for the group-commit writer to take them into a batch.",
)

# The queues of the writers running in this process. The gauge reads their lengths when it is scraped, so the
# writer's hot path does nothing for it.
_queues: list[Sized] = []
QUEUE_DEPTH.set_function(lambda: float(sum(len(queue) for queue in _queues)))


def watch_queue(queue: Sized) -> None:
    """Count this writer's queue in the queue depth gauge (until ``unwatch_queue``)."""
    _queues.append(queue)


def unwatch_queue(queue: Sized) -> None:
    """Stop counting this writer's queue."""
    _queues[:] = [q for q in _queues if q is not queue]
