"""Tests of shared.note: keys, signed notes, checkpoints and cosignatures."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.note import (
    ALG_COSIGNATURE_V1,
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    MAX_TIMESTAMP,
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    InvalidSignatureError,
    NoteError,
    Signature,
    Signer,
    UnverifiedNoteError,
    Verifier,
    add_cosignatures,
    check_name,
    cosign,
    cosignature_timestamp,
    format_checkpoint,
    open_note,
    parse_checkpoint,
    parse_signature_line,
    read_cosignature_signer_key,
    read_signer_key,
    sign_note,
    verify_cosignature,
    write_signer_key,
)

# Known answers from the documentation and tests of golang.org/x/mod/sumdb/note.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
QUOTE = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_LINE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_LINE = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
PETER_NOTE = (QUOTE + "\n" + PETER_LINE).encode()

# Examples from c2sp.org/signed-note, tlog-checkpoint and tlog-cosignature.
SPEC_CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_COSIGNATURE_LINE = (
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZC"
    "B9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_COSIGNATURE_TIME = 1679315147
POEM_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "\u2014 quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()

ROOT = bytes(range(32))


def _enoch() -> Signer:
    """The EnochRoot key of the Go tests, which is the all-zero Ed25519 seed."""
    return Signer.from_seed("EnochRoot", bytes(32))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- known answers -------------------------------------------------------------------------------


def test_peter_signer_derives_published_verifier() -> None:
    signer = Signer.from_text(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id == 0xC74F20A3
    assert signer.verifier().to_text() == PETER_VKEY
    assert signer.to_text() == PETER_SKEY
    assert Verifier.from_text(PETER_VKEY) == signer.verifier()


def test_sign_note_reproduces_published_signature() -> None:
    assert sign_note(QUOTE, Signer.from_text(PETER_SKEY)) == PETER_NOTE


def test_open_note_verifies_published_signature() -> None:
    note = open_note(PETER_NOTE, [Verifier.from_text(PETER_VKEY)])
    assert note.text == QUOTE
    assert note.signatures == (parse_signature_line(PETER_LINE),)
    assert note.signatures[0].to_line() == PETER_LINE
    assert note.unverified_signatures == ()


def test_enoch_zero_seed_is_published_key() -> None:
    assert _enoch().verifier().to_text() == ENOCH_VKEY


def test_sign_note_reproduces_published_two_signature_note() -> None:
    signed = sign_note(QUOTE, Signer.from_text(PETER_SKEY), _enoch())
    assert signed == (QUOTE + "\n" + PETER_LINE + ENOCH_LINE).encode()


def test_open_note_keeps_unknown_signature_unverified() -> None:
    data = (QUOTE + "\n" + PETER_LINE + ENOCH_LINE).encode()
    note = open_note(data, [Verifier.from_text(PETER_VKEY)])
    assert [s.name for s in note.signatures] == ["PeterNeumann"]
    assert note.unverified_signatures == (parse_signature_line(ENOCH_LINE),)
    assert note.unverified_signatures[0].key_id == 0xAF0CFE78
    both = open_note(data, [Verifier.from_text(PETER_VKEY), Verifier.from_text(ENOCH_VKEY)])
    assert [s.name for s in both.signatures] == ["PeterNeumann", "EnochRoot"]
    assert both.unverified_signatures == ()


def test_open_note_splits_spec_example_at_last_blank_line() -> None:
    with pytest.raises(UnverifiedNoteError) as info:
        open_note(POEM_NOTE, [])
    note = info.value.note
    assert note.text.endswith("\n\ned è subito sera.\n")
    assert note.signatures == ()
    assert [s.name for s in note.unverified_signatures] == ["quasimodo.example/salvatore"]


# --- keys ----------------------------------------------------------------------------------------


def test_generated_keys_round_trip() -> None:
    signer = Signer.generate("log.example/timebank")
    again = Signer.from_text(signer.to_text())
    assert again.key_id == signer.key_id
    assert again.public_key == signer.public_key
    verifier = Verifier.from_text(signer.verifier().to_text())
    assert verifier == signer.verifier()
    assert verifier.verify(b"msg", signer.sign(b"msg"))
    assert not verifier.verify(b"msg!", signer.sign(b"msg"))
    assert not verifier.verify(b"msg", signer.sign(b"msg")[:63])


def test_key_id_is_hash_of_name_type_and_key() -> None:
    signer = Signer.generate("a.example")
    digest = hashlib.sha256(b"a.example\n\x01" + signer.public_key).digest()
    assert signer.key_id == int.from_bytes(digest[:4], "big")


def test_uppercase_key_id_is_accepted_and_written_lowercase() -> None:
    verifier = Verifier.from_text(PETER_VKEY.replace("c74f20a3", "C74F20A3"))
    assert verifier.to_text() == PETER_VKEY


def test_repr_does_not_leak_the_seed() -> None:
    text = repr(Signer.from_text(PETER_SKEY))
    assert "AYEK" not in text
    assert "c74f20a3" in text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("a+b", "contains '\\+'"),
        ("a b", "space"),
        ("a\u00a0b", "space"),
        ("a\u2028b", "space"),
        ("a\x01b", "control"),
        ("a\ud800b", "UTF-8"),
    ],
)
def test_bad_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        check_name(name)
    with pytest.raises(NoteError, match=message):
        Signer.generate(name)


def test_good_names_are_accepted() -> None:
    assert check_name("sum.golang.org") == "sum.golang.org"
    assert check_name("oid/1.3.6.1.4.1.44363.47.1") == "oid/1.3.6.1.4.1.44363.47.1"
    assert check_name("café.example") == "café.example"


def _seed_text(alg: int, seed: bytes, name: str = "PeterNeumann", key_id: str = "c74f20a3") -> str:
    return f"PRIVATE+KEY+{name}+{key_id}+{_b64(bytes([alg]) + seed)}"


PETER_SEED = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (PETER_SKEY.removeprefix("PRIVATE+"), "does not start with"),
        ("PRIVATE+KEY+PeterNeumann+c74f20a3", "not of the form"),
        (_seed_text(0x04, PETER_SEED), r"algorithm byte 0x04 \(0x04 is an Ed25519 cosignature"),
        (_seed_text(0x07, PETER_SEED), r"algorithm byte 0x07 \(unknown algorithm\)"),
        (_seed_text(0x01, PETER_SEED[:31]), "seed must be 32 bytes, got 31"),
        (_seed_text(0x01, PETER_SEED + b"\0"), "seed must be 32 bytes, got 33"),
        (_seed_text(0x01, PETER_SEED, key_id="c74f20a4"), "key id c74f20a4, which does not match its key"),
        (_seed_text(0x01, PETER_SEED, name="PeterNeuman"), "does not match its key"),
        (_seed_text(0x01, PETER_SEED, key_id="c74f20a"), "not 8 hex digits"),
        (_seed_text(0x01, PETER_SEED, key_id="0xc74f20"), "not 8 hex digits"),
        (PETER_SKEY[:-1] + "!", "not valid base64"),
        (PETER_SKEY[:-1], "not valid base64"),
        (PETER_SKEY + "=", "not valid base64"),
        ("PRIVATE+KEY+Peter Neumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", "space"),
        ("PRIVATE+KEY++c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", "empty"),
        ("PRIVATE+KEY+PeterNeumann+c74f20a3+", "key data is empty"),
    ],
)
def test_malformed_signer_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message) as info:
        Signer.from_text(text)
    assert "FALVFGyNhPJEMzD1" not in str(info.value)


def _vkey_text(alg: int, key: bytes, name: str = "PeterNeumann", key_id: str = "c74f20a3") -> str:
    return f"{name}+{key_id}+{_b64(bytes([alg]) + key)}"


PETER_PUBLIC = Verifier.from_text(PETER_VKEY).public_key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PeterNeumann+c74f20a3", "not of the form"),
        ("PeterNeumann", "not of the form"),
        (_vkey_text(0x04, PETER_PUBLIC), "algorithm byte 0x04"),
        (_vkey_text(0x02, PETER_PUBLIC), "algorithm byte 0x02"),
        (_vkey_text(0x01, PETER_PUBLIC[:31]), "public key must be 32 bytes, got 31"),
        (_vkey_text(0x01, PETER_PUBLIC + b"\0"), "public key must be 32 bytes, got 33"),
        (_vkey_text(0x01, PETER_PUBLIC, key_id="00000000"), "key id 00000000, which does not match its key"),
        (_vkey_text(0x01, PETER_PUBLIC, key_id="c74f20a3 "), "not 8 hex digits"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not valid base64"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegw xbzhKqiBfsVkmqq/LDE4izWy10TW", "not valid base64"),
        ("Peter+Neumann+c74f20a3+" + PETER_VKEY.split("+", 2)[2], "not 8 hex digits"),
    ],
)
def test_malformed_verifier_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Verifier.from_text(text)


def test_verifier_refuses_wrong_public_key_length() -> None:
    with pytest.raises(NoteError, match="32 bytes, got 31"):
        Verifier("a.example", bytes(31))


# --- key files -----------------------------------------------------------------------------------


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    signer = Signer.generate("log.example")
    old_umask = os.umask(0)
    try:
        write_signer_key(path, signer)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == signer.to_text() + "\n"
    assert read_signer_key(path).public_key == signer.public_key


def test_key_file_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    path.write_text("precious\n")
    with pytest.raises(FileExistsError):
        write_signer_key(path, Signer.generate("log.example"))
    assert path.read_text() == "precious\n"


def test_key_file_refuses_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    link = tmp_path / "log.key"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        write_signer_key(link, Signer.generate("log.example"))
    assert not target.exists()


def test_cosignature_key_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "witness.key"
    signer = CosignatureSigner.generate("witness.example/w1")
    write_signer_key(path, signer)
    assert read_cosignature_signer_key(path).verifier() == signer.verifier()
    with pytest.raises(NoteError, match="algorithm byte 0x04"):
        read_signer_key(path)


def test_key_file_read_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(NoteError, match="UTF-8"):
        read_signer_key(path)
    path.write_bytes(b"x" * 5000)
    with pytest.raises(NoteError, match="over 4096 bytes"):
        read_signer_key(path)


# --- signed notes --------------------------------------------------------------------------------


def test_sign_and_open_round_trip_with_blank_lines() -> None:
    signer = Signer.generate("log.example")
    for text in ["a\n", "\n", "a\n\nb\n", "a\n\n", "a\n\n\u2014 fake AAAAAAA=\n", "héllo\n"]:
        note = open_note(sign_note(text, signer), [signer.verifier()])
        assert note.text == text


def test_tampered_text_is_refused() -> None:
    tampered = PETER_NOTE.replace(b"If you", b"Of you")
    with pytest.raises(InvalidSignatureError, match="PeterNeumann\\+c74f20a3"):
        open_note(tampered, [Verifier.from_text(PETER_VKEY)])


def _with_signature(sig: Signature, raw: bytes) -> bytes:
    return (QUOTE + "\n" + Signature(sig.name, sig.key_id, raw).to_line()).encode()


def test_tampered_signature_is_refused() -> None:
    sig = parse_signature_line(PETER_LINE)
    for index in (0, 31, 63):
        raw = bytearray(sig.signature)
        raw[index] ^= 1
        with pytest.raises(InvalidSignatureError):
            open_note(_with_signature(sig, bytes(raw)), [Verifier.from_text(PETER_VKEY)])
    with pytest.raises(InvalidSignatureError):
        open_note(_with_signature(sig, sig.signature + b"\0"), [Verifier.from_text(PETER_VKEY)])


def test_tampered_key_id_makes_the_signature_unknown() -> None:
    sig = parse_signature_line(PETER_LINE)
    line = Signature(sig.name, sig.key_id ^ 1, sig.signature).to_line()
    with pytest.raises(UnverifiedNoteError):
        open_note((QUOTE + "\n" + line).encode(), [Verifier.from_text(PETER_VKEY)])


def test_wrong_key_is_refused() -> None:
    other = Signer.generate("PeterNeumann")
    with pytest.raises(UnverifiedNoteError) as info:
        open_note(PETER_NOTE, [other.verifier()])
    assert [s.name for s in info.value.note.unverified_signatures] == ["PeterNeumann"]


def test_key_id_collision_with_a_different_key_is_refused() -> None:
    impostor = Signer.generate("PeterNeumann")
    forged = Signature("PeterNeumann", 0xC74F20A3, impostor.sign(QUOTE.encode())).to_line()
    with pytest.raises(InvalidSignatureError):
        open_note((QUOTE + "\n" + forged).encode(), [Verifier.from_text(PETER_VKEY)])


def test_two_different_keys_under_one_name_and_id_are_refused() -> None:
    peter = Verifier.from_text(PETER_VKEY)
    twin = Verifier("PeterNeumann", Signer.generate("x").public_key)
    object.__setattr__(twin, "key_id", peter.key_id)
    with pytest.raises(NoteError, match="share the name and id PeterNeumann\\+c74f20a3"):
        open_note(PETER_NOTE, [peter, twin])
    assert open_note(PETER_NOTE, [peter, Verifier.from_text(PETER_VKEY)]).text == QUOTE


def test_duplicate_lines_are_kept_once() -> None:
    data = (QUOTE + "\n" + PETER_LINE + ENOCH_LINE + PETER_LINE + ENOCH_LINE).encode()
    note = open_note(data, [Verifier.from_text(PETER_VKEY)])
    assert len(note.signatures) == 1
    assert len(note.unverified_signatures) == 1


def test_bad_second_signature_from_a_known_key_is_refused() -> None:
    sig = parse_signature_line(PETER_LINE)
    bad = Signature(sig.name, sig.key_id, bytes(64)).to_line()
    with pytest.raises(InvalidSignatureError):
        open_note(PETER_NOTE + bad.encode(), [Verifier.from_text(PETER_VKEY)])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (QUOTE.encode() + PETER_LINE.encode(), "no blank line"),
        (PETER_NOTE[:-1], "does not end in a newline"),
        (PETER_NOTE + b"\n", "no signature lines"),
        (QUOTE.encode() + b"\n", "no signature lines"),
        (QUOTE.encode() + b"\n- PeterNeumann AAAAAAA=\n", "line 1: .*em dash"),
        (PETER_NOTE + "\u2014 PeterNeumann\n".encode(), "line 2: .*no space"),
        (PETER_NOTE + "\u2014  AAAAAAA=\n".encode(), "line 2: .*empty"),
        (PETER_NOTE + "\u2014 a+b AAAAAAA=\n".encode(), "line 2: .*'\\+'"),
        (PETER_NOTE + "\u2014 x AAAAAAA\n".encode(), "line 2: .*not valid base64"),
        (PETER_NOTE + "\u2014 x AAAAAAB=\n".encode(), "line 2: .*not canonical base64"),
        (PETER_NOTE.replace(b"JnAM=", b"JnAN="), "line 1: .*not canonical base64"),
        (PETER_NOTE + "\u2014 x AAAAAAAA=\n".encode(), "line 2: .*not valid base64"),
        (PETER_NOTE + "\u2014 x AAAAAAA==\n".encode(), "line 2: .*not valid base64"),
        (PETER_NOTE + "\u2014 x AAAAAA==\n".encode(), "line 2: .*too short"),
        (PETER_NOTE + "\u2014 x  AAAAAAAA\n".encode(), "line 2: .*not valid base64"),
        (PETER_NOTE.replace(b"problem,", b"problem,\r"), "control character"),
        (PETER_NOTE.replace(b"problem,", b"problem,\t"), "control character"),
        (PETER_NOTE.replace(b"problem,", b"problem,\xff"), "not valid UTF-8"),
        (PETER_NOTE.replace(b"problem,", b"problem,\xed\xa0\x80"), "not valid UTF-8"),
    ],
)
def test_malformed_notes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        open_note(data, [Verifier.from_text(PETER_VKEY)])


def test_signature_count_limit() -> None:
    filler = [Signature(f"w{i}.example", i, bytes(64)).to_line() for i in range(MAX_SIGNATURES - 1)]
    at_limit = PETER_NOTE + "".join(filler).encode()
    note = open_note(at_limit, [Verifier.from_text(PETER_VKEY)])
    assert len(note.unverified_signatures) == MAX_SIGNATURES - 1
    over = at_limit + Signature("one.more", 1, bytes(64)).to_line().encode()
    with pytest.raises(NoteError, match="101 signature lines, over the limit of 100"):
        open_note(over, [Verifier.from_text(PETER_VKEY)])


def test_size_limit() -> None:
    signer = Signer.generate("log.example")
    big = "x" * (MAX_NOTE_SIZE - 200) + "\n"
    assert open_note(sign_note(big, signer), [signer.verifier()]).text == big
    huge = "x" * MAX_NOTE_SIZE + "\n"
    with pytest.raises(NoteError, match="byte limit"):
        sign_note(huge, signer)
    with pytest.raises(NoteError, match="byte limit"):
        open_note(huge.encode() + b"\n" + PETER_LINE.encode(), [signer.verifier()])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no newline", "must end with a newline"),
        ("", "must end with a newline"),
        ("tab\there\n", "control character"),
        ("cr\r\n", "control character"),
        ("bad \ud800\n", "UTF-8"),
    ],
)
def test_sign_note_refuses_bad_text(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        sign_note(text, Signer.generate("log.example"))


def test_sign_note_refuses_missing_or_repeated_signers() -> None:
    signer = Signer.generate("log.example")
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("a\n")
    with pytest.raises(NoteError, match="given twice"):
        sign_note("a\n", signer, signer)


# --- checkpoints ---------------------------------------------------------------------------------


def test_spec_checkpoint_round_trips() -> None:
    cp = parse_checkpoint(SPEC_CHECKPOINT)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert len(cp.root_hash) == 32
    assert cp.extensions == ()
    assert format_checkpoint(cp) == SPEC_CHECKPOINT


def test_checkpoint_with_extensions_round_trips() -> None:
    cp = Checkpoint("timebank.example/ledger", 0, ROOT, ("ext one", "ext two"))
    text = format_checkpoint(cp)
    assert text == f"timebank.example/ledger\n0\n{_b64(ROOT)}\next one\next two\n"
    assert parse_checkpoint(text) == cp


def test_checkpoint_msgspec_round_trip() -> None:
    cp = Checkpoint("timebank.example/ledger", 7, ROOT)
    assert msgspec.json.decode(msgspec.json.encode(cp), type=Checkpoint) == cp
    with pytest.raises(msgspec.ValidationError, match="32 bytes"):
        msgspec.json.decode(b'{"origin":"o","size":1,"root_hash":"AAAA"}', type=Checkpoint)


ROOT_B64 = _b64(ROOT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n1\n{ROOT_B64}", "must end with a newline"),
        ("o\n1\n", "origin, a tree size and a root hash"),
        (f"\n1\n{ROOT_B64}\n", "origin is empty"),
        (f"o\n01\n{ROOT_B64}\n", "'01' is not a decimal number"),
        (f"o\n00\n{ROOT_B64}\n", "'00' is not a decimal number"),
        (f"o\n-1\n{ROOT_B64}\n", "not a decimal number"),
        (f"o\n+1\n{ROOT_B64}\n", "not a decimal number"),
        (f"o\n 1\n{ROOT_B64}\n", "not a decimal number"),
        (f"o\n1_0\n{ROOT_B64}\n", "not a decimal number"),
        (f"o\n\u0661\n{ROOT_B64}\n", "not a decimal number"),
        (f"o\n\n{ROOT_B64}\n", "not a decimal number"),
        (f"o\n{1 << 64}\n{ROOT_B64}\n", "does not fit in 64 bits"),
        ("o\n1\nnot base64!\n", "root hash is not valid base64"),
        (f"o\n1\n{ROOT_B64[:-2]}\n", "root hash is not valid base64"),
        (f"o\n1\n{ROOT_B64[:-2]}B=\n", "root hash is not canonical base64"),
        (f"o\n1\n{_b64(bytes(31))}\n", "root hash is 31 bytes, not 32"),
        (f"o\n1\n{_b64(bytes(33))}\n", "root hash is 33 bytes, not 32"),
        (f"o\n1\n{ROOT_B64}\n\n", "extension line 1 is empty"),
        (f"o\n1\n{ROOT_B64}\n\n\u2014 x AAAA\n", "extension line 1 is empty"),
        (f"o\tx\n1\n{ROOT_B64}\n", "control character"),
    ],
)
def test_malformed_checkpoints_are_refused(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        parse_checkpoint(text)


def test_checkpoint_accepts_size_zero_and_max() -> None:
    assert parse_checkpoint(f"o\n0\n{ROOT_B64}\n").size == 0
    assert parse_checkpoint(f"o\n{(1 << 64) - 1}\n{ROOT_B64}\n").size == (1 << 64) - 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": ""}, "origin is empty"),
        ({"origin": "a\nb"}, "origin contains a newline"),
        ({"size": -1}, "outside"),
        ({"size": 1 << 64}, "outside"),
        ({"root_hash": bytes(31)}, "32 bytes"),
        ({"extensions": ("",)}, "extension line 1 is empty"),
        ({"extensions": ("a\nb",)}, "extension line 1 contains a newline"),
    ],
)
def test_checkpoint_constructor_validates(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": ()}
    fields.update(kwargs)
    with pytest.raises(NoteError, match=message):
        Checkpoint(**fields)  # type: ignore[arg-type]


# --- cosignatures --------------------------------------------------------------------------------


def _signed_checkpoint() -> tuple[str, bytes, Signer]:
    log = Signer.from_seed("timebank.example/ledger", bytes([7]) * 32)
    body = format_checkpoint(Checkpoint("timebank.example/ledger", 42, ROOT))
    return body, sign_note(body, log), log


def test_spec_cosignature_line_carries_spec_timestamp() -> None:
    sig = parse_signature_line(SPEC_COSIGNATURE_LINE)
    assert sig.name == "witness.example.com/w1"
    assert cosignature_timestamp(sig) == SPEC_COSIGNATURE_TIME


def test_cosignature_key_id_and_vkey_use_type_0x04() -> None:
    witness = CosignatureSigner.from_seed("witness.example/w1", bytes(32))
    digest = hashlib.sha256(b"witness.example/w1\n\x04" + witness.public_key).digest()
    assert witness.key_id == int.from_bytes(digest[:4], "big")
    vkey = witness.verifier().to_text()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == ALG_COSIGNATURE_V1
    assert vkey.split("+")[1] == f"{witness.key_id:08x}"
    assert CosignatureVerifier.from_text(vkey) == witness.verifier()
    assert CosignatureSigner.from_text(witness.to_text()).key_id == witness.key_id
    assert witness.key_id != Signer.from_seed("witness.example/w1", bytes(32)).key_id


def test_cosignature_signs_the_spec_message() -> None:
    witness = CosignatureSigner.generate("witness.example/w1")
    line = cosign(SPEC_CHECKPOINT, witness, SPEC_COSIGNATURE_TIME)
    raw = parse_signature_line(line).signature
    assert raw[:8] == SPEC_COSIGNATURE_TIME.to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + SPEC_CHECKPOINT.encode()
    Ed25519PublicKey.from_public_bytes(witness.public_key).verify(raw[8:], message)


def test_cosign_and_verify_line_round_trip() -> None:
    body, _, _ = _signed_checkpoint()
    witness = CosignatureSigner.generate("witness.example/w1")
    line = cosign(body, witness, 1_700_000_000)
    assert line.startswith("\u2014 witness.example/w1 ")
    assert verify_cosignature(line, body, witness.verifier()) == 1_700_000_000
    assert verify_cosignature(line.rstrip("\n").encode(), body, witness.verifier()) == 1_700_000_000


def test_cosigned_note_round_trip() -> None:
    body, signed, log = _signed_checkpoint()
    w1 = CosignatureSigner.generate("witness.example/w1")
    w2 = CosignatureSigner.generate("witness.example/w2")
    note = add_cosignatures(signed, [cosign(body, w1, 100), cosign(body, w2, 200)])
    assert note.startswith(signed)
    assert verify_cosignature(note, body, w1.verifier()) == 100
    assert verify_cosignature(note, body, w2.verifier()) == 200
    opened = open_note(note, [log.verifier(), w1.verifier()])
    assert [s.name for s in opened.signatures] == ["timebank.example/ledger", "witness.example/w1"]
    assert [s.name for s in opened.unverified_signatures] == ["witness.example/w2"]
    assert cosignature_timestamp(opened.signatures[1]) == 100


def test_add_cosignatures_replaces_same_witness() -> None:
    body, signed, log = _signed_checkpoint()
    witness = CosignatureSigner.generate("witness.example/w1")
    once = add_cosignatures(signed, [cosign(body, witness, 100)])
    twice = add_cosignatures(once, [cosign(body, witness, 300)])
    assert twice.count(b"witness.example/w1") == 1
    assert verify_cosignature(twice, body, witness.verifier()) == 300
    assert open_note(twice, [log.verifier()]).text == body


def test_add_cosignatures_refuses_bad_input() -> None:
    body, signed, log = _signed_checkpoint()
    witness = CosignatureSigner.generate("witness.example/w1")
    plain_line = Signature(log.name, log.key_id, log.sign(body.encode())).to_line()
    with pytest.raises(NoteError, match="not 72 \\(timestamp and Ed25519 signature\\)"):
        add_cosignatures(signed, [plain_line])
    with pytest.raises(NoteError, match="two cosignature lines"):
        add_cosignatures(signed, [cosign(body, witness, 1), cosign(body, witness, 2)])
    with pytest.raises(NoteError, match="not a checkpoint"):
        add_cosignatures(PETER_NOTE, [cosign(body, witness, 1)])
    with pytest.raises(NoteError, match="em dash"):
        add_cosignatures(signed, ["garbage\n"])


def test_tampered_cosignatures_are_refused() -> None:
    body, signed, _ = _signed_checkpoint()
    witness = CosignatureSigner.generate("witness.example/w1")
    line = cosign(body, witness, 1000)
    other_body = body.replace("\n42\n", "\n43\n")
    with pytest.raises(InvalidSignatureError):
        verify_cosignature(line, other_body, witness.verifier())
    sig = parse_signature_line(line)
    moved = Signature(sig.name, sig.key_id, (1001).to_bytes(8, "big") + sig.signature[8:]).to_line()
    with pytest.raises(InvalidSignatureError):
        verify_cosignature(moved, body, witness.verifier())
    flipped = bytearray(sig.signature)
    flipped[20] ^= 0x80
    with pytest.raises(InvalidSignatureError):
        verify_cosignature(Signature(sig.name, sig.key_id, bytes(flipped)).to_line(), body, witness.verifier())
    note = add_cosignatures(signed, [moved])
    with pytest.raises(InvalidSignatureError):
        verify_cosignature(note, body, witness.verifier())
    with pytest.raises(InvalidSignatureError):
        open_note(note, [witness.verifier()])


def test_cosignature_from_another_witness_is_refused() -> None:
    body, signed, _ = _signed_checkpoint()
    witness = CosignatureSigner.generate("witness.example/w1")
    impostor = CosignatureSigner.generate("witness.example/w1")
    line = cosign(body, impostor, 5)
    with pytest.raises(NoteError, match="not the witness"):
        verify_cosignature(line, body, witness.verifier())
    with pytest.raises(NoteError, match=r"no cosignature from witness\.example/w1"):
        verify_cosignature(add_cosignatures(signed, [line]), body, witness.verifier())
    forged = Signature(witness.name, witness.key_id, parse_signature_line(line).signature).to_line()
    with pytest.raises(InvalidSignatureError):
        verify_cosignature(forged, body, witness.verifier())


def test_cosigned_note_must_match_checkpoint() -> None:
    body, signed, _ = _signed_checkpoint()
    witness = CosignatureSigner.generate("witness.example/w1")
    note = add_cosignatures(signed, [cosign(body, witness, 5)])
    with pytest.raises(NoteError, match="not the given checkpoint"):
        verify_cosignature(note, body.replace("42", "41"), witness.verifier())


def test_cosignature_timestamp_limits() -> None:
    body, _, _ = _signed_checkpoint()
    witness = CosignatureSigner.generate("witness.example/w1")
    assert verify_cosignature(cosign(body, witness, 0), body, witness.verifier()) == 0
    top = cosign(body, witness, MAX_TIMESTAMP)
    assert verify_cosignature(top, body, witness.verifier()) == MAX_TIMESTAMP
    with pytest.raises(NoteError, match="after the allowed 1000"):
        verify_cosignature(top, body, witness.verifier(), max_timestamp=1000)
    for bad in (-1, MAX_TIMESTAMP + 1):
        with pytest.raises(NoteError, match=r"outside 0\.\.2\^63-1"):
            cosign(body, witness, bad)
    sig = parse_signature_line(top)
    too_big = Signature(sig.name, sig.key_id, (MAX_TIMESTAMP + 1).to_bytes(8, "big") + sig.signature[8:])
    with pytest.raises(NoteError, match=r"outside 0\.\.2\^63-1"):
        verify_cosignature(too_big.to_line(), body, witness.verifier())


def test_cosign_refuses_non_checkpoint_text() -> None:
    witness = CosignatureSigner.generate("witness.example/w1")
    with pytest.raises(NoteError, match="origin, a tree size and a root hash"):
        cosign(QUOTE, witness, 1)
    assert not witness.verifier().verify(QUOTE.encode(), bytes(72))


def test_cosignature_and_note_keys_are_not_interchangeable() -> None:
    witness = CosignatureSigner.from_seed("w.example", bytes(32))
    plain = Signer.from_seed("w.example", bytes(32))
    with pytest.raises(NoteError, match="algorithm byte 0x01 \\(0x01 is a plain Ed25519 note key\\)"):
        CosignatureSigner.from_text(plain.to_text())
    with pytest.raises(NoteError, match="algorithm byte 0x01"):
        CosignatureVerifier.from_text(plain.verifier().to_text())
    with pytest.raises(NoteError, match="algorithm byte 0x04"):
        Signer.from_text(witness.to_text())
    with pytest.raises(NoteError, match="algorithm byte 0x04"):
        Verifier.from_text(witness.verifier().to_text())
    with pytest.raises(NoteError, match="takes note Signers"):
        sign_note("a\n", witness)  # type: ignore[arg-type]
