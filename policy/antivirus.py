"""The built-in scanner: the "basic scanning" that needs no daemon.

It is a policy, not a signature engine. Apart from the EICAR test file (so an
operator can check the whole chain end to end), it refuses what a helpdesk has
no business receiving and what it cannot look into:

* executables and scripts, recognised by their content (PE, ELF, Mach-O, Java
  class, shebang, Windows shortcut, ISO image) and by their name
  (:data:`BLOCKED_EXTENSIONS`), including ``invoice.pdf.exe`` and names that
  hide their extension behind bidirectional-text controls;
* macro-enabled Office files (:data:`MACRO_EXTENSIONS`, OOXML holding
  ``vbaProject.bin``, OLE2 files holding a ``_VBA_PROJECT`` stream);
* encrypted zip members and password-protected Office documents, which no
  scanner can see into (the password travels in the mail's text);
* zip archives that nest, count or expand beyond :class:`ScanLimits`; those
  are looked into member by member, decompressing in bounded chunks and
  counting every byte actually produced (headers lie), so a zip bomb costs at
  most ``max_total_bytes`` of work and memory, never its advertised size.

Only zip is opened; other archive formats pass as opaque data (the ClamAV
backend looks into those). Members compressed with anything but stored or
deflate are refused as unscannable: zipfile cannot bound the output of its
bzip2 and lzma decompressors per read.

:func:`scan_tree` walks the MIME tree of :mod:`policy.message.mimetree`, the
one the ticket parser reads (the batch reads each message once for both),
seeing every leaf part, including those of attached messages: the structure,
the names (:mod:`policy.message.attachments`) and the decoded bytes checked
are those stored and served. :func:`scan_message_bytes` reads the tree itself.
:func:`scan_parts` takes parts already decoded. It does no I/O.

Reason codes (stable; they go to the rejection log):

``virus``               a signature matched (EICAR here; anything clamd finds)
``blocked_attachment``  an executable or script, by content or by name
``macro_document``      an Office document that carries macros
``encrypted_archive``   a zip member is encrypted, or an Office document is
                        password-protected
``archive_limits``      nesting, member count, expanded size or compression
                        ratio beyond :class:`ScanLimits` (zip bombs)
``unscannable``         an archive or message we cannot read completely
                        (corrupt zip, unsupported compression, CRC mismatch)
``scan_size_limit``     clamd refused the message as larger than its
                        ``StreamMaxLength``
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from policy.message import attachments, headerblock, mimetree

#: Names refused whatever their content: Windows executables, installers,
#: scripts run by the Windows Script Host or PowerShell, shortcuts, Java
#: archives and disk images (which Windows mounts on a double click and whose
#: contents bypass the mark of the web).
BLOCKED_EXTENSIONS = frozenset(
    {
        "app", "application", "appref-ms", "bat", "cab", "chm", "cmd", "com", "cpl",
        "dll", "exe", "gadget", "hta", "img", "inf", "iso", "jar", "js", "jse",
        "lnk", "msc", "msi", "msix", "msp", "pif", "ps1", "psd1", "psm1", "reg",
        "scf", "scr", "sct", "url", "vb", "vbe", "vbs", "vhd", "vhdx", "ws",
        "wsc", "wsf", "wsh", "xll",
    }
)  # fmt: skip

#: Office formats whose only reason to exist is to carry macros.
MACRO_EXTENSIONS = frozenset(
    {"docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppam", "ppsm", "sldm"}
)

#: Declared content types that say "executable" outright.
BLOCKED_CONTENT_TYPES = frozenset(
    {
        "application/hta",
        "application/java-archive",
        "application/vnd.microsoft.portable-executable",
        "application/x-dosexec",
        "application/x-executable",
        "application/x-ms-shortcut",
        "application/x-msdos-program",
        "application/x-msdownload",
        "application/x-msi",
        "application/x-sh",
    }
)

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "EICAR-Test-File"

# EICAR rules: the file starts with the 68 bytes, then at most whitespace
# (space, tab, CR, LF, Ctrl-Z), 128 bytes in all. Following them keeps mail
# that merely quotes the string (security newsletters) deliverable.
_EICAR_TAIL = frozenset(b" \t\r\n\x1a")
_VBA_PROJECT_OLE = "_VBA_PROJECT".encode("utf-16-le")
# A password-protected OOXML file is an OLE2 container around this stream.
_ENCRYPTED_PACKAGE_OLE = "EncryptedPackage".encode("utf-16-le")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_LNK_MAGIC = b"L\x00\x00\x00\x01\x14\x02\x00"
_MACHO_MAGICS = (
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O universal binary, and also a Java class file
)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_CENTRAL_ENTRY = b"PK\x01\x02"
_CHUNK = 64 * 1024
# What zipfile raises on a corrupt archive (found by fuzzing, see the tests).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    OSError,
    ValueError,
    EOFError,
    NotImplementedError,
)


class Outcome(StrEnum):
    CLEAN = "clean"
    INFECTED = "infected"
    BLOCKED = "blocked"
    # Not scanned because the scanner was away and the policy said to pass.
    UNSCANNED = "unscanned"


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One answer for the batch, whichever backend gave it.

    ``filename`` names the part, with the path inside archives
    (``outer.zip/inner.zip/eicar.com``); ``signature`` is the name to log for
    ``virus``; ``detail`` is a short human explanation.
    """

    outcome: Outcome
    reason: str = ""
    signature: str = ""
    filename: str = ""
    detail: str = ""
    scanner: str = "builtin"

    @property
    def passes(self) -> bool:
        """Whether the message may become a ticket."""
        return self.outcome in (Outcome.CLEAN, Outcome.UNSCANNED)


CLEAN = ScanResult(Outcome.CLEAN)


@dataclass(frozen=True)
class ScanLimits:
    """How far the scanner goes before it calls an archive a bomb.

    ``max_depth`` counts zip archives inside each other, ``max_mime_depth``
    multiparts and attached messages; ``max_entries`` counts MIME parts and
    zip members together. ``max_total_bytes`` bounds the bytes decompressed
    for one message (and so the memory held); ``max_ratio`` applies to a member once it has produced
    more than ``ratio_floor`` bytes, because tiny members compress wildly.
    """

    max_depth: int = 4
    max_mime_depth: int = 32
    max_entries: int = 1000
    max_total_bytes: int = 64 * 1024 * 1024
    max_ratio: int = 200
    ratio_floor: int = 1024 * 1024


DEFAULT_LIMITS = ScanLimits()


class Part(NamedTuple):
    """A decoded leaf of the MIME tree; ``filename`` is empty for body text."""

    filename: str
    content_type: str
    data: bytes


class _Found(Exception):
    """Unwinds the walk at the first finding."""

    def __init__(self, result: ScanResult) -> None:
        super().__init__(result.reason)
        self.result = result


def _blocked(reason: str, filename: str, detail: str) -> _Found:
    return _Found(ScanResult(Outcome.BLOCKED, reason=reason, filename=filename, detail=detail))


# What the stdlib header parser raises on some malformed headers instead of
# recording a defect (found by fuzzing).
_MIME_ERRORS = (ValueError, IndexError, TypeError, AttributeError, LookupError)


def _mime_parts(tree: mimetree.Tree, limits: ScanLimits) -> Iterator[Part]:
    """Yield every leaf part of ``tree``, attached messages included.

    Raises ``_Found`` (``archive_limits``) on a message with more parts or
    deeper nesting than ``limits`` allow, which stdlib parsing would otherwise
    meet as a RecursionError or a memory bill.
    """
    if tree.root is None:
        if isinstance(tree.failure, headerblock.HeaderTooLarge):
            raise _blocked("unscannable", "", "header block too large")
        if isinstance(tree.failure, RecursionError):
            raise _blocked("archive_limits", "", "MIME nesting too deep")
        if isinstance(tree.failure, _MIME_ERRORS):
            raise _blocked("unscannable", "", "unparseable MIME structure")
        raise tree.failure or ValueError("no MIME tree")  # not the message's fault: retried
    # Paths number parts as the ticket parser does (1, 1.1, 1.2 …): made-up
    # names ("part-1.2.js") are part of what is checked.
    stack = [tree.root]
    count = 0
    while stack:
        node = stack.pop()
        if node.depth > limits.max_mime_depth:
            raise _blocked("archive_limits", "", "MIME nesting too deep")
        if node.children is not None:
            stack.extend(reversed(node.children))
            continue
        count += 1
        if count > limits.max_entries:
            raise _blocked("archive_limits", "", "too many MIME parts")
        yield _leaf(node)


def _leaf(node: mimetree.Node) -> Part:
    """Decode one leaf; a part the stdlib cannot read is refused, not skipped.

    Skipping it would let a crafted header hide ``.js`` from the name checks.
    The name is the one the ticket stores and serves (:mod:`policy.message.attachments`);
    a given name hiding its extension behind bidi controls is refused as such.
    """
    try:
        if attachments.BIDI_CONTROLS.search(node.given_filename):
            raise _blocked(
                "blocked_attachment",
                f"part {node.path}",
                "name hides its extension with bidi controls",
            )
        return Part(
            filename="" if node.is_body else node.filename,
            content_type=node.content_type,
            data=node.data,
        )
    except _MIME_ERRORS:
        raise _blocked("unscannable", f"part {node.path}", "unparseable MIME part") from None


def scan_message_bytes(raw: bytes, limits: ScanLimits = DEFAULT_LIMITS) -> ScanResult:
    """Scan a whole message as received."""
    return scan_tree(mimetree.read(raw), limits)


def scan_tree(tree: mimetree.Tree, limits: ScanLimits = DEFAULT_LIMITS) -> ScanResult:
    """Scan a message already read, the tree the ticket parser reads too."""
    return scan_parts(_mime_parts(tree, limits), limits)


def scan_parts(parts: Iterable[Part], limits: ScanLimits = DEFAULT_LIMITS) -> ScanResult:
    """Scan decoded parts; the first finding wins.

    ``parts`` may be a lazy iterator that raises ``_Found`` itself (the MIME
    walk does), which is why it is consumed inside the ``try``.
    """
    budget = _Budget(limits)
    try:
        for part in parts:
            is_body = not part.filename and part.content_type.startswith("text/")
            if is_body:
                _check_eicar(part.data, "")
                continue
            if part.content_type in BLOCKED_CONTENT_TYPES:
                raise _blocked(
                    "blocked_attachment", part.filename, f"declared as {part.content_type}"
                )
            _scan_blob(part.filename, part.data, 0, budget)
    except _Found as found:
        return found.result
    return CLEAN


class _Budget:
    """What is left of the limits for one message, shared by all its archives."""

    def __init__(self, limits: ScanLimits) -> None:
        self.limits = limits
        self.entries = limits.max_entries
        self.bytes = limits.max_total_bytes


def _check_eicar(data: bytes, filename: str) -> None:
    if (
        data.startswith(EICAR)
        and len(data) <= 128
        and all(byte in _EICAR_TAIL for byte in data[len(EICAR) :])
    ):
        raise _Found(
            ScanResult(
                Outcome.INFECTED,
                reason="virus",
                signature=EICAR_SIGNATURE,
                filename=filename,
                detail="EICAR test file",
            )
        )


def _check_name(path: str, name: str) -> None:
    if attachments.BIDI_CONTROLS.search(name):
        raise _blocked("blocked_attachment", path, "name hides its extension with bidi controls")
    # Windows ignores trailing dots and spaces: "invoice.exe. " runs as an .exe.
    parts = name.rstrip(". \t").lower().split(".")
    if len(parts) < 2:
        return
    extension = parts[-1]
    if extension in BLOCKED_EXTENSIONS:
        detail = f"executable extension .{extension}"
        if len(parts) > 2 and parts[-2] and parts[-2] not in BLOCKED_EXTENSIONS:
            detail += f" behind .{parts[-2]}"
        raise _blocked("blocked_attachment", path, detail)
    if extension in MACRO_EXTENSIONS:
        raise _blocked("macro_document", path, f"macro-enabled extension .{extension}")


def _executable_kind(data: bytes) -> str | None:
    """Name the executable format ``data`` starts with, if any."""
    if data.startswith(b"MZ") and len(data) >= 0x40:
        (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
        if data[pe_offset : pe_offset + 4] == b"PE\x00\x00":
            return "Windows PE executable"
    if data.startswith(b"\x7fELF"):
        return "ELF executable"
    if data.startswith(_MACHO_MAGICS):
        return "Mach-O executable or Java class"
    if data.startswith(b"#!"):
        return "script (shebang)"
    if data.startswith(_LNK_MAGIC):
        return "Windows shortcut"
    if data[0x8001:0x8006] == b"CD001":
        return "ISO 9660 disk image"
    return None


def _scan_blob(path: str, data: bytes, depth: int, budget: _Budget) -> None:
    name = path.rpartition("/")[2]
    _check_eicar(data, path)
    _check_name(path, name)
    kind = _executable_kind(data)
    if kind:
        raise _blocked("blocked_attachment", path, kind)
    if data.startswith(_OLE_MAGIC) and _VBA_PROJECT_OLE in data:
        raise _blocked("macro_document", path, "OLE document with a VBA project")
    if data.startswith(_OLE_MAGIC) and _ENCRYPTED_PACKAGE_OLE in data:
        raise _blocked("encrypted_archive", path, "password-protected Office document")
    if data.startswith(_ZIP_MAGICS) or name.lower().endswith(".zip"):
        _scan_zip(path, data, depth + 1, budget)


def _scan_zip(path: str, data: bytes, depth: int, budget: _Budget) -> None:
    limits = budget.limits
    if depth > limits.max_depth:
        raise _blocked("archive_limits", path, f"archives nested deeper than {limits.max_depth}")
    # Every central directory entry carries this signature, so the count is an
    # upper bound on the entries zipfile would allocate before we could stop it.
    if data.count(_ZIP_CENTRAL_ENTRY) > budget.entries:
        raise _blocked("archive_limits", path, f"more than {limits.max_entries} entries")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise _blocked("unscannable", path, f"unreadable zip: {exc}") from None
    with archive:
        for info in archive.infolist():
            budget.entries -= 1
            if budget.entries < 0:
                raise _blocked("archive_limits", path, f"more than {limits.max_entries} entries")
            member = f"{path or 'archive'}/{info.filename}"
            if info.filename.endswith("/"):
                continue
            _check_name(member, info.filename.rpartition("/")[2])
            if info.flag_bits & 0x1:
                raise _blocked("encrypted_archive", member, "encrypted zip member")
            if info.filename.rpartition("/")[2].lower() == "vbaproject.bin":
                raise _blocked("macro_document", path, "Office document with a VBA project")
            content = _read_member(archive, info, member, budget)
            _scan_blob(member, content, depth, budget)


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, budget: _Budget
) -> bytes:
    """Decompress one member in chunks, stopping the moment a limit is crossed.

    Limits are checked against bytes actually produced, not the sizes the
    headers declare, so no header can talk the scanner into more work. Only
    archives and OLE documents are kept whole (they are looked into); of
    anything else the first chunk is enough for the content checks, so a
    member of zeros costs time but no memory.
    """
    limits = budget.limits
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _blocked("unscannable", member, f"unsupported compression {info.compress_type}")
    ratio_cap = max(limits.ratio_floor, limits.max_ratio * max(info.compress_size, 1))
    chunks: list[bytes] = []
    keep_all = True
    produced = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                produced += len(chunk)
                budget.bytes -= len(chunk)
                if budget.bytes < 0:
                    raise _blocked("archive_limits", member, "expands beyond the size limit")
                if produced > ratio_cap:
                    raise _blocked(
                        "archive_limits", member, f"compression ratio above {limits.max_ratio}"
                    )
                if not chunks:
                    keep_all = _is_container(member, chunk)
                if keep_all or not chunks:
                    chunks.append(chunk)
    except _ZIP_ERRORS as exc:
        raise _blocked("unscannable", member, f"unreadable zip member: {exc}") from None
    return b"".join(chunks)


def _is_container(path: str, head: bytes) -> bool:
    return head.startswith((*_ZIP_MAGICS, _OLE_MAGIC)) or path.lower().endswith(".zip")
