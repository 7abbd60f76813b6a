"""Verifying a transparency log from the outside: its signed checkpoints, its entries, and its history.

The one place each rule lives, for the auditor and for a neighbour replicating the log: a checkpoint note is
signed by the log's key (and cosigned by witnesses), a batch of stored entries appended to a known tree makes
the signed root, an entry is included under a checkpoint, and a later checkpoint extends an earlier one. Pure:
nothing here reads files or the network. Refusals raise ``LogVerifyError``, whose ``reason`` says which rule
failed; checks a caller reports piece by piece (the witnesses) return result objects instead.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from shared import merkle, tiles
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

__all__ = [
    "CheckpointVerdict",
    "Cosignature",
    "LogVerifyError",
    "Reason",
    "TreeState",
    "WitnessVerdict",
    "check_cosignatures",
    "check_root",
    "read_checkpoint",
    "root_from_tiles",
    "verify_batch",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_prefix",
]

Reason = Literal[
    "malformed",  # the note is not a checkpoint
    "signature",  # not signed by the log's key, or its signature does not verify
    "origin",  # signed, but for another log
    "gap",  # a batch does not start where the known tree ends
    "size",  # a batch does not make a tree of the checkpoint's size
    "root",  # entries do not hash into the signed root
    "inclusion",  # an inclusion proof does not lead to the signed root
    "shrank",  # a later checkpoint is smaller than an earlier one
    "fork",  # two checkpoints of the same size with different roots
    "inconsistent",  # a later checkpoint does not extend an earlier one
]


class LogVerifyError(ValueError):
    """The log, or what it was checked against, did not verify; ``reason`` names the rule, ``index`` an entry."""

    def __init__(self, reason: Reason, message: str, *, index: int | None = None, root: bytes | None = None) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.index = index
        # The root recomputed from the entries, when that is what disagreed.
        self.root = root


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ---- checkpoints and cosignatures ----


def _split(note: bytes) -> tuple[str, list[str]]:
    """(text, signature lines) of a note, without verifying anything; raises NoteError if it has no blank line."""
    whole = note.decode("utf-8", "replace")
    cut = whole.rfind("\n\n")
    if cut < 0:
        raise NoteError("the checkpoint note has no blank line before its signatures")
    return whole[: cut + 1], [line for line in whole[cut + 2 :].split("\n") if line]


def _key_name(name: str, key_id: int) -> str:
    return f"{name}+{key_id:08x}"


@dataclass(frozen=True, slots=True)
class CheckpointVerdict:
    """A readable checkpoint note and what is wrong with it: ``problems`` is empty when the log's key signed it."""

    checkpoint: Checkpoint
    note: bytes
    text: str
    key: str  # the log key's name+id, as people read it
    signed: bool  # the log key's signature verified
    problems: tuple[tuple[Reason, str], ...]

    @property
    def trusted(self) -> bool:
        return not self.problems


def read_checkpoint(note: bytes, verifier: Verifier) -> CheckpointVerdict:
    """Read a checkpoint note and judge its signature under the log's key and its origin.

    Raises LogVerifyError (``malformed``) only when the note is not a checkpoint at all; a bad or missing
    signature, or another log's origin, is listed in the verdict's problems.
    """
    try:
        text, _ = _split(note)
        checkpoint = parse_checkpoint(text)
    except NoteError as exc:
        raise LogVerifyError("malformed", f"the checkpoint cannot be read: {exc}") from None
    key = _key_name(verifier.name, verifier.key_id)
    problems: list[tuple[Reason, str]] = []
    signed = False
    try:
        open_note(note, [verifier])
        signed = True
    except InvalidSignatureError:
        problems.append(("signature", f"the signature under the network key {key} does not verify"))
    except UnverifiedNoteError as exc:
        others = ", ".join(_key_name(s.name, s.key_id) for s in exc.note.unverified_signatures) or "nobody"
        problems.append(("signature", f"the checkpoint is not signed by the network key {key} (signed by: {others})"))
    except NoteError as exc:
        problems.append(("malformed", f"the checkpoint note is malformed: {exc}"))
    if checkpoint.origin != verifier.name:
        problems.append(
            ("origin", f"the checkpoint's origin {checkpoint.origin!r} is not the network's {verifier.name!r}")
        )
    return CheckpointVerdict(checkpoint, note, text, key, signed, tuple(problems))


def verify_checkpoint(note: bytes, verifier: Verifier) -> Checkpoint:
    """The checkpoint of a note signed by the log's key for its own origin; raises LogVerifyError otherwise."""
    verdict = read_checkpoint(note, verifier)
    if verdict.problems:
        reason, message = verdict.problems[0]
        raise LogVerifyError(reason, message)
    return verdict.checkpoint


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A witness's valid cosignature, and when (POSIX seconds) the witness made it."""

    witness: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class WitnessVerdict:
    """Which of the given witnesses cosigned the checkpoint, which did not, and whose cosignature is bad."""

    cosigned: tuple[Cosignature, ...]
    missing: tuple[str, ...]
    bad: tuple[tuple[str, str], ...]  # (witness, why its cosignature does not verify)

    def meets(self, quorum: int) -> bool:
        """Whether enough witnesses cosigned and none cosigned falsely."""
        return len(self.cosigned) >= quorum and not self.bad


def check_cosignatures(note: bytes, witnesses: Sequence[CosignatureVerifier]) -> WitnessVerdict:
    """Check the note's cosignature lines (C2SP tlog-cosignature) from each given witness key."""
    try:
        text, lines = _split(note)
    except NoteError:
        return WitnessVerdict((), tuple(w.name for w in witnesses), ())
    signatures: list[Signature] = []
    for line in lines:
        try:
            signatures.append(parse_signature_line(line))
        except NoteError:
            continue
    cosigned: list[Cosignature] = []
    missing: list[str] = []
    bad: list[tuple[str, str]] = []
    for witness in witnesses:
        mine = [s for s in signatures if (s.name, s.key_id) == (witness.name, witness.key_id)]
        if not mine:
            missing.append(witness.name)
            continue
        try:
            when = max(verify_cosignature(s.to_line(), text, witness) for s in mine)
        except NoteError as exc:
            bad.append((witness.name, str(exc)))
            continue
        cosigned.append(Cosignature(witness.name, when))
    return WitnessVerdict(tuple(cosigned), tuple(missing), tuple(bad))


# ---- entries against a signed root ----


def check_root(root: bytes, checkpoint: Checkpoint) -> None:
    """Raise LogVerifyError (``root``) unless ``root``, recomputed from the entries, is the checkpoint's."""
    if root != checkpoint.root_hash:
        raise LogVerifyError(
            "root",
            f"the {checkpoint.size:,} entries hash to the root {_b64(root)}, not to the signed root "
            f"{_b64(checkpoint.root_hash)}",
            root=root,
        )


def root_from_tiles(tile_set: Mapping[tuple[int, int], bytes], size: int) -> bytes:
    """The root of the first ``size`` leaves, from the hash tiles of a tree at least that big."""
    if size == 0:
        return merkle.EMPTY_ROOT
    return tiles.range_hash_from_tiles(0, size, tile_set)


@dataclass(frozen=True, slots=True)
class TreeState:
    """A verified tree: its size and its right edge, the perfect subtrees' hashes ``merkle.subtrees(0, size)``.

    That is all a replica must keep between batches to check the next one against the next checkpoint.
    """

    size: int = 0
    edge: tuple[bytes, ...] = ()

    @classmethod
    def from_tiles(cls, size: int, tile_set: Mapping[tuple[int, int], bytes]) -> TreeState:
        """The state of the first ``size`` leaves of a tree held as hash tiles."""
        edge = [
            tiles.subtree_hash(height, index, tile_set[tiles.subtree_tiles(height, index)])
            for height, index in merkle.subtrees(0, size)
        ]
        return cls(size, tuple(edge))

    @property
    def root(self) -> bytes:
        return merkle.fold(self.edge)


def verify_batch(state: TreeState, first: int, entries: Sequence[bytes], checkpoint: Checkpoint) -> TreeState:
    """Check that ``entries`` (the stored bytes), as entries ``first``.. after ``state``, make the signed tree.

    ``checkpoint`` must already be verified (``verify_checkpoint``). Returns the state of the grown tree; raises
    LogVerifyError (``gap``, ``size`` or ``root``) and leaves the caller's state as it was otherwise.
    """
    leaf = merkle.leaf_hash
    return verify_leaves(state, first, [leaf(data) for data in entries], checkpoint)


def verify_leaves(state: TreeState, first: int, leaves: Sequence[bytes], checkpoint: Checkpoint) -> TreeState:
    """``verify_batch`` for entries already hashed (``leaves``: their RFC 6962 leaf hashes), for a caller that keeps
    the hashes, to store them say."""
    if first != state.size:
        raise LogVerifyError(
            "gap", f"the batch starts at entry {first:,}, but the known tree ends at {state.size:,}", index=state.size
        )
    size = state.size + len(leaves)
    if size != checkpoint.size:
        raise LogVerifyError(
            "size",
            f"entries {first:,} to {size - 1:,} make a tree of {size:,}, but the checkpoint signs {checkpoint.size:,}",
            index=min(size, checkpoint.size),
        )
    # Appending leaf n merges one subtree per trailing one bit of n: about one node hash per leaf.
    edge = list(state.edge)
    n = state.size
    node = merkle.node_hash
    for h in leaves:
        bits = n
        while bits & 1:
            h = node(edge.pop(), h)
            bits >>= 1
        edge.append(h)
        n += 1
    grown = TreeState(n, tuple(edge))
    check_root(grown.root, checkpoint)
    return grown


def verify_inclusion(entry: bytes, index: int, proof: Sequence[bytes], checkpoint: Checkpoint) -> None:
    """Check that ``entry`` (the stored bytes) is entry ``index`` under the checkpoint; raises LogVerifyError."""
    try:
        merkle.verify_inclusion(merkle.leaf_hash(entry), index, checkpoint.size, proof, checkpoint.root_hash)
    except merkle.ProofError as exc:
        raise LogVerifyError("inclusion", str(exc), index=index) from None


# ---- one checkpoint against an earlier one ----


def verify_consistency(old_size: int, old_root: bytes, new_size: int, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree (old_size, old_root) is a prefix of (new_size, new_root) by an RFC 9162 proof.

    The empty tree is a prefix of every tree, and equal sizes need equal roots (and no proof). Raises
    LogVerifyError: ``shrank``, ``fork`` (same size, another root) or ``inconsistent``.
    """
    if old_size > new_size:
        raise LogVerifyError("shrank", f"the log shrank from {old_size:,} entries to {new_size:,}")
    if old_size == new_size and old_root != new_root:
        raise LogVerifyError("fork", f"two checkpoints of size {old_size:,} have different roots")
    if old_size == 0:
        return
    try:
        merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
    except merkle.ProofError as exc:
        raise LogVerifyError("inconsistent", str(exc)) from None


def verify_prefix(old_size: int, old_root: bytes, tile_set: Mapping[tuple[int, int], bytes], new_size: int) -> None:
    """Check that the tree (old_size, old_root) is a prefix of the whole tree at hand, by recomputing its root.

    ``tile_set`` holds the hash tiles of the tree of ``new_size`` leaves. Raises LogVerifyError: ``shrank``, or
    ``inconsistent`` when the first old_size leaves hash to another root.
    """
    if old_size > new_size:
        raise LogVerifyError("shrank", f"the log shrank from {old_size:,} entries to {new_size:,}")
    root = root_from_tiles(tile_set, old_size)
    if root != old_root:
        raise LogVerifyError(
            "inconsistent", f"the first {old_size:,} entries hash to {_b64(root)}, not to {_b64(old_root)}", root=root
        )
