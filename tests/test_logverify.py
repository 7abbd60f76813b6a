"""One log verifier: what a neighbour replicating a log, or an auditor, accepts from it and what it refuses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared import logverify, merkle, tiles
from shared.logverify import LogVerifyError, TreeState
from shared.note import Checkpoint, CosignatureSigner, Signer, add_cosignatures, cosign, format_checkpoint, sign_note

ORIGIN = "timebank.example/riverside"
SIGNER = Signer.generate(ORIGIN)
WITNESS_A = CosignatureSigner.generate("witness.example/a")
WITNESS_B = CosignatureSigner.generate("witness.example/b")


def entries(n: int, start: int = 0) -> list[bytes]:
    return [b'{"type":"ledger.transfer.v1","n":%d}' % i for i in range(start, start + n)]


def signed_note(data: list[bytes], signer: Signer = SIGNER, *witnesses: CosignatureSigner) -> bytes:
    body = format_checkpoint(Checkpoint(ORIGIN, len(data), merkle.root([merkle.leaf_hash(e) for e in data])))
    note = sign_note(body, signer)
    if witnesses:
        note = add_cosignatures(note, [cosign(body, w, 1_700_000_000 + i) for i, w in enumerate(witnesses)])
    return note


def checkpoint_of(data: list[bytes]) -> Checkpoint:
    return logverify.verify_checkpoint(signed_note(data), SIGNER.verifier())


def refusal(call: Callable[..., object], *args: object) -> LogVerifyError:
    with pytest.raises(LogVerifyError) as caught:
        call(*args)
    return caught.value


# ---- batches ----


@pytest.mark.parametrize(("known", "batch"), [(0, 1), (0, 300), (5, 1), (255, 2), (256, 700), (1000, 24)])
def test_valid_batch_after_a_known_tree_is_accepted_and_grows_the_state(known: int, batch: int) -> None:
    log = entries(known + batch)
    state = logverify.verify_batch(TreeState(), 0, log[:known], checkpoint_of(log[:known]))
    grown = logverify.verify_batch(state, known, log[known:], checkpoint_of(log))
    assert grown.size == known + batch
    assert grown.root == merkle.root([merkle.leaf_hash(e) for e in log])


def test_known_tree_read_from_the_appenders_tiles_checks_the_next_batch() -> None:
    log = entries(1300)
    edge = tiles.RightEdge()
    for entry in log[:1037]:
        edge.append(merkle.leaf_hash(entry))
    tile_set = {(level, index): data for level, index, data in edge.take_dirty()}
    state = TreeState.from_tiles(1037, tile_set)
    assert state.root == edge.root()
    assert logverify.verify_batch(state, 1037, log[1037:], checkpoint_of(log)).size == 1300


def test_batch_with_one_changed_byte_is_refused() -> None:
    log = entries(40)
    state = logverify.verify_batch(TreeState(), 0, log[:10], checkpoint_of(log[:10]))
    forged = list(log[10:])
    forged[7] = forged[7].replace(b"n", b"m", 1)
    error = refusal(logverify.verify_batch, state, 10, forged, checkpoint_of(log))
    assert error.reason == "root"
    assert "not to the signed root" in str(error)


def test_batch_missing_an_entry_is_refused() -> None:
    log = entries(40)
    state = logverify.verify_batch(TreeState(), 0, log[:10], checkpoint_of(log[:10]))
    error = refusal(logverify.verify_batch, state, 10, log[10:25] + log[26:], checkpoint_of(log))
    assert error.reason == "size"
    assert "make a tree of 39" in str(error)


def test_reordered_batch_is_refused() -> None:
    log = entries(40)
    batch = log[:]
    batch[3], batch[4] = batch[4], batch[3]
    error = refusal(logverify.verify_batch, TreeState(), 0, batch, checkpoint_of(log))
    assert error.reason == "root"


def test_batch_that_does_not_start_where_the_known_tree_ends_is_refused() -> None:
    log = entries(20)
    state = logverify.verify_batch(TreeState(), 0, log[:10], checkpoint_of(log[:10]))
    error = refusal(logverify.verify_batch, state, 11, log[11:], checkpoint_of(log))
    assert error.reason == "gap"
    assert error.index == 10


def test_batch_signed_over_a_different_history_is_refused() -> None:
    # The known tree is ours; the neighbour's checkpoint covers other first entries: the batch cannot make it.
    ours, theirs = entries(30), entries(10, start=500) + entries(20, start=10)
    state = logverify.verify_batch(TreeState(), 0, ours[:10], checkpoint_of(ours[:10]))
    assert refusal(logverify.verify_batch, state, 10, theirs[10:], checkpoint_of(theirs)).reason == "root"


# ---- checkpoints and witnesses ----


def test_checkpoint_signed_by_the_logs_key_is_trusted() -> None:
    verdict = logverify.read_checkpoint(signed_note(entries(3)), SIGNER.verifier())
    assert verdict.trusted
    assert verdict.signed
    assert verdict.checkpoint.size == 3


def test_checkpoint_signed_by_another_key_is_refused() -> None:
    impostor = Signer.generate(ORIGIN)
    error = refusal(logverify.verify_checkpoint, signed_note(entries(3), impostor), SIGNER.verifier())
    assert error.reason == "signature"
    assert "not signed by the network key" in str(error)


def test_checkpoint_with_a_broken_signature_is_refused() -> None:
    note = bytearray(signed_note(entries(3)))
    note[-10] = ord("A") if note[-10] != ord("A") else ord("B")
    assert refusal(logverify.verify_checkpoint, bytes(note), SIGNER.verifier()).reason == "signature"


def test_checkpoint_of_another_log_is_refused_even_when_signed_by_the_key() -> None:
    body = format_checkpoint(Checkpoint("timebank.example/elsewhere", 1, merkle.leaf_hash(b"x")))
    error = refusal(logverify.verify_checkpoint, sign_note(body, SIGNER), SIGNER.verifier())
    assert error.reason == "origin"


def test_unreadable_note_is_refused_as_malformed() -> None:
    assert refusal(logverify.read_checkpoint, b"not a checkpoint", SIGNER.verifier()).reason == "malformed"


def test_witnesses_that_cosigned_are_named_with_their_time_and_the_others_are_missing() -> None:
    note = signed_note(entries(3), SIGNER, WITNESS_A)
    verdict = logverify.check_cosignatures(note, [WITNESS_A.verifier(), WITNESS_B.verifier()])
    assert [(c.witness, c.timestamp) for c in verdict.cosigned] == [("witness.example/a", 1_700_000_000)]
    assert verdict.missing == ("witness.example/b",)
    assert verdict.meets(1)
    assert not verdict.meets(2)


def test_cosignature_over_another_checkpoint_is_bad() -> None:
    other_body = format_checkpoint(Checkpoint(ORIGIN, 9, merkle.leaf_hash(b"other")))
    note = signed_note(entries(3))
    forged = add_cosignatures(note, [cosign(other_body, WITNESS_A, 1_700_000_000)])
    verdict = logverify.check_cosignatures(forged, [WITNESS_A.verifier()])
    assert not verdict.cosigned
    assert [name for name, _ in verdict.bad] == ["witness.example/a"]
    assert not verdict.meets(0)


# ---- inclusion ----


def test_entry_included_under_a_checkpoint_is_accepted_and_a_changed_one_refused() -> None:
    log = entries(300)
    leaves = [merkle.leaf_hash(e) for e in log]
    proof = merkle.inclusion_proof(77, 300, lambda lo, hi: merkle.root(leaves[lo:hi]))
    cp = checkpoint_of(log)
    logverify.verify_inclusion(log[77], 77, proof, cp)
    error = refusal(logverify.verify_inclusion, log[77] + b" ", 77, proof, cp)
    assert (error.reason, error.index) == ("inclusion", 77)


# ---- consistency ----


def _proof(log: list[bytes], old: int) -> list[bytes]:
    leaves = [merkle.leaf_hash(e) for e in log]
    return merkle.consistency_proof(old, len(log), lambda lo, hi: merkle.root(leaves[lo:hi]))


def test_later_checkpoint_that_extends_the_earlier_one_is_consistent() -> None:
    log = entries(1000)
    old, new = checkpoint_of(log[:333]), checkpoint_of(log)
    logverify.verify_consistency(old.size, old.root_hash, new.size, new.root_hash, _proof(log, 333))
    logverify.verify_consistency(0, merkle.EMPTY_ROOT, new.size, new.root_hash, [])
    logverify.verify_consistency(new.size, new.root_hash, new.size, new.root_hash, [])


def test_inconsistent_later_checkpoint_is_refused() -> None:
    log = entries(1000)
    rewritten = log[:100] + entries(1, start=9999) + log[101:]
    old, new = checkpoint_of(log[:333]), checkpoint_of(rewritten)
    # The rewritten log's own proof cannot link the earlier checkpoint to it.
    error = refusal(
        logverify.verify_consistency, old.size, old.root_hash, new.size, new.root_hash, _proof(rewritten, 333)
    )
    assert error.reason == "inconsistent"


def test_checkpoint_of_the_same_size_with_another_root_is_a_fork() -> None:
    a, b = checkpoint_of(entries(50)), checkpoint_of(entries(50, start=1))
    error = refusal(logverify.verify_consistency, a.size, a.root_hash, b.size, b.root_hash, [])
    assert error.reason == "fork"


def test_later_checkpoint_smaller_than_the_earlier_one_is_refused() -> None:
    log = entries(60)
    old, new = checkpoint_of(log), checkpoint_of(log[:40])
    assert refusal(logverify.verify_consistency, old.size, old.root_hash, new.size, new.root_hash, []).reason == (
        "shrank"
    )


def test_earlier_checkpoint_is_checked_against_the_whole_tree_by_recomputing_its_root() -> None:
    log = entries(900)
    edge = tiles.RightEdge()
    for entry in log:
        edge.append(merkle.leaf_hash(entry))
    tile_set = {(level, index): data for level, index, data in edge.take_dirty()}
    earlier = checkpoint_of(log[:513])
    logverify.verify_prefix(earlier.size, earlier.root_hash, tile_set, 900)
    forked = checkpoint_of(log[:200] + entries(313, start=5000))
    error = refusal(logverify.verify_prefix, forked.size, forked.root_hash, tile_set, 900)
    assert error.reason == "inconsistent"
    assert error.root == earlier.root_hash
    assert refusal(logverify.verify_prefix, 901, earlier.root_hash, tile_set, 900).reason == "shrank"
