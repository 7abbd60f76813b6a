"""Checkpoint signatures, witness cosignatures, and C2SP tlog-proof bundles, checked for the audit report."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.audit.report import Checks
from shared.note import (
    Checkpoint,
    CosignatureVerifier,
    InvalidSignatureError,
    NoteError,
    Signature,
    UnverifiedNoteError,
    Verifier,
    open_note,
    parse_checkpoint,
    parse_signature_line,
    verify_cosignature,
)


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


def _split(note: bytes) -> tuple[str, list[str]]:
    """(text, signature lines) of a note, without verifying anything; raises NoteError if it has no blank line."""
    whole = note.decode("utf-8", "replace")
    cut = whole.rfind("\n\n")
    if cut < 0:
        raise NoteError("the checkpoint note has no blank line before its signatures")
    return whole[: cut + 1], [line for line in whole[cut + 2 :].split("\n") if line]


def check_checkpoint(note: bytes, trust: Trust, checks: Checks) -> SignedCheckpoint | None:
    """Check the checkpoint's signature under the network key and its origin; None if it is not a checkpoint."""
    check = "checkpoint.signature"
    try:
        text, _ = _split(note)
        checkpoint = parse_checkpoint(text)
    except NoteError as exc:
        checks.fail(check, f"the checkpoint cannot be read: {exc}")
        return None
    key = f"{trust.verifier.name}+{trust.verifier.key_id:08x}"
    signed = False
    try:
        open_note(note, [trust.verifier])
        signed = True
    except InvalidSignatureError:
        checks.fail(check, f"the signature under the network key {key} does not verify")
    except UnverifiedNoteError as exc:
        others = ", ".join(f"{s.name}+{s.key_id:08x}" for s in exc.note.unverified_signatures) or "nobody"
        checks.fail(check, f"the checkpoint is not signed by the network key {key} (signed by: {others})")
    except NoteError as exc:
        checks.fail(check, f"the checkpoint note is malformed: {exc}")
    if checkpoint.origin != trust.verifier.name:
        checks.fail(
            check, f"the checkpoint's origin {checkpoint.origin!r} is not the network's {trust.verifier.name!r}"
        )
    if signed:
        checks.passed(check, f"signed by {key}, size {checkpoint.size:,}")
    return SignedCheckpoint(checkpoint, note, text, signed)


def check_witnesses(signed: SignedCheckpoint, trust: Trust, checks: Checks) -> None:
    """Count the valid cosignatures from the given witness keys; fewer than the quorum, or a bad one, fails."""
    check = "checkpoint.witnesses"
    if not trust.witnesses and trust.quorum == 0:
        checks.skip(check, "no witness keys given")
        return
    lines: list[Signature] = []
    for line in _split(signed.note)[1]:
        try:
            lines.append(parse_signature_line(line))
        except NoteError:
            continue
    valid: list[str] = []
    missing: list[str] = []
    for witness in trust.witnesses:
        mine = [s for s in lines if (s.name, s.key_id) == (witness.name, witness.key_id)]
        if not mine:
            missing.append(witness.name)
            continue
        try:
            when = max(verify_cosignature(s.to_line(), signed.text, witness) for s in mine)
        except NoteError as exc:
            checks.fail(check, f"the cosignature of {witness.name} does not verify: {exc}")
            continue
        stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
        valid.append(f"{witness.name} at {stamp}")
    if len(valid) < trust.quorum:
        checks.fail(
            check,
            f"{len(valid)} valid cosignature(s) of the {trust.quorum} required"
            + (f"; none from {', '.join(missing)}" if missing else ""),
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
