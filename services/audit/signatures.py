"""Checkpoint signatures, witness cosignatures, and C2SP tlog-proof bundles, checked for the audit report."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.audit.report import Checks
from shared import logverify
from shared.note import Checkpoint, CosignatureVerifier, Verifier


@dataclass(frozen=True)
class Trust:
    """What the auditor is told to trust: the network's key, and which witnesses must have cosigned."""

    verifier: Verifier
    witnesses: list[CosignatureVerifier] = field(default_factory=list)
    quorum: int = 0


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: bytes
    text: str
    signed: bool  # the network key's signature verified


def check_checkpoint(note: bytes, trust: Trust, checks: Checks) -> SignedCheckpoint | None:
    """Check the checkpoint's signature under the network key and its origin; None if it is not a checkpoint."""
    check = "checkpoint.signature"
    try:
        verdict = logverify.read_checkpoint(note, trust.verifier)
    except logverify.LogVerifyError as exc:
        checks.fail(check, str(exc))
        return None
    for _, problem in verdict.problems:
        checks.fail(check, problem)
    if verdict.signed:
        checks.passed(check, f"signed by {verdict.key}, size {verdict.checkpoint.size:,}")
    return SignedCheckpoint(verdict.checkpoint, note, verdict.text, verdict.signed)


def check_witnesses(signed: SignedCheckpoint, trust: Trust, checks: Checks) -> None:
    """Count the valid cosignatures from the given witness keys; fewer than the quorum, or a bad one, fails."""
    check = "checkpoint.witnesses"
    if not trust.witnesses and trust.quorum == 0:
        checks.skip(check, "no witness keys given")
        return
    verdict = logverify.check_cosignatures(signed.note, trust.witnesses)
    for witness, why in verdict.bad:
        checks.fail(check, f"the cosignature of {witness} does not verify: {why}")
    valid = [
        f"{c.witness} at {datetime.fromtimestamp(c.timestamp, UTC).isoformat(timespec='seconds')}"
        for c in verdict.cosigned
    ]
    if len(valid) < trust.quorum:
        checks.fail(
            check,
            f"{len(valid)} valid cosignature(s) of the {trust.quorum} required"
            + (f"; none from {', '.join(verdict.missing)}" if verdict.missing else ""),
        )
    checks.passed(check, f"{len(valid)} of {len(trust.witnesses)} witnesses cosigned ({'; '.join(valid) or 'none'})")


@dataclass(frozen=True)
class ProofBundle:
    """A parsed C2SP tlog-proof: the entry (from ``extra``, if present), its index, the proof and the note."""

    entry: bytes | None
    index: int
    proof: list[bytes]
    note: bytes


def parse_proof_bundle(text: str) -> ProofBundle:
    """Parse a ``.tlog-proof`` strictly; raises ValueError when it is not one."""
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("no blank line between the proof and the checkpoint")
    lines = head.split("\n")
    if lines[0] != "c2sp.org/tlog-proof@v1":
        raise ValueError("the first line is not c2sp.org/tlog-proof@v1")
    rest = lines[1:]
    entry = None
    try:
        if rest and rest[0].startswith("extra "):
            entry = base64.b64decode(rest.pop(0)[6:], validate=True)
        if not rest or not rest[0].startswith("index "):
            raise ValueError("no index line")
        number = rest.pop(0)[6:]
        if not number.isdigit() or (number != "0" and number.startswith("0")):
            raise ValueError(f"index {number!r} is not a decimal without leading zeros")
        proof = [base64.b64decode(line, validate=True) for line in rest]
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from None
    return ProofBundle(entry, int(number), proof, note.encode())
