"""``log.consistency``: the log against every checkpoint this auditor saw before (kept in the state file)."""

from __future__ import annotations

import base64

from services.audit.report import Checks, b64
from services.audit.signatures import SignedCheckpoint
from services.audit.source import Source, SourceError
from services.audit.state import SeenCheckpoint
from shared import logverify

CHECK = "log.consistency"
FIRST_SEEN = "no checkpoint of this log was seen before; this one is now remembered"


async def check_consistency(
    checks: Checks,
    seen: list[SeenCheckpoint] | None,
    source: Source | None,
    signed: SignedCheckpoint,
    tile_set: dict[tuple[int, int], bytes] | None = None,
) -> None:
    """Check the signed checkpoint against each one seen before (``seen`` is None without a state file).

    ``tile_set`` is the tree recomputed from the entries, given only when they make exactly the signed tree: the
    old roots are then recomputed from it. Otherwise each old checkpoint is linked to the new one by an RFC 9162
    consistency proof from the source.
    """
    if seen is None:
        checks.skip(CHECK, "no state file (--no-state)")
    elif not seen:
        checks.passed(CHECK, FIRST_SEEN)
    elif tile_set is not None:
        _recomputed(checks, seen, source, signed, tile_set)
    else:
        await _by_proofs(checks, seen, source, signed)


def _recomputed(
    checks: Checks,
    seen: list[SeenCheckpoint],
    source: Source | None,
    signed: SignedCheckpoint,
    tile_set: dict[tuple[int, int], bytes],
) -> None:
    size = signed.checkpoint.size
    matched = [0]
    for old in seen:
        try:
            logverify.verify_prefix(old.size, base64.b64decode(old.root), tile_set, size)
        except logverify.LogVerifyError as exc:
            if exc.reason == "shrank":
                _too_small(checks, source, old, size)
                continue
            found = b64(exc.root) if exc.root is not None else "another root"
            # The log still agrees with the biggest older checkpoint that matched: the rewrite is after it.
            since = max(s for s in matched if s <= old.size)
            checks.fail(
                CHECK,
                f"the first {old.size:,} entries hash to {found}, but the checkpoint of that size seen on "
                f"{old.seen_at} from {old.source} has root {old.root}: the log was rewritten, somewhere in entries "
                f"{since:,} to {old.size - 1:,}",
                index=since,
            )
            continue
        matched.append(old.size)
    checks.passed(CHECK, f"consistent with {len(seen)} checkpoint(s) seen before (recomputed from the entries)")


def _too_small(checks: Checks, source: Source | None, old: SeenCheckpoint, size: int) -> None:
    if source is not None and not source.holds_tiles:
        message = (
            f"the log shrank: its checkpoint has {size:,} entries, but one of {old.size:,} was seen on {old.seen_at}"
        )
    else:
        message = (
            f"this copy of the log ({size:,} entries) is older than the checkpoint of {old.size:,} entries seen on "
            f"{old.seen_at}; its consistency with it cannot be shown from the copy (audit with --no-state to "
            "check an old copy on its own)"
        )
    checks.fail(CHECK, message)


async def _by_proofs(
    checks: Checks, seen: list[SeenCheckpoint], source: Source | None, signed: SignedCheckpoint
) -> None:
    new = signed.checkpoint
    proved = 0
    unprovable = 0
    for old in seen:
        if old.size > new.size:
            _too_small(checks, source, old, new.size)
            continue
        # Only a tree strictly between empty and the new one needs a proof from the source.
        proof: list[bytes] = []
        try:
            if 0 < old.size < new.size:
                if source is None:
                    unprovable += 1
                    continue
                proof = await source.consistency_proof(old.size, new.size)
            logverify.verify_consistency(old.size, base64.b64decode(old.root), new.size, new.root_hash, proof)
            proved += 1
        except logverify.LogVerifyError as exc:
            if exc.reason == "fork":
                checks.fail(
                    CHECK,
                    f"a different checkpoint of the same size {old.size:,} was seen on {old.seen_at} "
                    f"from {old.source} (root {old.root}): the log was rewritten",
                )
                proved += 1
                continue
            _no_proof(checks, old, exc)
        except (SourceError, ValueError) as exc:
            _no_proof(checks, old, exc)
    if unprovable and not proved and not checks.failed(CHECK):
        checks.skip(CHECK, f"{unprovable} checkpoint(s) seen before can only be linked with the log itself")
    else:
        checks.passed(CHECK, f"consistent with {proved} checkpoint(s) seen before (by consistency proofs)")


def _no_proof(checks: Checks, old: SeenCheckpoint, exc: Exception) -> None:
    checks.fail(
        CHECK,
        f"no valid consistency proof from the checkpoint of size {old.size:,} seen on {old.seen_at} "
        f"(root {old.root}) to this one: {exc}",
    )
