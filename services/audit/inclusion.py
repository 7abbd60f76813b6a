"""``entry.inclusion``: one entry (by index, or in a saved C2SP tlog-proof) is included under a signed checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.audit.history import check_consistency
from services.audit.report import Checks
from services.audit.signatures import (
    ProofBundle,
    SignedCheckpoint,
    Trust,
    check_checkpoint,
    check_witnesses,
    parse_proof_bundle,
)
from services.audit.source import Source, SourceError
from services.audit.state import SeenCheckpoint
from services.ledger.entries import LogEntry, Transfer, entry_decoder
from shared import logverify

CHECK = "entry.inclusion"


def proof_files(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(name, text) of saved ``.tlog-proof`` files."""
    return [(str(p), p.read_text(encoding="utf-8")) for p in paths]


async def check_inclusions(
    checks: Checks,
    trust: Trust,
    source: Source | None,
    indexes: list[int],
    proofs: list[tuple[str, str]],
    seen: list[SeenCheckpoint] | None,
) -> tuple[list[SignedCheckpoint], int]:
    """Check each saved proof, and a proof fetched from the source for each index.

    Returns the checkpoints met and how many entries were shown to be included.
    """
    bundles = list(proofs)
    for index in indexes:
        assert source is not None
        try:
            bundles.append((f"entry {index}", await source.proof_bundle(index)))
        except SourceError as exc:
            checks.fail(CHECK, f"no proof for this entry: {exc}", index=index)
    met: list[SignedCheckpoint] = []
    included = 0
    for name, text in bundles:
        try:
            bundle = parse_proof_bundle(text)
        except ValueError as exc:
            checks.fail(CHECK, f"{name} is not a C2SP tlog-proof: {exc}")
            continue
        signed = check_checkpoint(bundle.note, trust, checks)
        if signed is None:
            checks.fail(CHECK, f"{name}: no readable checkpoint", index=bundle.index)
            continue
        met.append(signed)
        check_witnesses(signed, trust, checks)
        if _included(checks, name, bundle, signed):
            included += 1
        await check_consistency(checks, seen, source, signed)
    return met, included


def _included(checks: Checks, name: str, bundle: ProofBundle, signed: SignedCheckpoint) -> bool:
    cp = signed.checkpoint
    if bundle.entry is None:
        checks.fail(CHECK, f"{name} carries no entry bytes (no extra line)", index=bundle.index)
        return False
    try:
        logverify.verify_inclusion(bundle.entry, bundle.index, bundle.proof, cp)
    except logverify.LogVerifyError as exc:
        checks.fail(CHECK, f"{name}: {exc}", index=bundle.index)
        return False
    try:
        entry: LogEntry = entry_decoder.decode(bundle.entry)
        what = f"{type(entry).__struct_config__.tag}" + (f" {entry.id}" if isinstance(entry, Transfer) else "")
    except ValueError as exc:
        checks.fail("ledger.well_formed", f"{name}: the included entry does not decode: {exc}", index=bundle.index)
        what = "an entry that does not decode"
    checks.passed(CHECK, f"entry {bundle.index:,} ({what}) is in the checkpoint of size {cp.size:,}")
    return True
