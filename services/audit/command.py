"""The ``timebank audit`` and ``timebank export`` commands: arguments, exit status, where output goes."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.audit.report import Report
    from services.audit.signatures import Trust
    from services.audit.source import Source
    from services.audit.verify import Options
    from shared.note import Verifier

# Exit statuses: every check passed / a check failed / the audit could not run at all.
PASSED, FAILED, CANNOT_AUDIT = 0, 1, 2


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="the node's base URL (http://...) or a `timebank export` directory")
    parser.add_argument(
        "--vkey", required=True, help="the network's verifier key (C2SP vkey text, or a file that holds it)"
    )
    parser.add_argument(
        "--witness", action="append", default=[], metavar="VKEY", help="a witness's cosignature verifier key (repeat)"
    )
    # --min-cosignatures is the name docs/federation.md gives it; both spellings set the same number.
    parser.add_argument(
        "--witnesses-required",
        "--min-cosignatures",
        dest="witnesses_required",
        type=int,
        metavar="N",
        help="cosignatures required (default: every --witness)",
    )
    parser.add_argument(
        "--checkpoint-only",
        action="store_true",
        help="check only the checkpoint: signature, cosignatures, consistency proofs to checkpoints seen before",
    )
    parser.add_argument(
        "--entry", type=int, action="append", default=[], metavar="INDEX", help="check that this entry is included"
    )
    parser.add_argument(
        "--proof", type=Path, action="append", default=[], metavar="FILE", help="check a saved .tlog-proof bundle"
    )
    parser.add_argument(
        "--neighbour",
        metavar="SOURCE",
        help="a neighbouring network's node URL or export directory: audit its log too, and pair the cross-network "
        "transfers between the two",
    )
    parser.add_argument("--neighbour-vkey", metavar="VKEY", help="the neighbouring network's verifier key")
    parser.add_argument("--json", metavar="PATH", help="write the JSON report to PATH ('-': stdout, summary to stderr)")
    parser.add_argument(
        "--state", type=Path, help="checkpoints seen before (default: $XDG_STATE_HOME/timebank/audit-state.json)"
    )
    parser.add_argument("--no-state", action="store_true", help="neither read nor remember checkpoints")
    parser.add_argument("--cache", type=Path, help="keep downloaded entries here (default: under $XDG_CACHE_HOME)")
    parser.add_argument("--no-cache", action="store_true", help="download into a temporary directory")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="processes for hashing (default: up to 2)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the node's base URL")
    parser.add_argument("directory", type=Path, help="where to write the log (created if missing; resumable)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _key_text(value: str) -> str:
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    return value.strip()


def _cache_name(verifier: Verifier) -> str:
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', verifier.name)}-{verifier.key_id:08x}"


def _default_cache(verifier: Verifier) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "timebank" / "audit" / _cache_name(verifier)


class _Usage(Exception):
    pass


def _verifier(value: str) -> Verifier:
    from shared.note import NoteError, Verifier

    try:
        return Verifier.from_text(_key_text(value))
    except (NoteError, OSError) as exc:
        raise _Usage(f"bad key: {exc}") from None


def _trust(args: argparse.Namespace) -> Trust:
    from services.audit.signatures import Trust
    from shared.note import CosignatureVerifier, NoteError

    verifier = _verifier(args.vkey)
    try:
        witnesses = [CosignatureVerifier.from_text(_key_text(w)) for w in args.witness]
    except (NoteError, OSError) as exc:
        raise _Usage(f"bad key: {exc}") from None
    quorum = len(witnesses) if args.witnesses_required is None else args.witnesses_required
    if not 0 <= quorum <= len(witnesses):
        raise _Usage(f"--witnesses-required {quorum} needs that many --witness keys (given: {len(witnesses)})")
    return Trust(verifier, witnesses, quorum)


def run_audit(args: argparse.Namespace) -> int:
    """Run ``timebank audit``; the exit status is 0 only when every check passed."""
    from services.audit.inclusion import proof_files
    from services.audit.report import summary, to_json
    from services.audit.signatures import Trust
    from services.audit.source import DirectorySource, HttpSource, SourceError
    from services.audit.state import AuditState, StateError, default_state_path, load_state, save_state
    from services.audit.verify import Mode, Neighbour, Options

    try:
        trust = _trust(args)
        mode: Mode = "entry" if args.entry or args.proof else "checkpoint" if args.checkpoint_only else "full"
        if args.source is None and mode != "entry":
            raise _Usage("give the node's URL or an export directory (only --proof works without one)")
        if args.entry and args.source is None:
            raise _Usage("--entry needs the node's URL or an export directory")
        if (args.neighbour is None) != (args.neighbour_vkey is None):
            raise _Usage("--neighbour and --neighbour-vkey go together")
        if args.neighbour is not None and mode != "full":
            raise _Usage("--neighbour pairs two full audits: it does not go with --checkpoint-only, --entry or --proof")
        neighbour_trust = None if args.neighbour_vkey is None else Trust(_verifier(args.neighbour_vkey))
        proofs = proof_files(args.proof)
        state_path = None if args.no_state else (args.state or default_state_path())
        state = AuditState() if state_path is None else load_state(state_path)
    except (_Usage, StateError, OSError) as exc:
        print(f"timebank audit: {exc}", file=sys.stderr)
        return CANNOT_AUDIT
    options = Options(
        trust=trust, mode=mode, state=None if state_path is None else state, entries=args.entry, proofs=proofs
    )
    options.jobs = max(1, args.jobs)
    temporaries: list[Path] = []

    def open_source(where: str, verifier: Verifier, cache: Path | None) -> Source:
        if not re.match(r"https?://", where):
            return DirectorySource(Path(where))
        if args.no_cache:
            temporaries.append(Path(tempfile.mkdtemp(prefix="timebank-audit-")))
            cache = temporaries[-1]
        return HttpSource(where, cache or _default_cache(verifier))

    source: Source | None = None
    try:
        if args.source is not None:
            source = open_source(args.source, trust.verifier, args.cache)
        if neighbour_trust is not None:
            # Under --cache, the neighbour's entries go beside ours, in a folder named after its key.
            verifier = neighbour_trust.verifier
            cache = None if args.cache is None else args.cache.with_name(f"{args.cache.name}-{_cache_name(verifier)}")
            options.neighbour = Neighbour(open_source(args.neighbour, verifier, cache), neighbour_trust)
        report = asyncio.run(_audit(source, options, args.quiet, state_path))
    except SourceError as exc:
        print(f"timebank audit: cannot read the log: {exc}", file=sys.stderr)
        return CANNOT_AUDIT
    finally:
        for temporary in temporaries:
            shutil.rmtree(temporary, ignore_errors=True)
    if state_path is not None:
        save_state(state_path, state)
    text = summary(report)
    if args.json == "-":
        sys.stdout.buffer.write(to_json(report))
        sys.stderr.write(text)
    else:
        sys.stdout.write(text)
        if args.json:
            Path(args.json).write_bytes(to_json(report))
    return PASSED if report.ok else FAILED


async def _audit(source: Source | None, options: Options, quiet: bool, state_path: Path | None) -> Report:
    from services.audit.progress import reporter
    from services.audit.verify import audit

    try:
        return await audit(source, options, reporter(quiet), state_file=state_path)
    finally:
        if source is not None:
            await source.close()
        if options.neighbour is not None:
            await options.neighbour.source.close()


def run_export(args: argparse.Namespace) -> int:
    """Run ``timebank export``."""
    from services.audit.export import export
    from services.audit.progress import reporter
    from services.audit.source import SourceError

    try:
        done = asyncio.run(export(args.url, args.directory, reporter(args.quiet)))
    except SourceError as exc:
        print(f"timebank export: {exc}", file=sys.stderr)
        return CANNOT_AUDIT
    print(f"exported {done.size:,} entries of {args.url} to {args.directory}")
    if done.balances_size is None:
        print("  the node serves no balances: the export has no balances.json", file=sys.stderr)
    if done.missing_tiles:
        print(f"  the node did not serve {done.missing_tiles} hash tile(s)", file=sys.stderr)
    return PASSED
