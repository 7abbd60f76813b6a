"""``timebank keygen``: write a new network signing key and show the verifier key that auditors and peers use."""

from __future__ import annotations

from pathlib import Path

from shared.note import Signer, write_signer_key
from shared.settings import Settings


def run_keygen(settings: Settings, name: str | None, out: str | None) -> int:
    """Write a key named ``name`` (default: the origin) to ``out`` (default: the configured key file), mode 0600."""
    name = name or settings.origin
    path = Path(out) if out else settings.key_path
    signer = Signer.generate(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_signer_key(path, signer)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"timebank: cannot write {path}: {exc}") from None
    print(f"wrote signing key {path} (mode 0600)")
    print(f"verifier key: {signer.verifier().to_text()}")
    return 0
