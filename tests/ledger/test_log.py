"""The ledger as a transparency log, checked the way an outside auditor would: from the public endpoints only,
recomputing every hash independently with shared.merkle."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from services.ledger.app import create_app
from services.node.postgres import PostgresServer
from shared import merkle, tiles
from shared.note import Signer, UnverifiedNoteError, open_note, parse_checkpoint
from tests.ledger.conftest import ORIGIN, Ledger, auth, ledger_settings
from tests.ledger.support import assert_problem, checkpoint, entries, gather_in_chunks, leaf_hashes, log_state

# Between one and two full tiles: tile/0/000 is full, tile/0/001 and tile/1/000 are partial.
BIG_SIZE = 400


async def grow(ledger: Ledger, size: int) -> tuple[str, str]:
    """Open two accounts, then append transfers between them until the log holds ``size`` entries."""
    alice = str((await ledger.open_account("alice", floor=-1_000_000))["id"])
    bob = str((await ledger.open_account("bob"))["id"])

    async def pay(n: int) -> None:
        r = await ledger.transfer(f"t{n}", alice, bob, 1 + n % 5)
        assert r.status_code == 201, r.text

    await gather_in_chunks([lambda n=n: pay(n) for n in range(size - 2)], chunk=50)  # type: ignore[misc]
    return alice, bob


@pytest.fixture(scope="module")
async def big(postgres_server: PostgresServer) -> AsyncIterator[Ledger]:
    """One ledger holding BIG_SIZE entries, shared by the read-only tests of this module."""
    name = "ledger_test_log_big"
    postgres_server.drop_database(name)
    postgres_server.create_database(name)
    signer = Signer.generate(ORIGIN)
    url = postgres_server.dsn(name)
    try:
        async with AsyncTestClient(app=create_app(ledger_settings(), database_url=url, signer=signer)) as client:
            ledger = Ledger(client.app, client, signer, url)
            await grow(ledger, BIG_SIZE)
            yield ledger
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
async def big_entries(big: Ledger) -> list[bytes]:
    data = await entries(big.client)
    assert len(data) == BIG_SIZE
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------------------------------- checkpoints


async def test_checkpoint_is_a_note_signed_by_the_log_key_naming_origin_and_size(big: Ledger) -> None:
    r = await big.client.get("/log/checkpoint")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    note = open_note(r.content, [big.signer.verifier()])
    assert [s.name for s in note.signatures] == [ORIGIN]
    head = parse_checkpoint(note.text)
    assert (head.origin, head.size) == (ORIGIN, BIG_SIZE)


async def test_checkpoint_does_not_open_under_another_key(big: Ledger) -> None:
    r = await big.client.get("/log/checkpoint")
    with pytest.raises(UnverifiedNoteError):
        open_note(r.content, [Signer.generate(ORIGIN).verifier()])


async def test_checkpoint_root_is_the_merkle_root_of_the_logged_entries(big: Ledger, big_entries: list[bytes]) -> None:
    head = await checkpoint(big.client, big.signer)
    assert head.root_hash == merkle.root(leaf_hashes(big_entries))


async def test_checkpoint_follows_every_write(ledger: Ledger) -> None:
    alice = str((await ledger.open_account("alice"))["id"])
    first = await checkpoint(ledger.client, ledger.signer)
    bob = str((await ledger.open_account("bob"))["id"])
    assert (await ledger.transfer("t", alice, bob, 5)).status_code == 201
    last = await checkpoint(ledger.client, ledger.signer)
    data = await entries(ledger.client)
    assert (first.size, last.size) == (1, 3)
    assert first.root_hash == merkle.root(leaf_hashes(data[:1]))
    assert last.root_hash == merkle.root(leaf_hashes(data))


async def test_entries_can_be_read_in_ranges(big: Ledger, big_entries: list[bytes]) -> None:
    r = await big.client.get("/log/entries", params={"start": 250, "end": 260})
    assert r.status_code == 200
    page = r.json()
    assert page["start"] == 250
    assert [(e["index"], base64.b64decode(e["data"])) for e in page["entries"]] == list(
        enumerate(big_entries[250:260], start=250)
    )
    beyond = (await big.client.get("/log/entries", params={"start": BIG_SIZE})).json()
    assert beyond["entries"] == []


# ---------------------------------------------------------------------------------------------- proofs


async def test_every_entry_has_an_inclusion_proof_that_verifies(big: Ledger, big_entries: list[bytes]) -> None:
    head = await checkpoint(big.client, big.signer)
    leaves = leaf_hashes(big_entries)

    async def check(index: int) -> None:
        r = await big.client.get("/log/proof/inclusion", params={"index": index, "size": head.size})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["index"], body["size"]) == (index, head.size)
        assert base64.b64decode(body["leaf_hash"]) == leaves[index]
        assert base64.b64decode(body["root"]) == head.root_hash
        proof = [base64.b64decode(h) for h in body["proof"]]
        merkle.verify_inclusion(leaves[index], index, head.size, proof, head.root_hash)

    await gather_in_chunks([lambda i=i: check(i) for i in range(BIG_SIZE)])  # type: ignore[misc]


@pytest.mark.parametrize(
    ("index", "size"),
    [(0, 1), (0, 2), (1, 2), (5, 7), (255, 256), (255, 257), (256, 257), (100, 300), (299, 300), (0, 399)],
)
async def test_inclusion_proof_in_an_earlier_tree_verifies(
    big: Ledger, big_entries: list[bytes], index: int, size: int
) -> None:
    leaves = leaf_hashes(big_entries)
    r = await big.client.get("/log/proof/inclusion", params={"index": index, "size": size})
    assert r.status_code == 200, r.text
    body = r.json()
    expected_root = merkle.root(leaves[:size])
    assert base64.b64decode(body["root"]) == expected_root
    proof = [base64.b64decode(h) for h in body["proof"]]
    merkle.verify_inclusion(leaves[index], index, size, proof, expected_root)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (1, 2),
        (1, BIG_SIZE),
        (2, 3),
        (3, 7),
        (7, 8),
        (100, 256),
        (255, 256),
        (256, 257),
        (256, BIG_SIZE),
        (257, 399),
        (300, BIG_SIZE),
        (BIG_SIZE - 1, BIG_SIZE),
        (BIG_SIZE, BIG_SIZE),
    ],
)
async def test_consistency_proof_between_two_sizes_verifies(
    big: Ledger, big_entries: list[bytes], old: int, new: int
) -> None:
    leaves = leaf_hashes(big_entries)
    r = await big.client.get("/log/proof/consistency", params={"old": old, "new": new})
    assert r.status_code == 200, r.text
    body = r.json()
    old_root, new_root = merkle.root(leaves[:old]), merkle.root(leaves[:new])
    assert (base64.b64decode(body["old_root"]), base64.b64decode(body["new_root"])) == (old_root, new_root)
    merkle.verify_consistency(old, new, old_root, new_root, [base64.b64decode(h) for h in body["proof"]])


async def test_consistency_proof_links_an_old_checkpoint_to_the_new_one(ledger: Ledger) -> None:
    alice = str((await ledger.open_account("alice"))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    old = await checkpoint(ledger.client, ledger.signer)
    for n in range(5):
        assert (await ledger.transfer(f"t{n}", alice, bob, 1)).status_code == 201
    new = await checkpoint(ledger.client, ledger.signer)
    r = await ledger.client.get("/log/proof/consistency", params={"old": old.size, "new": new.size})
    proof = [base64.b64decode(h) for h in r.json()["proof"]]
    merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)


@pytest.mark.parametrize(
    "query",
    [
        f"index={BIG_SIZE}&size={BIG_SIZE}",
        f"index=0&size={BIG_SIZE + 1}",
        "index=5&size=5",
        "index=0&size=0",
        "index=-1&size=3",
        "index=0",
        "size=3",
    ],
)
async def test_inclusion_proof_outside_the_log_is_refused(big: Ledger, query: str) -> None:
    r = await big.client.get(f"/log/proof/inclusion?{query}")
    assert 400 <= r.status_code < 500
    assert_problem(r, r.status_code)


@pytest.mark.parametrize("query", [f"old=1&new={BIG_SIZE + 1}", "old=5&new=4", "old=-1&new=3", "old=1"])
async def test_consistency_proof_outside_the_log_is_refused(big: Ledger, query: str) -> None:
    r = await big.client.get(f"/log/proof/consistency?{query}")
    assert 400 <= r.status_code < 500
    assert_problem(r, r.status_code)


# ---------------------------------------------------------------------------------------------- tiles


def expected_tiles(data: list[bytes]) -> dict[str, bytes]:
    """Every tile and entry bundle of the log, computed from the entries alone."""
    levels = [leaf_hashes(data)]
    while len(levels[-1]) >= tiles.TILE_WIDTH:
        below = levels[-1]
        levels.append([merkle.root(below[i : i + 256]) for i in range(0, len(below) - 255, 256)])
    out: dict[str, bytes] = {}
    for level, index, width in tiles.tile_widths(len(data)):
        start = index * tiles.TILE_WIDTH
        out[tiles.tile_path(level, index, width)] = b"".join(levels[level][start : start + width])
        if level == 0:
            bundle = data[start : start + width]
            out[tiles.entries_path(index, width)] = b"".join(struct.pack(">H", len(d)) + d for d in bundle)
    return out


async def test_every_tile_and_entry_bundle_matches_the_entries(big: Ledger, big_entries: list[bytes]) -> None:
    want = expected_tiles(big_entries)
    assert sorted(want) == [
        "tile/0/000",
        "tile/0/001.p/144",
        "tile/1/000.p/1",
        "tile/entries/000",
        "tile/entries/001.p/144",
    ]
    for path, data in want.items():
        r = await big.client.get(f"/log/{path}")
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith("application/octet-stream")
        assert r.content == data, path


async def test_entry_bundle_splits_back_into_the_logged_entries(big: Ledger, big_entries: list[bytes]) -> None:
    r = await big.client.get("/log/tile/entries/000")
    bundle, found = r.content, []
    while bundle:
        (length,) = struct.unpack(">H", bundle[:2])
        found.append(bundle[2 : 2 + length])
        bundle = bundle[2 + length :]
    assert found == big_entries[:256]


async def test_tiles_follow_the_log_as_it_crosses_a_tile_boundary(ledger: Ledger) -> None:
    alice, bob = await grow(ledger, 255)
    assert (await ledger.client.get("/log/tile/0/000")).status_code == 404
    for n in range(3):
        assert (await ledger.transfer(f"late-{n}", alice, bob, 1)).status_code == 201
    data = await entries(ledger.client)
    assert len(data) == 258
    for path, tile in expected_tiles(data).items():
        r = await ledger.client.get(f"/log/{path}")
        assert (r.status_code, r.content) == (200, tile), path


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/001",  # not full yet
        "tile/0/001.p/145",  # wider than the log
        "tile/0/002.p/1",  # beyond the log
        "tile/1/000",  # not full yet
        "tile/1/000.p/2",
        "tile/2/000.p/1",  # no such level yet
        "tile/entries/001",
        "tile/entries/001.p/145",
        "tile/entries/002.p/1",
        "tile/0/x000/000",  # index with a leading zero group
        "tile/0/000.p/256",  # a partial tile is narrower than 256
        "tile/0/000.p/0",
        "tile/0/000.p/01",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/1",
        "tile/64/000",
        "tile/-1/000",
        "tile/foo/000",
        "tile/0/000.p/",
        "tile/0",
        "tiles/0/000",
    ],
)
async def test_unknown_or_malformed_tile_path_is_not_found(big: Ledger, path: str) -> None:
    r = await big.client.get(f"/log/{path}")
    assert_problem(r, 404)


# ---------------------------------------------------------------------------------------------- proof bundles


def parse_bundle(text: str) -> tuple[bytes, int, list[bytes], bytes]:
    """Split a c2sp.org/tlog-proof@v1 into (extra data, index, proof hashes, checkpoint note)."""
    proof_text, sep, note = text.partition("\n\n")
    assert sep, "no blank line between the proof and the checkpoint"
    lines = proof_text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ")
    assert lines[2].startswith("index ")
    extra = base64.b64decode(lines[1].removeprefix("extra "), validate=True)
    index = int(lines[2].removeprefix("index "))
    hashes = [base64.b64decode(h, validate=True) for h in lines[3:]]
    return extra, index, hashes, note.encode()


@pytest.mark.parametrize("index", [0, 1, 137, 255, 256, BIG_SIZE - 1])
async def test_proof_bundle_verifies_offline_against_its_own_checkpoint(
    big: Ledger, big_entries: list[bytes], index: int
) -> None:
    r = await big.client.get("/log/proof/bundle", params={"index": index})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    extra, found_index, proof, note = parse_bundle(r.text)
    assert (found_index, extra) == (index, big_entries[index])
    head = parse_checkpoint(open_note(note, [big.signer.verifier()]).text)
    assert (head.origin, head.size) == (ORIGIN, BIG_SIZE)
    merkle.verify_inclusion(merkle.leaf_hash(extra), index, head.size, proof, head.root_hash)


async def test_proof_bundle_with_altered_entry_bytes_does_not_verify(big: Ledger) -> None:
    """The check above is meaningful: other bytes at the same index fail the same verification."""
    r = await big.client.get("/log/proof/bundle", params={"index": 137})
    extra, index, proof, note = parse_bundle(r.text)
    head = parse_checkpoint(open_note(note, [big.signer.verifier()]).text)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(merkle.leaf_hash(extra + b" "), index, head.size, proof, head.root_hash)


@pytest.mark.parametrize("index", [BIG_SIZE, BIG_SIZE + 1000])
async def test_proof_bundle_for_an_entry_not_in_the_log_is_not_found(big: Ledger, index: int) -> None:
    assert_problem(await big.client.get("/log/proof/bundle", params={"index": index}), 404)


# ---------------------------------------------------------------------------------------------- append-only


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.entries SET data = 'forged'::bytea WHERE idx = 1",
        "UPDATE ledger.entries SET data = data",
        "DELETE FROM ledger.entries WHERE idx = 2",
        "DELETE FROM ledger.entries",
        "TRUNCATE ledger.entries CASCADE",
        "UPDATE ledger.checkpoints SET note = 'forged'::bytea",
        "DELETE FROM ledger.checkpoints",
        "UPDATE ledger.transfers SET minutes = 1",
        "DELETE FROM ledger.transfers",
    ],
)
async def test_the_record_cannot_be_updated_or_deleted(ledger: Ledger, statement: str) -> None:
    alice = str((await ledger.open_account("alice"))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    assert (await ledger.transfer("t", alice, bob, 5)).status_code == 201
    before = await log_state(ledger.client)
    conn = await asyncpg.connect(ledger.database_url)
    try:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute(statement)
    finally:
        await conn.close()
    assert await log_state(ledger.client) == before
    lines = (await ledger.client.get(f"/accounts/{bob}/statement", headers=auth("auditor"))).json()["lines"]
    assert [(line["delta"], line["balance"]) for line in lines] == [(5, 5)]


# ---------------------------------------------------------------------------------------------- response headers
def _media_type(header: str) -> tuple[str, dict[str, list[str]]]:
    """A Content-Type split as Go's mime.ParseMediaType reads it, every parameter's values kept (it refuses one
    given twice)."""
    kind, *params = (part.strip() for part in header.split(";"))
    found: dict[str, list[str]] = {}
    for param in params:
        name, _, value = param.partition("=")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return kind.lower(), found


@pytest.mark.parametrize("path", ["/log/checkpoint", "/log/proof/bundle?index=3"])
async def test_text_answers_name_their_charset_once(big: Ledger, path: str) -> None:
    r = await big.client.get(path)
    assert r.status_code == 200, r.text
    assert _media_type(r.headers["content-type"]) == ("text/plain", {"charset": ["utf-8"]}), r.headers


def _max_age(r: httpx.Response) -> tuple[int, bool]:
    directives = {
        d.strip().partition("=")[0]: d.strip().partition("=")[2] for d in r.headers["cache-control"].split(",")
    }
    return int(directives["max-age"]), "immutable" in directives


@pytest.mark.parametrize("path", ["tile/0/000", "tile/entries/000"])
async def test_full_tiles_and_entry_bundles_are_cached_for_good(big: Ledger, path: str) -> None:
    """C2SP tlog-tiles: a full tile or entry bundle never changes."""
    r = await big.client.get(f"/log/{path}")
    assert r.status_code == 200, r.text
    max_age, immutable = _max_age(r)
    assert immutable, r.headers["cache-control"]
    assert max_age >= 86_400 * 365, r.headers["cache-control"]


@pytest.mark.parametrize("path", ["tile/0/001.p/144", "tile/1/000.p/1", "tile/entries/001.p/144", "checkpoint"])
async def test_partial_tiles_and_the_checkpoint_are_cached_briefly(big: Ledger, path: str) -> None:
    """A partial tile is replaced by a wider one as the log grows, and the checkpoint by the next one."""
    r = await big.client.get(f"/log/{path}")
    assert r.status_code == 200, r.text
    max_age, immutable = _max_age(r)
    assert not immutable, r.headers["cache-control"]
    assert max_age <= 60, r.headers["cache-control"]
