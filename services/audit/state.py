"""The auditor's memory: every signed checkpoint it has seen, per log, in a small JSON file.

A log that is rewritten between two audits cannot stay consistent with a checkpoint seen before, so each audit
checks the new checkpoint against all of them and then adds its own. The notes are kept whole: two signed
checkpoints that cannot both be true are evidence anyone can re-verify.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from services.audit.report import b64
from shared.note import Checkpoint


class StateError(Exception):
    """The state file exists but cannot be read as one."""


class SeenCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    size: int
    root: str  # base64
    note: str  # the signed note as it was served, cosignatures included
    seen_at: str
    source: str


class LogState(msgspec.Struct, kw_only=True):
    checkpoints: list[SeenCheckpoint] = msgspec.field(default_factory=list)


class AuditState(msgspec.Struct, kw_only=True):
    version: int = 1
    # Keyed by the log's verifier key text (origin, key id and key), so two logs never share a history.
    logs: dict[str, LogState] = msgspec.field(default_factory=dict)

    def seen(self, vkey: str) -> list[SeenCheckpoint]:
        log = self.logs.get(vkey)
        return [] if log is None else list(log.checkpoints)

    def record(self, vkey: str, checkpoint: Checkpoint, note: bytes, source: str) -> None:
        """Remember a checkpoint whose signature verified (once per size and root)."""
        log = self.logs.setdefault(vkey, LogState())
        root = b64(checkpoint.root_hash)
        if any(c.size == checkpoint.size and c.root == root for c in log.checkpoints):
            return
        log.checkpoints.append(
            SeenCheckpoint(
                size=checkpoint.size,
                root=root,
                note=note.decode("utf-8", "replace"),
                seen_at=datetime.now(UTC).isoformat(timespec="seconds"),
                source=source,
            )
        )
        log.checkpoints.sort(key=lambda c: (c.size, c.seen_at))


def default_state_path() -> Path:
    """``$XDG_STATE_HOME/timebank/audit-state.json`` (``~/.local/state/...`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "timebank" / "audit-state.json"


def load_state(path: Path) -> AuditState:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return AuditState()
    try:
        return msgspec.json.decode(data, type=AuditState)
    except msgspec.DecodeError as exc:
        raise StateError(f"{path} is not an audit state file: {exc}") from None


def save_state(path: Path, state: AuditState) -> None:
    """Write the state atomically (a crash leaves the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = msgspec.json.format(msgspec.json.encode(state), indent=2) + b"\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-state-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
