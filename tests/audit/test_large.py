"""A log big enough for the audit to hash in a worker process: the same verdicts as hashing in one process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from services.audit.scan import PARALLEL_MIN_BUNDLES, Chunks
from services.audit.tree import prepare_bundles
from services.ledger.entries import entry_encoder
from services.node.bench.ledger import bulk_entries
from shared import tiles
from shared.note import Signer
from tests.audit.support import audit, edit_entry, read_entries, rewrite, write_bundles
from tests.ledger.conftest import ORIGIN

Capture = pytest.CaptureFixture[str]
SIZE = PARALLEL_MIN_BUNDLES * tiles.TILE_WIDTH + 1000


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Signer]:
    """A valid log of SIZE entries decided by the ledger's own domain, written as an export."""
    directory = tmp_path_factory.mktemp("large") / "log"
    signer = Signer.generate(ORIGIN)
    rewrite(directory, signer, [entry_encoder.encode(e) for _, e, _, _ in bulk_entries(SIZE, accounts=200)])
    return directory, signer


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_large_log_passes_with_and_without_a_hashing_worker(
    large: tuple[Path, Signer], tmp_path: Path, capsys: Capture, jobs: str
) -> None:
    directory, signer = large
    done = audit(capsys, tmp_path, str(directory), "--vkey", signer.verifier().to_text(), "--jobs", jobs)
    assert done.status == 0, done.out
    assert done.report["entries"] == SIZE


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_large_log_with_a_changed_entry_is_caught_at_its_index_with_and_without_a_worker(
    large: tuple[Path, Signer], tmp_path: Path, capsys: Capture, jobs: str
) -> None:
    directory, signer = large
    log = tmp_path / "log"
    log.mkdir()
    for path in directory.rglob("*"):
        if path.is_file():
            target = log / path.relative_to(directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    entries = read_entries(log)
    index = 40 * tiles.TILE_WIDTH + 17
    entries[index] = edit_entry(entries[index], at="2020-01-01T00:00:00Z")
    write_bundles(log, entries)
    done = audit(capsys, tmp_path, str(log), "--vkey", signer.verifier().to_text(), "--jobs", jobs, "--no-state")
    assert done.status == 1
    assert done.indexes("log.entries") == [index]


def test_chunks_prepared_by_a_worker_process_equal_those_prepared_here(large: tuple[Path, Signer]) -> None:
    directory, _ = large
    chunks = Chunks(directory, SIZE, workers=1, compare=True)
    check_prepared_by_worker(directory, chunks)
    assert chunks.start_method == "fork"


def test_workers_are_not_forked_from_a_process_that_runs_another_thread(large: tuple[Path, Signer]) -> None:
    directory, _ = large
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        chunks = Chunks(directory, SIZE, workers=1, compare=True)
        check_prepared_by_worker(directory, chunks)
    finally:
        stop.set()
        other.join()
    assert chunks.start_method == "forkserver"


def check_prepared_by_worker(directory: Path, chunks: Chunks) -> None:
    """Every chunk, taken in order, is prepared; those a worker prepared equal the ones prepared here."""
    try:
        deadline = time.monotonic() + 60
        while chunks.claims.value == 0:  # let the worker take a chunk before this process may take them all
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.01)
        prepared = [chunks.get(position) for position in range(len(chunks.chunks))]
    finally:
        chunks.close()
    assert chunks.by_workers, "no chunk was prepared by the worker"
    assert all(p.same for chunk in prepared for p in chunk), "every stored level-0 tile equals the computed one"
    for position in chunks.by_workers:
        lo, hi = chunks.chunks[position]
        here = prepare_bundles(str(directory), lo, hi, SIZE, compare=True)
        assert [tuple(p) for p in prepared[position]] == [tuple(p) for p in here]
