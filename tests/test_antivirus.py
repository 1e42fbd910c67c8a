"""The built-in scanner on real messages and real zip files, bombs included."""

from __future__ import annotations

import email
import email.policy
import io
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.antivirus import (
    DEFAULT_LIMITS,
    EICAR,
    EICAR_SIGNATURE,
    Outcome,
    Part,
    ScanLimits,
    ScanResult,
    scan_message_bytes,
    scan_parts,
)
from policy.message.attachments import clean_filename
from policy.message.headerblock import canonical
from tests.support.corpus.cases import attached

MIB = 1024 * 1024


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zeros_zip(name: str, size: int) -> bytes:
    """One member of ``size`` zero bytes, written in chunks so the test stays small."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w", force_zip64=True) as member,
    ):
        chunk = bytes(MIB)
        for _ in range(size // MIB):
            member.write(chunk)
    return buffer.getvalue()


def set_encrypted_flag(data: bytes) -> bytes:
    """Mark every member encrypted, as `zip -e` does, in local and central headers."""
    patched = bytearray(data)
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (at := patched.find(signature, start)) >= 0:
            (flags,) = struct.unpack_from("<H", patched, at + flag_offset)
            struct.pack_into("<H", patched, at + flag_offset, flags | 0x1)
            start = at + 4
    return bytes(patched)


def pe_executable() -> bytes:
    header = bytearray(b"MZ" + bytes(0x3E))
    struct.pack_into("<I", header, 0x3C, 0x40)
    return bytes(header) + b"PE\x00\x00" + bytes(64)


# --- clean mail -----------------------------------------------------------------


def test_clean_mail_with_ordinary_attachments_passes() -> None:
    raw = attached(
        ("report.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 20),
        ("photos.zip", make_zip({"a.jpg": b"\xff\xd8\xff\xe0" + b"x" * 5000, "notes.txt": b"hi"})),
        ("letter.docx", make_zip({"word/document.xml": b"<w:document/>"})),
    )
    result = scan_message_bytes(raw)
    assert result.outcome is Outcome.CLEAN
    assert result.passes


def test_mail_quoting_eicar_in_its_text_is_not_a_virus() -> None:
    """EICAR rules: only a file that *is* the test string counts."""
    raw = attached(body="Our scanner flagged this string:\n" + EICAR.decode() + "\nIs that ok?")
    assert scan_message_bytes(raw).outcome is Outcome.CLEAN


# --- EICAR ----------------------------------------------------------------------


def test_eicar_as_plain_attachment() -> None:
    result = scan_message_bytes(attached(("eicar.com.txt", EICAR)))
    assert result.outcome is Outcome.INFECTED
    assert (result.reason, result.signature, result.filename) == (
        "virus",
        EICAR_SIGNATURE,
        "eicar.com.txt",
    )
    assert not result.passes


def test_eicar_as_the_body_with_trailing_whitespace() -> None:
    result = scan_message_bytes(attached(body=EICAR.decode() + "  \n"))
    assert (result.outcome, result.reason) == (Outcome.INFECTED, "virus")


def test_eicar_in_a_zip() -> None:
    result = scan_message_bytes(attached(("files.zip", make_zip({"eicar.txt": EICAR}))))
    assert (result.reason, result.filename) == ("virus", "files.zip/eicar.txt")


def test_eicar_in_a_nested_zip() -> None:
    inner = make_zip({"deep/eicar.txt": EICAR})
    middle = make_zip({"inner.zip": inner, "readme.txt": b"nothing here"})
    outer = make_zip({"middle.zip": middle})
    result = scan_message_bytes(attached(("outer.zip", outer)))
    assert result.outcome is Outcome.INFECTED
    assert result.filename == "outer.zip/middle.zip/inner.zip/deep/eicar.txt"


def test_eicar_in_an_attached_message() -> None:
    inner = email.message_from_bytes(attached(("eicar.txt", EICAR)), policy=email.policy.default)
    outer = EmailMessage()
    outer["Subject"] = "Fwd: look"
    outer.set_content("see attached")
    outer.add_attachment(inner)
    assert scan_message_bytes(outer.as_bytes()).reason == "virus"


# --- executables and scripts ------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    ["setup.exe", "invoice.pdf.exe", "INVOICE.PDF.SCR", "run.js", "a.vbs", "x.bat", "y.cmd",
     "tool.jar", "old.com", "f.pif", "p.ps1", "h.hta", "i.msi", "s.lnk", "disk.iso",
     "invoice.exe.", "invoice.exe. .",
     # Invisible characters: removed before the check, as from the stored name.
     "update.j\u200bs", "run.bat\u00ad", "setup.hta\ufeff",
     "\uff53\uff45\uff54\uff55\uff50.\uff45\uff58\uff45"],
)  # fmt: skip
def test_blocked_names(filename: str) -> None:
    result = scan_message_bytes(attached((filename, b"harmless looking bytes")))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, "blocked_attachment")
    # The finding names the file as the ticket would store and serve it.
    assert result.filename == clean_filename(filename)


def test_double_extension_is_named_in_the_detail() -> None:
    result = scan_message_bytes(attached(("invoice.pdf.exe", b"x")))
    assert result.detail == "executable extension .exe behind .pdf"


def test_name_hidden_by_right_to_left_override() -> None:
    result = scan_message_bytes(attached(("invoice\u202efdp.txt", b"x")))
    assert result.reason == "blocked_attachment"
    assert "bidi" in result.detail


def test_rfc2047_encoded_name_is_decoded_before_checking() -> None:
    raw = (
        b"From: a@example.net\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
        b'Content-Type: application/octet-stream; name="=?utf-8?B?aW52b2ljZS5qcw==?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\neA==\r\n--b--\r\n"
    )
    result = scan_message_bytes(raw)
    assert (result.reason, result.filename) == ("blocked_attachment", "invoice.js")


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (pe_executable(), "Windows PE executable"),
        (b"\x7fELF\x02\x01\x01" + bytes(60), "ELF executable"),
        (b"\xcf\xfa\xed\xfe" + bytes(60), "Mach-O executable or Java class"),
        (b"#!/bin/sh\nrm -rf ~\n", "script (shebang)"),
        (b"L\x00\x00\x00\x01\x14\x02\x00" + bytes(70), "Windows shortcut"),
        (bytes(0x8001) + b"CD001" + bytes(100), "ISO 9660 disk image"),
    ],
)
def test_executables_by_content_under_an_innocent_name(content: bytes, kind: str) -> None:
    result = scan_message_bytes(attached(("holiday.jpg", content)))
    assert (result.reason, result.detail) == ("blocked_attachment", kind)


def test_executable_without_a_name_inside_a_zip() -> None:
    result = scan_message_bytes(attached(("docs.zip", make_zip({"doc/readme": pe_executable()}))))
    assert (result.reason, result.filename) == ("blocked_attachment", "docs.zip/doc/readme")


def test_blocked_name_inside_a_zip() -> None:
    result = scan_message_bytes(attached(("docs.zip", make_zip({"invoice.pdf.js": b"alert(1)"}))))
    assert (result.reason, result.filename) == ("blocked_attachment", "docs.zip/invoice.pdf.js")


def test_executable_text_in_the_body_is_only_text() -> None:
    assert scan_message_bytes(attached(body="#!/bin/sh\necho this is how I start it\n")).passes


# --- macros -------------------------------------------------------------------------


def test_macro_enabled_extension() -> None:
    result = scan_message_bytes(attached(("budget.docm", make_zip({"word/document.xml": b"<x/>"}))))
    assert (result.reason, result.filename) == ("macro_document", "budget.docm")


def test_ooxml_with_vba_project_under_a_plain_extension() -> None:
    document = make_zip({"word/document.xml": b"<x/>", "word/vbaProject.bin": b"\xd0\xcf"})
    result = scan_message_bytes(attached(("budget.docx", document)))
    assert (result.reason, result.filename) == ("macro_document", "budget.docx")


def test_ole_document_with_vba_project() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500) + "_VBA_PROJECT".encode("utf-16-le")
    result = scan_message_bytes(attached(("old.doc", ole)))
    assert result.reason == "macro_document"


def test_password_protected_office_document() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500) + "EncryptedPackage".encode("utf-16-le")
    result = scan_message_bytes(attached(("salaries.xlsx", ole)))
    assert (result.reason, result.detail) == (
        "encrypted_archive",
        "password-protected Office document",
    )


def test_ole_document_without_macros_passes() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500) + "WordDocument".encode("utf-16-le")
    assert scan_message_bytes(attached(("old.doc", ole))).passes


# --- encrypted and broken archives ----------------------------------------------------


def test_encrypted_zip() -> None:
    archive = set_encrypted_flag(make_zip({"invoice.pdf": b"%PDF-1.4 secret"}))
    result = scan_message_bytes(attached(("invoice.zip", archive)))
    assert (result.reason, result.filename) == ("encrypted_archive", "invoice.zip/invoice.pdf")


def test_truncated_zip_is_unscannable() -> None:
    archive = make_zip({"a.txt": b"a" * 1000})
    result = scan_message_bytes(attached(("a.zip", archive[: len(archive) // 2])))
    assert (result.reason, result.filename) == ("unscannable", "a.zip")


def test_zip_member_with_a_bad_crc_is_unscannable() -> None:
    archive = bytearray(make_zip({"a.txt": b"hello world"}, compression=zipfile.ZIP_STORED))
    archive[archive.find(b"hello")] = ord("j")
    result = scan_message_bytes(attached(("a.zip", bytes(archive))))
    assert (result.reason, result.filename) == ("unscannable", "a.zip/a.txt")


def test_unsupported_compression_is_unscannable() -> None:
    archive = make_zip({"a.txt": b"hello" * 100}, compression=zipfile.ZIP_BZIP2)
    assert scan_message_bytes(attached(("a.zip", archive))).reason == "unscannable"


# --- limits and bombs ------------------------------------------------------------------


def test_nesting_deeper_than_the_limit() -> None:
    archive = make_zip({"leaf.txt": b"fine"})
    for level in range(5):
        archive = make_zip({f"level{level}.zip": archive})
    result = scan_parts([Part("nest.zip", "application/zip", archive)], ScanLimits(max_depth=4))
    assert result.reason == "archive_limits"
    assert result.detail == "archives nested deeper than 4"
    assert scan_parts(
        [Part("nest.zip", "application/zip", archive)], ScanLimits(max_depth=6)
    ).passes


def test_too_many_entries() -> None:
    archive = make_zip({f"f{i}.txt": b"x" for i in range(50)})
    result = scan_parts([Part("many.zip", "application/zip", archive)], ScanLimits(max_entries=20))
    assert (result.reason, result.detail) == ("archive_limits", "more than 20 entries")


@pytest.fixture(scope="module")
def ratio_bomb() -> bytes:
    """A single member of 256 MiB of zeros: about 250 KiB on the wire."""
    return zeros_zip("zeros.bin", 256 * MIB)


@pytest.fixture(scope="module")
def nested_bomb() -> bytes:
    """Like 42.zip: 16 copies per level, 4 levels, 16 MiB at the bottom: 64 GiB."""
    archive = zeros_zip("0.bin", 16 * MIB)
    for level in range(3):
        archive = make_zip({f"{level}-{copy}.zip": archive for copy in range(16)})
    return archive


def measured(scan: Callable[[], ScanResult]) -> tuple[ScanResult, int]:
    """The result and the peak of memory allocated while scanning."""
    tracemalloc.start()
    try:
        result = scan()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize(
    ("limits", "detail"),
    [
        (ScanLimits(), "compression ratio above 200"),
        (ScanLimits(max_ratio=10**9, max_total_bytes=8 * MIB), "expands beyond the size limit"),
    ],
)
def test_single_member_bomb(ratio_bomb: bytes, limits: ScanLimits, detail: str) -> None:
    """Stopped on the limit, holding one chunk of the output rather than 256 MiB."""
    part = Part("bomb.zip", "application/zip", ratio_bomb)
    result, peak = measured(lambda: scan_parts([part], limits))
    assert (result.outcome, result.reason, result.detail) == (
        Outcome.BLOCKED,
        "archive_limits",
        detail,
    )
    assert peak < MIB + 2 * len(ratio_bomb)


def test_nested_bomb_is_stopped_by_the_total_size(nested_bomb: bytes) -> None:
    limits = ScanLimits(max_ratio=10**9, max_total_bytes=8 * MIB)
    part = Part("42.zip", "application/zip", nested_bomb)
    result, peak = measured(lambda: scan_parts([part], limits))
    assert (result.reason, result.detail) == ("archive_limits", "expands beyond the size limit")
    assert peak < 2 * limits.max_total_bytes + 2 * len(nested_bomb)


def test_nested_bomb_in_a_mail_with_default_limits(nested_bomb: bytes) -> None:
    raw = attached(("42.zip", nested_bomb))
    result, peak = measured(lambda: scan_message_bytes(raw))
    assert result.reason == "archive_limits"
    assert peak < DEFAULT_LIMITS.max_total_bytes


def test_member_that_understates_its_size_cannot_expand_past_it() -> None:
    """The header says 1 KiB, the data inflates to 4 MiB: zipfile stops at 1 KiB, CRC fails."""
    archive = bytearray(make_zip({"zeros.bin": bytes(4 * MIB)}))
    for signature, size_offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        struct.pack_into("<I", archive, archive.find(signature) + size_offset, 1024)
    limits = ScanLimits(max_ratio=10**9, max_total_bytes=2 * MIB)
    result, peak = measured(lambda: scan_parts([Part("z.zip", "", bytes(archive))], limits))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, "unscannable")
    assert "CRC" in result.detail
    assert peak < MIB


# --- hostile input never breaks the scanner ------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_as_a_message(raw: bytes) -> None:
    assert scan_message_bytes(raw).outcome in set(Outcome)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=300))
def test_arbitrary_corruption_of_a_zip(noise: bytes, at: int) -> None:
    archive = make_zip({"a.txt": b"hello " * 50, "b/c.txt": b"world"})
    corrupted = archive[:at] + noise + archive[at + len(noise) :]
    result = scan_parts([Part("x.zip", "application/zip", corrupted)])
    assert result.outcome in (Outcome.CLEAN, Outcome.BLOCKED)


def nested_mime(depth: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    return b"From: a@example.net\r\nMIME-Version: 1.0\r\n" + head + b"\r\nleaf\r\n"


@pytest.mark.parametrize("depth", [40, 2000])  # past the limit; past the stdlib's stack
def test_deeply_nested_mime_is_refused_not_crashed(depth: int) -> None:
    result = scan_message_bytes(nested_mime(depth))
    assert (result.outcome, result.reason, result.detail) == (
        Outcome.BLOCKED,
        "archive_limits",
        "MIME nesting too deep",
    )


def test_nesting_within_the_mime_limit_passes() -> None:
    assert scan_message_bytes(nested_mime(30)).outcome is Outcome.CLEAN


def test_a_bare_cr_in_a_header_is_a_space_for_every_reader() -> None:
    """Found by fuzzing: a bare CR inside a parameter name raised IndexError in the
    stdlib. The one header reading makes it a space before any parser sees it."""
    raw = (
        b"From: a@example.net\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; bounda*\r09ry="x"\n\n--x\nhi\n--x--\n'
    )
    assert scan_message_bytes(raw).outcome is Outcome.CLEAN
    assert b"bounda* 09ry" in canonical(raw)


MUTATION_BYTES = b"=?*;\"'\\%\r\n :/bq-_09aZ\x00\xff\xe2\x80\xae"


MUTATION_BASE = attached(
    ("a b.zip", make_zip({"x.txt": b"hi" * 100})), ("=?utf-8?q?x=2Ejs?=", b"x")
).replace(b'filename="a b.zip"', b"filename*0*=utf-8''a%20b; filename*1=.zip")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1, exclude_max=True),
            st.binary(max_size=6).map(
                lambda b: bytes(MUTATION_BYTES[x % len(MUTATION_BYTES)] for x in b)
            ),
            st.integers(min_value=0, max_value=8),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_mutated_mail_with_attachments(edits: list[tuple[float, bytes, int]]) -> None:
    """Insertions and deletions in a real mail with encoded names never crash the scanner."""
    data = bytearray(MUTATION_BASE)
    for where, insert, delete in edits:
        at = int(where * len(data))
        data[at : at + delete] = insert
    assert scan_message_bytes(bytes(data)).outcome in set(Outcome)
