"""Per-subject data keys for personal data in events ("crypto-shredding").

Every member (and every exchange or payment, for its memo) has its own random AES-256-GCM key in
``exchange.subject_keys``. Personal fields are sealed under that key before they enter an event; erasure deletes
the key, after which the sealed fields can never be read again, even from backups of the event table.
"""

from __future__ import annotations

import os
from typing import TypeVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.exchange.events import Sealed
from shared.db import Connection

T = TypeVar("T")
_NONCE = 12


class Vault:
    """Keys fetched once per transaction; create with ``Vault(conn)`` inside the transaction that uses it."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._keys: dict[str, bytes | None] = {}

    async def _key(self, subject: str, *, create: bool) -> bytes | None:
        if subject in self._keys:
            return self._keys[subject]
        key: bytes | None = await self._conn.fetchval(
            "SELECT key FROM exchange.subject_keys WHERE subject = $1", subject
        )
        if key is None and create:
            key = await self._conn.fetchval(
                """INSERT INTO exchange.subject_keys (subject, key) VALUES ($1, $2)
                   ON CONFLICT (subject) DO UPDATE SET key = exchange.subject_keys.key RETURNING key""",
                subject,
                AESGCM.generate_key(bit_length=256),
            )
        self._keys[subject] = key
        return key

    async def seal(self, subject: str, value: msgspec.Struct) -> Sealed:
        key = await self._key(subject, create=True)
        assert key is not None
        nonce = os.urandom(_NONCE)
        box = nonce + AESGCM(key).encrypt(nonce, msgspec.json.encode(value), subject.encode())
        return Sealed(subject=subject, box=box)

    async def open(self, sealed: Sealed, kind: type[T]) -> T | None:
        """The sealed value, or None once its subject was erased."""
        key = await self._key(sealed.subject, create=False)
        if key is None:
            return None
        try:
            plain = AESGCM(key).decrypt(sealed.box[:_NONCE], sealed.box[_NONCE:], sealed.subject.encode())
        except InvalidTag:
            return None
        return msgspec.json.decode(plain, type=kind)

    async def shred(self, subjects: list[str]) -> None:
        """Delete the subjects' keys for good."""
        await self._conn.execute("DELETE FROM exchange.subject_keys WHERE subject = ANY($1::text[])", subjects)
        for subject in subjects:
            self._keys[subject] = None
