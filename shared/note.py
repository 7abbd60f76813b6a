"""Signed notes, checkpoints and witness cosignatures in the C2SP text formats.

Covers c2sp.org/signed-note with Ed25519 (signature type 0x01), the signer and
verifier key texts of golang.org/x/mod/sumdb/note, c2sp.org/tlog-checkpoint and
the Ed25519 flavour of c2sp.org/tlog-cosignature (signature type 0x04).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Self

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
"""Signature type byte of plain Ed25519 note signatures."""

ALG_COSIGNATURE_V1 = 0x04
"""Signature type byte of timestamped Ed25519 cosignatures (cosignature/v1)."""

MAX_NOTE_SIZE = 1 << 20
"""Largest signed note, in bytes, that is parsed or produced."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry."""

MAX_TIMESTAMP = (1 << 63) - 1
"""Largest cosignature timestamp the cosignature spec allows."""

MAX_TREE_SIZE = (1 << 64) - 1
"""Largest checkpoint tree size (a uint64)."""

_PRIVATE_PREFIX = "PRIVATE+KEY+"
_SIG_PREFIX = "\u2014 "  # em dash, space
_COSIGNATURE_HEADER = "cosignature/v1\n"
_SEED_SIZE = 32
_PUBLIC_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64
_KEY_ID_SIZE = 4
_TIMESTAMP_SIZE = 8
_COSIGNATURE_SIZE = _TIMESTAMP_SIZE + _ED25519_SIG_SIZE
_MAX_KEY_FILE_SIZE = 4096

_KEY_ID_RE = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]*")
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")
_BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class NoteError(ValueError):
    """A key, note, checkpoint or cosignature is malformed or does not verify."""


class InvalidSignatureError(NoteError):
    """A signature made under a known key name and id did not verify."""

    def __init__(self, name: str, key_id: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_id:08x}")
        self.name = name
        self.key_id = key_id


class UnverifiedNoteError(NoteError):
    """A note parsed but carries no signature from any known key."""

    def __init__(self, note: Note) -> None:
        super().__init__("note has no signature from a known key")
        self.note = note


# --- small checks --------------------------------------------------------------------------------


def _check_utf8(text: str, what: str) -> bytes:
    """Return text as UTF-8, or raise if it holds lone surrogates."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError(f"{what} is not valid UTF-8") from exc


def _check_no_controls(text: str, what: str) -> None:
    """Raise unless text is free of ASCII control characters other than newline."""
    if _CONTROL_RE.search(text):
        raise NoteError(f"{what} contains an ASCII control character other than newline")


def check_name(name: str) -> str:
    """Return name if it is a valid key name: non-empty, no Unicode space, no '+', no control."""
    if not name:
        raise NoteError("key name is empty")
    _check_utf8(name, "key name")
    if "+" in name:
        raise NoteError(f"key name {name!r} contains '+'")
    if any(ch.isspace() for ch in name):
        raise NoteError(f"key name {name!r} contains a space character")
    _check_no_controls(name, f"key name {name!r}")
    return name


def _key_id(name: str, alg: int, public_key: bytes) -> int:
    """Return SHA-256(name || 0x0A || alg || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:_KEY_ID_SIZE], "big")


def _b64encode(raw: bytes) -> str:
    """Return standard padded base64 of raw."""
    return base64.b64encode(raw).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Decode canonical standard base64 (padded, no whitespace, zero spare bits) or raise."""
    if not _BASE64_RE.fullmatch(text):
        raise NoteError(f"{what} is not valid base64")
    raw = base64.b64decode(text, validate=True)
    if _b64encode(raw) != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _check_timestamp(timestamp: int) -> int:
    """Return timestamp if it is an int in [0, 2^63 - 1]."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise NoteError("cosignature timestamp must be an int")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is outside 0..2^63-1")
    return timestamp


# --- key texts -----------------------------------------------------------------------------------


def _parse_key_text(text: str, *, private: bool, kind: str) -> tuple[str, int, int, bytes]:
    """Split a signer or verifier key text into (name, key id, algorithm byte, key bytes).

    Error messages never echo key material, so they are safe to log for private keys.
    """
    body = text
    if private:
        if not text.startswith(_PRIVATE_PREFIX):
            raise NoteError(f"{kind} does not start with {_PRIVATE_PREFIX!r}")
        body = text[len(_PRIVATE_PREFIX) :]
    parts = body.split("+", 2)
    if len(parts) != 3:
        shape = "PRIVATE+KEY+<name>+<key id>+<key>" if private else "<name>+<key id>+<key>"
        raise NoteError(f"{kind} is not of the form {shape}")
    name, hex_id, b64 = parts
    check_name(name)
    if not _KEY_ID_RE.fullmatch(hex_id):
        raise NoteError(f"{kind} has a key id that is not 8 hex digits")
    raw = _b64decode(b64, f"{kind} data")
    if not raw:
        raise NoteError(f"{kind} data is empty")
    return name, int(hex_id, 16), raw[0], raw[1:]


def _check_alg(alg: int, want: int, kind: str) -> None:
    """Raise with a hint unless the key text's algorithm byte is want."""
    if alg == want:
        return
    hints = {
        ALG_ED25519: "0x01 is a plain Ed25519 note key",
        ALG_COSIGNATURE_V1: "0x04 is an Ed25519 cosignature (witness) key",
    }
    hint = hints.get(alg, "unknown algorithm")
    raise NoteError(f"{kind} has algorithm byte 0x{alg:02x} ({hint}); expected 0x{want:02x}")


def _load_public(name: str, public_key: bytes, alg: int) -> tuple[Ed25519PublicKey, int]:
    """Return the Ed25519 public key object and key id for name and raw public key."""
    check_name(name)
    if len(public_key) != _PUBLIC_KEY_SIZE:
        raise NoteError(f"Ed25519 public key must be {_PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise NoteError("Ed25519 public key is invalid") from exc
    return key, _key_id(name, alg, public_key)


def _public_from_text(text: str, alg: int, kind: str) -> tuple[str, bytes]:
    """Parse and check a verifier key text of the given algorithm; return (name, public key)."""
    name, key_id, got_alg, public_key = _parse_key_text(text, private=False, kind=kind)
    _check_alg(got_alg, alg, kind)
    if len(public_key) != _PUBLIC_KEY_SIZE:
        raise NoteError(f"{kind} public key must be {_PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    want = _key_id(name, alg, public_key)
    if key_id != want:
        raise NoteError(f"{kind} has key id {key_id:08x}, which does not match its key (expected {want:08x})")
    return name, public_key


def _private_from_text(text: str, alg: int, kind: str) -> tuple[str, Ed25519PrivateKey]:
    """Parse and check a signer key text of the given algorithm; return (name, private key)."""
    name, key_id, got_alg, seed = _parse_key_text(text, private=True, kind=kind)
    _check_alg(got_alg, alg, kind)
    if len(seed) != _SEED_SIZE:
        raise NoteError(f"{kind} seed must be {_SEED_SIZE} bytes, got {len(seed)}")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    want = _key_id(name, alg, private.public_key().public_bytes_raw())
    if key_id != want:
        raise NoteError(f"{kind} has key id {key_id:08x}, which does not match its key (expected {want:08x})")
    return name, private


def _format_public(name: str, key_id: int, alg: int, public_key: bytes) -> str:
    """Return the vkey text <name>+<key id>+<base64(alg || key)>."""
    return f"{name}+{key_id:08x}+{_b64encode(bytes([alg]) + public_key)}"


def _ed25519_verify(key: Ed25519PublicKey, msg: bytes, sig: bytes) -> bool:
    """Report whether sig is a valid 64-byte Ed25519 signature of msg under key."""
    if len(sig) != _ED25519_SIG_SIZE:
        return False
    try:
        key.verify(sig, msg)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _VerifierKey:
    """An Ed25519 public key bound to a key name, for one signature type (``_ALG``)."""

    _ALG: ClassVar[int]
    _WHAT: ClassVar[str]

    name: str
    public_key: bytes = field(repr=False)
    key_id: int = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key, key_id = _load_public(self.name, self.public_key, self._ALG)
        object.__setattr__(self, "key_id", key_id)
        object.__setattr__(self, "_key", key)

    @classmethod
    def from_text(cls, text: str) -> Self:
        """Parse a vkey text <name>+<hex8 id>+<base64(alg || key)>, checking the algorithm and key id."""
        return cls(*_public_from_text(text, cls._ALG, cls._WHAT))

    def to_text(self) -> str:
        """Return the vkey text of this key."""
        return _format_public(self.name, self.key_id, self._ALG, self.public_key)


@dataclass(frozen=True, slots=True)
class Verifier(_VerifierKey):
    """An Ed25519 note verifier key (signature type 0x01) bound to a key name."""

    _ALG = ALG_ED25519
    _WHAT = "verifier key"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Report whether sig is this key's Ed25519 signature of msg."""
        return _ed25519_verify(self._key, msg, sig)


@dataclass(frozen=True, slots=True)
class CosignatureVerifier(_VerifierKey):
    """A witness's Ed25519 cosignature/v1 verifier key (signature type 0x04)."""

    _ALG = ALG_COSIGNATURE_V1
    _WHAT = "cosignature verifier key"

    def verify_timestamped(self, checkpoint_text: str, timestamp: int, sig: bytes) -> bool:
        """Report whether sig is this witness's signature of checkpoint_text at timestamp."""
        try:
            msg = _cosigned_message(checkpoint_text, timestamp)
        except NoteError:
            return False
        return _ed25519_verify(self._key, msg, sig)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Report whether sig (timestamp || signature) cosigns the checkpoint body msg."""
        if len(sig) != _COSIGNATURE_SIZE:
            return False
        try:
            text = msg.decode("utf-8")
        except UnicodeDecodeError:
            return False
        timestamp = int.from_bytes(sig[:_TIMESTAMP_SIZE], "big")
        return self.verify_timestamped(text, timestamp, sig[_TIMESTAMP_SIZE:])


AnyVerifier = Verifier | CosignatureVerifier
"""Verifier kinds that open_note can check signature lines with."""


class _SignerKey:
    """An Ed25519 private key bound to a key name, for one signature type (``_ALG``)."""

    __slots__ = ("_private", "key_id", "name", "public_key")
    _ALG: int
    _WHAT: str

    name: str
    key_id: int
    public_key: bytes
    _private: Ed25519PrivateKey

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_name(name)
        self._private = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.key_id = _key_id(name, self._ALG, self.public_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, key_id={self.key_id:08x})"

    @classmethod
    def generate(cls, name: str) -> Self:
        """Return a key with fresh random bytes."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Self:
        """Return the key whose Ed25519 key derives from the 32-byte seed."""
        if len(seed) != _SEED_SIZE:
            raise NoteError(f"Ed25519 seed must be {_SEED_SIZE} bytes, got {len(seed)}")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_text(cls, text: str) -> Self:
        """Parse PRIVATE+KEY+<name>+<hex8 id>+<base64(alg || seed)>, checking the algorithm and key id."""
        return cls(*_private_from_text(text, cls._ALG, cls._WHAT))

    def to_text(self) -> str:
        """Return the secret key text of this key."""
        raw = bytes([self._ALG]) + self._private.private_bytes_raw()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{_b64encode(raw)}"


class Signer(_SignerKey):
    """An Ed25519 note signer (signature type 0x01) bound to a key name."""

    __slots__ = ()
    _ALG = ALG_ED25519
    _WHAT = "signer key"

    def sign(self, msg: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of msg."""
        return self._private.sign(msg)

    def verifier(self) -> Verifier:
        """Return the verifier key matching this signer."""
        return Verifier(self.name, self.public_key)


class CosignatureSigner(_SignerKey):
    """A witness's Ed25519 cosignature/v1 signer (signature type 0x04).

    Its key text is the signer key format with algorithm byte 0x04; plain 0x01 note keys are
    refused so that one key never makes both kinds of signature.
    """

    __slots__ = ()
    _ALG = ALG_COSIGNATURE_V1
    _WHAT = "cosignature signer key"

    def sign(self, checkpoint_text: str, timestamp: int) -> bytes:
        """Return timestamp (u64 big-endian) || Ed25519 signature over the cosigned message."""
        msg = _cosigned_message(checkpoint_text, timestamp)
        return timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + self._private.sign(msg)

    def verifier(self) -> CosignatureVerifier:
        """Return the cosignature verifier key matching this cosigner."""
        return CosignatureVerifier(self.name, self.public_key)


# --- key files -----------------------------------------------------------------------------------


def write_signer_key(path: str | os.PathLike[str], signer: Signer | CosignatureSigner) -> None:
    """Create path with mode 0600 holding the signer key text; never overwrites.

    Raises FileExistsError if path exists (a symlink included). A partly written file is removed.
    """
    data = (signer.to_text() + "\n").encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exact mode whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def _read_key_text(path: str | os.PathLike[str]) -> str:
    """Return the key text in path, without its one trailing newline."""
    with open(path, "rb") as f:
        data = f.read(_MAX_KEY_FILE_SIZE + 1)
    if len(data) > _MAX_KEY_FILE_SIZE:
        raise NoteError(f"key file is over {_MAX_KEY_FILE_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("key file is not valid UTF-8") from exc
    return text.removesuffix("\n")


def read_signer_key(path: str | os.PathLike[str]) -> Signer:
    """Return the note signer whose key text write_signer_key stored in path."""
    return Signer.from_text(_read_key_text(path))


def read_cosignature_signer_key(path: str | os.PathLike[str]) -> CosignatureSigner:
    """Return the cosigner whose key text write_signer_key stored in path."""
    return CosignatureSigner.from_text(_read_key_text(path))


# --- signed notes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key id, and the signature bytes after the key id."""

    name: str
    key_id: int
    signature: bytes

    def to_line(self) -> str:
        """Return the line '— <name> <base64(key id || signature)>' with its newline."""
        raw = self.key_id.to_bytes(_KEY_ID_SIZE, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {_b64encode(raw)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """An opened note: its text, verified signatures, and lines from unknown keys."""

    text: str
    signatures: tuple[Signature, ...]
    unverified_signatures: tuple[Signature, ...]


def parse_signature_line(line: str) -> Signature:
    """Parse one signature line, with or without its newline; raise if malformed."""
    body = line.removesuffix("\n")
    if "\n" in body:
        raise NoteError("signature line contains a newline")
    if not body.startswith(_SIG_PREFIX):
        raise NoteError("signature line does not start with an em dash (U+2014) and a space")
    name, sep, b64 = body[len(_SIG_PREFIX) :].partition(" ")
    if not sep:
        raise NoteError("signature line has no space between key name and signature")
    check_name(name)
    raw = _b64decode(b64, f"signature of {name!r}")
    if len(raw) <= _KEY_ID_SIZE:
        raise NoteError(f"signature of {name!r} is too short to hold a key id and a signature")
    return Signature(name, int.from_bytes(raw[:_KEY_ID_SIZE], "big"), raw[_KEY_ID_SIZE:])


def _split_note(data: bytes) -> tuple[str, list[Signature]]:
    """Return (text, signature lines) of a signed note, checking its structure and limits."""
    if len(data) > MAX_NOTE_SIZE:
        raise NoteError(f"note is {len(data)} bytes, over the {MAX_NOTE_SIZE} byte limit")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("note is not valid UTF-8") from exc
    _check_no_controls(whole, "note")
    split = whole.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signature lines")
    text, block = whole[: split + 1], whole[split + 2 :]
    if not block:
        raise NoteError("note has no signature lines after its last blank line")
    if not block.endswith("\n"):
        raise NoteError("note's last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signature lines, over the limit of {MAX_SIGNATURES}")
    sigs = []
    for number, line in enumerate(lines, start=1):
        try:
            sigs.append(parse_signature_line(line))
        except NoteError as exc:
            raise NoteError(f"signature line {number}: {exc}") from exc
    return text, sigs


def _join_note(text: str, sigs: Iterable[Signature]) -> bytes:
    """Return text, a blank line and the signature lines, checking the size limits."""
    lines = [sig.to_line() for sig in sigs]
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note would have {len(lines)} signatures, over the limit of {MAX_SIGNATURES}")
    data = (text + "\n" + "".join(lines)).encode("utf-8")
    if len(data) > MAX_NOTE_SIZE:
        raise NoteError(f"note would be {len(data)} bytes, over the {MAX_NOTE_SIZE} byte limit")
    return data


def _check_note_text(text: str) -> bytes:
    """Return text as UTF-8 if it can be the text of a signed note."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    msg = _check_utf8(text, "note text")
    _check_no_controls(text, "note text")
    return msg


def sign_note(text: str, *signers: Signer) -> bytes:
    """Return text signed by each signer, as a note that open_note parses back to text.

    The text must end in a newline and hold no control character other than newline. It may
    contain blank lines: readers split at the last blank line, which is always the one added here.
    """
    if not signers:
        raise NoteError("sign_note needs at least one signer")
    msg = _check_note_text(text)
    seen: set[tuple[str, int]] = set()
    sigs = []
    for signer in signers:
        if not isinstance(signer, Signer):
            raise NoteError("sign_note takes note Signers; cosign checkpoints with cosign()")
        key = (signer.name, signer.key_id)
        if key in seen:
            raise NoteError(f"signer {signer.name}+{signer.key_id:08x} is given twice")
        seen.add(key)
        sigs.append(Signature(signer.name, signer.key_id, signer.sign(msg)))
    return _join_note(text, sigs)


def _index_verifiers(verifiers: Iterable[AnyVerifier]) -> dict[tuple[str, int], AnyVerifier]:
    """Map (name, key id) to verifier, refusing two different keys under one name and id."""
    known: dict[tuple[str, int], AnyVerifier] = {}
    for verifier in verifiers:
        if not isinstance(verifier, Verifier | CosignatureVerifier):
            raise TypeError(f"not a verifier: {verifier!r}")
        key = (verifier.name, verifier.key_id)
        other = known.setdefault(key, verifier)
        if other != verifier:
            raise NoteError(f"two different verifier keys share the name and id {key[0]}+{key[1]:08x}")
    return known


def open_note(data: bytes, verifiers: Iterable[AnyVerifier]) -> Note:
    """Parse a signed note and verify every signature line from a known key.

    Lines from unknown keys (name and id not both matching a verifier) are kept, deduplicated,
    in unverified_signatures. Raises NoteError if the note is malformed or over the limits,
    InvalidSignatureError if a known key's signature fails, and UnverifiedNoteError if no known
    key signed it.
    """
    known = _index_verifiers(verifiers)
    text, sigs = _split_note(data)
    msg = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    verified_keys: set[tuple[str, int]] = set()
    for sig in sigs:
        key = (sig.name, sig.key_id)
        verifier = known.get(key)
        if verifier is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if not verifier.verify(msg, sig.signature):
            raise InvalidSignatureError(sig.name, sig.key_id)
        if key not in verified_keys:
            verified_keys.add(key)
            verified.append(sig)
    note = Note(text, tuple(verified), tuple(unverified))
    if not verified:
        raise UnverifiedNoteError(note)
    return note


# --- checkpoints ---------------------------------------------------------------------------------


class Checkpoint(msgspec.Struct, frozen=True):
    """A tlog-checkpoint body: origin, tree size, RFC 6962 root hash and extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin:
            raise NoteError("checkpoint origin is empty")
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise NoteError("checkpoint size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"checkpoint size {self.size} is outside 0..2^64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != 32:
            raise NoteError("checkpoint root hash must be 32 bytes")
        for number, line in enumerate(self.extensions, start=1):
            if not line:
                raise NoteError(f"checkpoint extension line {number} is empty")
            _check_line(line, f"checkpoint extension line {number}")


def _check_line(line: str, what: str) -> None:
    """Raise unless line is one line of valid note text."""
    if not isinstance(line, str):
        raise NoteError(f"{what} must be a str")
    if "\n" in line:
        raise NoteError(f"{what} contains a newline")
    _check_utf8(line, what)
    _check_no_controls(line, what)


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """Return the checkpoint body: origin, size, base64 root and extension lines, each + newline."""
    lines = [checkpoint.origin, str(checkpoint.size), _b64encode(checkpoint.root_hash)]
    lines.extend(checkpoint.extensions)
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body strictly; format_checkpoint of the result gives text back."""
    if len(text) > MAX_NOTE_SIZE:
        raise NoteError(f"checkpoint is over the {MAX_NOTE_SIZE} byte limit")
    if not text.endswith("\n"):
        raise NoteError("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint needs an origin, a tree size and a root hash line")
    origin, size_text, root_text, *extensions = lines
    if not _DECIMAL_RE.fullmatch(size_text):
        raise NoteError(f"checkpoint size {size_text!r} is not a decimal number without leading zeros")
    size = int(size_text)
    if size > MAX_TREE_SIZE:
        raise NoteError(f"checkpoint size {size_text} does not fit in 64 bits")
    root_hash = _b64decode(root_text, "checkpoint root hash")
    if len(root_hash) != 32:
        raise NoteError(f"checkpoint root hash is {len(root_hash)} bytes, not 32")
    return Checkpoint(origin, size, root_hash, tuple(extensions))


# --- cosignatures --------------------------------------------------------------------------------


def _cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    """Return 'cosignature/v1\\ntime <t>\\n' + checkpoint body, checking both."""
    parse_checkpoint(checkpoint_text)
    _check_timestamp(timestamp)
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_text}".encode()


def cosign(checkpoint_text: str, signer: CosignatureSigner, timestamp: int) -> str:
    """Return the witness's cosignature line for the checkpoint body at timestamp (POSIX seconds)."""
    sig = signer.sign(checkpoint_text, timestamp)
    return Signature(signer.name, signer.key_id, sig).to_line()


def cosignature_timestamp(signature: Signature) -> int:
    """Return the timestamp of an Ed25519 cosignature, checking its length and range."""
    if len(signature.signature) != _COSIGNATURE_SIZE:
        raise NoteError(
            f"cosignature of {signature.name!r} is {len(signature.signature)} bytes after the key id, "
            f"not {_COSIGNATURE_SIZE} (timestamp and Ed25519 signature)"
        )
    timestamp = int.from_bytes(signature.signature[:_TIMESTAMP_SIZE], "big")
    return _check_timestamp(timestamp)


def _check_cosignature(
    sig: Signature, checkpoint_text: str, verifier: CosignatureVerifier, max_timestamp: int | None
) -> int:
    """Verify one cosignature line from verifier's key; return its timestamp."""
    timestamp = cosignature_timestamp(sig)
    if not verifier.verify_timestamped(checkpoint_text, timestamp, sig.signature[_TIMESTAMP_SIZE:]):
        raise InvalidSignatureError(sig.name, sig.key_id)
    if max_timestamp is not None and timestamp > max_timestamp:
        raise NoteError(f"cosignature timestamp {timestamp} is after the allowed {max_timestamp}")
    return timestamp


def verify_cosignature(
    data: bytes | str,
    checkpoint_text: str,
    verifier: CosignatureVerifier,
    *,
    max_timestamp: int | None = None,
) -> int:
    """Verify the witness's cosignature of checkpoint_text and return its timestamp.

    data is either one signature line (with or without its newline) or a whole signed note
    (anything holding a blank line), whose text must equal checkpoint_text and which must carry
    at least one line from the witness; every such line must verify, and the latest timestamp is
    returned. Timestamps after max_timestamp, if given, are refused. The log's own signature is
    not checked here: open_note does that.
    """
    parse_checkpoint(checkpoint_text)
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_SIZE:
            raise NoteError(f"cosignature data is over the {MAX_NOTE_SIZE} byte limit")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("cosignature data is not valid UTF-8") from exc
    if "\n\n" not in data:
        sig = parse_signature_line(data)
        if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
            raise NoteError(
                f"signature line is from {sig.name}+{sig.key_id:08x}, "
                f"not the witness {verifier.name}+{verifier.key_id:08x}"
            )
        return _check_cosignature(sig, checkpoint_text, verifier, max_timestamp)
    text, sigs = _split_note(data.encode("utf-8"))
    if text != checkpoint_text:
        raise NoteError("note text is not the given checkpoint")
    mine = [s for s in sigs if (s.name, s.key_id) == (verifier.name, verifier.key_id)]
    if not mine:
        raise NoteError(f"note has no cosignature from {verifier.name}+{verifier.key_id:08x}")
    return max(_check_cosignature(s, checkpoint_text, verifier, max_timestamp) for s in mine)


def add_cosignatures(note: bytes, lines: Iterable[str]) -> bytes:
    """Return the signed checkpoint note with the cosignature lines appended.

    Each line must be a well-formed Ed25519 cosignature line; it replaces any line already in
    the note under the same key name and id. Signatures are not verified here.
    """
    text, sigs = _split_note(note)
    try:
        parse_checkpoint(text)
    except NoteError as exc:
        raise NoteError(f"note text is not a checkpoint: {exc}") from exc
    new: dict[tuple[str, int], Signature] = {}
    for line in lines:
        sig = parse_signature_line(line)
        cosignature_timestamp(sig)
        key = (sig.name, sig.key_id)
        if key in new:
            raise NoteError(f"two cosignature lines for {sig.name}+{sig.key_id:08x}")
        new[key] = sig
    kept = [s for s in sigs if (s.name, s.key_id) not in new]
    return _join_note(text, [*kept, *new.values()])
