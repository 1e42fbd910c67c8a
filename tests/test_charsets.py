"""Charset decoding: declared first, WHATWG supersets, detection only as repair."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.message import charsets
from policy.message.charsets import decode_bytes, normalise_label

GERMAN = "Grüße aus München, die Rechnung über 15 € ist falsch – bitte prüfen."
CHINESE = "您好，我的订单还没有收到，请帮忙查询一下物流信息。谢谢！"
JAPANESE = "お世話になっております。注文した商品がまだ届いていません。確認をお願いします。"


@pytest.mark.parametrize(
    ("text", "encoding", "declared"),
    [
        (GERMAN, "utf-8", "utf-8"),
        (GERMAN, "utf-8", "UTF8"),
        (GERMAN.replace("€", "EUR").replace("–", "-"), "iso-8859-1", "ISO-8859-1"),
        (GERMAN.replace("–", "-"), "iso-8859-15", "iso-8859-15"),
        (GERMAN, "cp1252", "windows-1252"),
        (CHINESE, "gb18030", "GB18030"),
        (CHINESE, "gb2312", "gb2312"),
        (JAPANESE, "shift_jis", "Shift_JIS"),
        (JAPANESE, "iso2022_jp", "ISO-2022-JP"),
        (JAPANESE, "euc_jp", "euc-jp"),
    ],
)
def test_declared_charset_decodes_without_repair(text: str, encoding: str, declared: str) -> None:
    decoded = decode_bytes(text.encode(encoding), declared)
    assert decoded.text == text
    assert not decoded.repaired


def test_windows_1252_labelled_iso_8859_1_is_read_as_browsers_do() -> None:
    # € and the dash exist only in Windows-1252; Latin-1 would give C1 controls.
    decoded = decode_bytes(GERMAN.encode("cp1252"), "iso-8859-1")
    assert decoded.text == GERMAN
    assert not decoded.repaired


def test_bytes_windows_1252_leaves_undefined_survive_as_c1_controls() -> None:
    decoded = decode_bytes(b"\x80 \x81 \x9d", "iso-8859-1")
    assert decoded.text == "€ \x81 \x9d"


def test_gbk_characters_outside_gb2312_decode_under_the_gb2312_label() -> None:
    text = "镕基"  # 镕 is GBK, not GB2312
    assert decode_bytes(text.encode("gbk"), "gb2312").text == text


def test_utf8_mislabelled_as_latin1_is_repaired_and_reported() -> None:
    decoded = decode_bytes(GERMAN.encode("utf-8"), "iso-8859-1")
    assert decoded.text == GERMAN
    assert decoded.repaired
    assert decoded.note == "declared iso-8859-1, decoded as utf-8"


def test_wrong_multibyte_label_falls_back_to_detection() -> None:
    decoded = decode_bytes((JAPANESE * 3).encode("shift_jis"), "utf-8")
    assert decoded.text == JAPANESE * 3
    assert decoded.repaired
    assert decoded.note is not None and decoded.note.startswith("declared utf-8, detected")


@pytest.mark.parametrize("encoding", ["utf-8", "shift_jis", "iso2022_jp"])
def test_undeclared_8bit_body_is_detected(encoding: str) -> None:
    decoded = decode_bytes((JAPANESE * 2).encode(encoding), None)
    assert decoded.text == JAPANESE * 2
    assert decoded.repaired


def test_undeclared_ascii_is_not_a_repair() -> None:
    decoded = decode_bytes(b"plain ascii", None)
    assert (decoded.text, decoded.repaired) == ("plain ascii", False)


@pytest.mark.parametrize("declared", [None, "utf-8", "x-unknown-charset", "base64"])
def test_blank_stays_blank(declared: str | None) -> None:
    assert decode_bytes(b"", declared).text == ""
    assert decode_bytes(b"  \r\n", declared).text == "  \r\n"


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("iso-8859-1", "cp1252"),
        ('"US-ASCII"', "cp1252"),
        ("GB2312", "gb18030"),
        ("shift_jis", "cp932"),
        ("utf-8", "utf-8"),
        ("rot13", None),
        ("base64", None),
        ("no-such-charset", None),
        ("", None),
        (None, None),
    ],
)
def test_labels(label: str | None, codec: str | None) -> None:
    assert normalise_label(label) == codec


def test_unknown_label_with_valid_utf8_is_repaired_to_utf8() -> None:
    decoded = decode_bytes(GERMAN.encode(), "x-mac-nonsense")
    assert (decoded.text, decoded.charset, decoded.repaired) == (GERMAN, "utf-8", True)


@settings(max_examples=3000)
@given(st.text(alphabet=st.sampled_from(list(" \t\r\n\x00=?abcQB:é\udcc3")), max_size=40))
def test_the_plain_shortcut_of_a_header_value_is_the_full_decoding(value: str) -> None:
    """ASCII without encoded words, breaks or NUL is only stripped; everything
    else still goes the whole way (here without the shortcut, for comparison)."""
    assert charsets.decode_header_value(value) == charsets._decoded(value)
