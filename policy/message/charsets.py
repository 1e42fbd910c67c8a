"""Turning the bytes of a mail part into text without losing or inventing any.

Mail declares its charset, and the declaration is often wrong: Windows-1252
sent as ISO-8859-1, UTF-8 sent as ISO-8859-1, GBK sent as GB2312, or 8-bit
text with no charset at all. We decode the way browsers do (the WHATWG
Encoding Standard treats a label as the superset it almost always means),
and only when the declared charset cannot decode the bytes do we fall back to
detection with charset-normalizer. Every such fallback is reported, so a
ticket can say "this text was repaired" instead of silently showing mojibake
or ``?`` in place of letters.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from email.header import decode_header, make_header

import charset_normalizer

# Labels that, per the WHATWG Encoding Standard, mean a superset in practice.
# ISO-8859-1 and US-ASCII are decoded as Windows-1252 by every browser,
# GB2312/GBK as GB18030, Shift_JIS as Microsoft's CP932, EUC-KR as CP949.
_SUPERSETS: dict[str, str] = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "windows-1252": "cp1252",
    "cp1252": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "cp936": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "big5": "big5hkscs",
}

# Codecs that are single-byte: any byte string "decodes", so a UTF-8 body
# mislabelled as one of them would otherwise turn into mojibake unnoticed.
# What detection may choose from: the charsets mail is actually written in.
# Left to consider every codec, detection picks exotic ones (CP1006, CP1125)
# for short Western or Cyrillic text.
_MAIL_CHARSETS = (
    "utf_8",
    "utf_16",
    "cp1252",
    "cp1250",
    "cp1251",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp1258",
    "cp874",
    "koi8_r",
    "koi8_u",
    "gb18030",
    "big5",
    "cp932",
    "euc_jp",
    "cp949",
)

_ESCAPES = re.compile("[\udc80-\udcff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_C1_FROM_ESCAPES = {0xDC00 + b: b for b in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}

_SINGLE_BYTE_PREFIXES = ("cp12", "cp87", "iso8859", "latin", "koi8", "mac")


@dataclass(frozen=True)
class Decoded:
    """Text decoded from bytes, and how it was obtained.

    ``charset`` is the Python codec that produced ``text``; ``repaired`` is
    true when it is not what the sender declared (or nothing was declared for
    non-ASCII bytes), and ``note`` explains the repair for the ticket.
    """

    text: str
    charset: str
    repaired: bool
    note: str | None = None


def normalise_label(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None if unknown or absent."""
    if not label:
        return None
    cleaned = label.strip().strip("\"'").strip().lower()
    if not cleaned:
        return None
    name = _SUPERSETS.get(cleaned, cleaned)
    try:
        codec = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # A label such as "base64" or "rot13" names a bytes/text transform, not a charset.
    if not getattr(codec, "_is_text_encoding", True):
        return None
    return codec.name


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _is_single_byte(codec: str) -> bool:
    return codec.replace("_", "").replace("-", "").startswith(_SINGLE_BYTE_PREFIXES)


def decode_bytes(data: bytes, declared: str | None) -> Decoded:
    """Decode ``data`` declared as ``declared``; never raises, never drops text."""
    codec = normalise_label(declared)
    if not data:
        return Decoded("", codec or "utf-8", False)
    if data.isascii():
        if codec is None and b"\x1b$" in data:
            # Undeclared 7-bit Japanese mail: the ISO-2022-JP escapes give it away.
            jis = _strict(data, "iso2022_jp_ext")
            if jis is not None:
                return Decoded(
                    jis, "iso2022_jp_ext", True, "no charset declared, decoded as iso-2022-jp"
                )
        # Every charset we accept is an ASCII superset except UTF-16/32 and the
        # 7-bit ISO-2022 family, which must still see their escape sequences.
        if codec is None or not (codec.startswith(("utf_16", "utf_32", "utf_7", "iso2022"))):
            return Decoded(data.decode("ascii"), codec or "ascii", False)
    utf8 = _strict(data, "utf-8")
    if codec is not None:
        if utf8 is not None and codec != "utf-8" and _is_single_byte(codec):
            # Non-ASCII text in a legacy single-byte charset is practically never
            # valid UTF-8 by accident, so valid UTF-8 here is UTF-8 mislabelled.
            return Decoded(utf8, "utf-8", True, f"{_declared(declared)}, decoded as utf-8")
        text = _strict(data, codec)
        if text is not None:
            return Decoded(text, codec, False)
        if codec == "cp1252":
            # WHATWG maps the five bytes Windows-1252 leaves undefined to the C1
            # controls of the same value; everything else stays Windows-1252.
            text = data.decode("cp1252", errors="surrogateescape").translate(_C1_FROM_ESCAPES)
            return Decoded(text, "cp1252", False)
    if utf8 is not None:
        why = _declared(declared)
        return Decoded(utf8, "utf-8", True, f"{why}, decoded as utf-8")
    return _detect(data, declared, codec)


def _declared(label: str | None) -> str:
    """The declared label for a repair note, printable whatever the sender put there."""
    if not label:
        return "no charset declared"
    return "declared " + "".join(c if c.isascii() and c.isprintable() else "?" for c in label[:40])


def _detect(data: bytes, declared: str | None, codec: str | None) -> Decoded:
    why = _declared(declared)
    best = charset_normalizer.from_bytes(data, cp_isolation=list(_MAIL_CHARSETS)).best()
    if best is not None:
        return Decoded(str(best), best.encoding, True, f"{why}, detected {best.encoding}")
    # Nothing fits: keep every byte visible rather than guessing further.
    fallback = codec or "utf-8"
    text = data.decode(fallback, errors="replace")
    return Decoded(text, fallback, True, f"{why}, undecodable bytes replaced")


def decode_escaped(value: str) -> Decoded:
    """Text in which undecodable bytes arrived as surrogate escapes, decoded.

    The ``email`` package hands such bytes over this way (in headers, and in
    names it decoded itself); neither UTF-8 nor PostgreSQL can hold them.
    """
    if value.isascii() or not _SURROGATE.search(value):
        return Decoded(value, "utf-8", False)
    if all(c.isascii() or "\udc80" <= c <= "\udcff" for c in value):
        # Raw 8-bit text: decode it whole, so detection sees all of it.
        return decode_bytes(value.encode("ascii", "surrogateescape"), "utf-8")
    # Letters the stdlib already decoded next to bytes it could not: decode
    # each run of bytes on its own, as UTF-8 or else as Windows-1252.
    repaired = False

    def run(match: re.Match[str]) -> str:
        nonlocal repaired
        data = match.group().encode("ascii", "surrogateescape")
        text = _strict(data, "utf-8")
        if text is None:
            repaired = True
            text = data.decode("cp1252", errors="surrogateescape").translate(_C1_FROM_ESCAPES)
        return text

    text = _ESCAPES.sub(run, value)
    if _SURROGATE.search(text):
        text, repaired = _replace(text), True
    return Decoded(
        text, "utf-8", repaired, "undecodable bytes in decoded text" if repaired else None
    )


def clean_text(value: str) -> str:
    """Text safe to store anywhere: no surrogates, no NUL."""
    return decode_escaped(value).text.replace("\x00", "\ufffd")


def _replace(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


def decode_words(value: object) -> str:
    """RFC 2047 encoded words decoded where possible; the raw text where not."""
    text = str(value)
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # malformed encoded words: keep what was sent
        return text


_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAKS = re.compile(r"[\r\n\x00]+")
# What :func:`decode_header_value` changes in ASCII text besides encoded words
# and the ends' whitespace: folds, line breaks, NUL.
_PLAIN_SPOILERS = re.compile(r"[\r\n\x00]")


def decode_header_value(raw: str) -> tuple[str, bool]:
    """A header value unfolded, RFC 2047-decoded and on one line.

    Returns the text and whether a charset had to be repaired. Raw 8-bit
    bytes (RFC 6532 UTF-8, or a legacy charset a client did not declare)
    arrive as surrogate escapes and are decoded like a body part.
    """
    if raw.isascii() and "=?" not in raw and not _PLAIN_SPOILERS.search(raw):
        return raw.strip(), False  # what :func:`_decoded` makes of most values
    return _decoded(raw)


def _decoded(raw: str) -> tuple[str, bool]:
    repaired = False
    value = _FOLD.sub("", raw)
    escaped = decode_escaped(value)
    value, repaired = escaped.text, escaped.repaired
    pieces: list[str] = []
    position = 0
    previous_was_word = False
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        if not (previous_was_word and not between.strip()):
            pieces.append(between)
        word, word_repaired = _decode_word(match.group())
        pieces.append(word)
        repaired = repaired or word_repaired
        position = match.end()
        previous_was_word = True
    pieces.append(value[position:])
    text = _LINE_BREAKS.sub(" ", "".join(pieces))
    return clean_text(text).strip(), repaired


def _decode_word(word: str) -> tuple[str, bool]:
    try:
        [(data, charset)] = decode_header(word)
    except Exception:  # a broken encoded word is shown as written
        return word, False
    if isinstance(data, str):
        return data, False
    decoded = decode_bytes(data, charset)
    return decoded.text, decoded.repaired
