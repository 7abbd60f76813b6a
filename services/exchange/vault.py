"""Per-subject data keys for personal data in events ("crypto-shredding").

Every member (and every exchange or payment, for its memo) has its own random AES-256-GCM key in
``exchange.subject_keys``. Personal fields are sealed under that key before they enter an event; erasure deletes
the key, after which the sealed fields can never be read again, even from backups of the event table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.exchange.events import Sealed
from services.exchange.writes import Write
from shared.db import Connection, load_queries

T = TypeVar("T")
_NONCE = 12
Q = load_queries(Path(__file__).with_name("vault.sql"))


class Vault:
    """Keys fetched once per command; create with ``Vault(conn)`` for the command that uses it.

    A key made by ``seal`` for a subject that had none is written with the command's other writes (``writes``),
    never alone: if another command made one for the same subject first, the command's statement fails and the
    command retries (``eventstore.moved`` tells it so from ``fresh``), finding that key.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._keys: dict[str, bytes | None] = {}
        self._new: dict[str, bytes] = {}
        self._shredded: set[str] = set()

    def prime(self, subject: str, key: bytes | None) -> None:
        """Remember ``subject``'s key (None: it has none) as read with something else, saving a round trip."""
        self._keys.setdefault(subject, key)

    async def _key(self, subject: str, *, create: bool) -> bytes | None:
        if subject in self._keys:
            key = self._keys[subject]
        else:
            key = self._keys[subject] = await self._conn.fetchval(Q["key"], subject)
        if key is None and create:
            if subject in self._shredded:
                raise RuntimeError(f"the data key of {subject} was shredded; nothing more is sealed under it")
            key = self._keys[subject] = self._new[subject] = AESGCM.generate_key(bit_length=256)
        return key

    @property
    def pending(self) -> bool:
        """Whether ``seal`` made keys that ``writes`` has not handed out yet."""
        return bool(self._new)

    @property
    def fresh(self) -> list[str]:
        """The subjects ``seal`` made keys for that ``writes`` has not handed out yet (they had none)."""
        return list(self._new)

    def writes(self) -> list[Write]:
        """The keys ``seal`` made since the last call, to be written in the same transaction as what they seal."""
        if not self._new:
            return []
        new, self._new = self._new, {}
        return [Write(Q["insert_keys"], (list(new), list(new.values())), rows=True)]

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
        await self._conn.execute(Q["shred"], subjects)
        for subject in subjects:
            self._keys[subject] = None
            self._new.pop(subject, None)
            self._shredded.add(subject)
