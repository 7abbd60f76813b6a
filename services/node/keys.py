"""``timebank keygen`` writes a new network signing key; ``timebank key`` shows an existing node's verifier keys."""

from __future__ import annotations

from pathlib import Path

from services.node.welcome import key_lines
from shared.note import NoteError, Signer, write_signer_key
from shared.settings import Settings


def run_keygen(settings: Settings, name: str | None, out: str | None) -> int:
    """Write a key named ``name`` (default: the origin) to ``out`` (default: the configured key file), mode 0600."""
    name = name or settings.origin
    path = Path(out) if out else settings.key_path
    signer = Signer.generate(name)
    if path.exists():
        raise SystemExit(f"timebank: {path} exists already (never overwritten); `timebank key` prints its verifier")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_signer_key(path, signer)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"timebank: cannot write {path}: {exc}") from None
    print(f"wrote signing key {path} (mode 0600)")
    print(f"verifier key: {signer.verifier().to_text()}")
    return 0


def run_key(settings: Settings) -> int:
    """Print the verifier keys of the node whose data folder (or key file) the settings name; reads only."""
    try:
        for line in key_lines(settings):
            print(line)
    except FileNotFoundError:
        raise SystemExit(f"timebank: no signing key at {settings.key_path}; `timebank up` makes one") from None
    except (OSError, NoteError) as exc:
        raise SystemExit(f"timebank: cannot read {settings.key_path}: {exc}") from None
    return 0
