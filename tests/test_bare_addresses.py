"""The shortcut for plain address fields reads them as the header registry does.

:mod:`policy.message.mime` skips the header registry's parse for a
To/Cc/Reply-To field made only of dot-atom addresses; these tests compare the
two readings on every field the shortcut takes, and check that what it leaves
alone still reaches the registry. (The From field's own shortcut is held to
both of its parsers in ``tests/test_author.py``.)
"""

from __future__ import annotations

import email.policy
from email.headerregistry import AddressHeader

from hypothesis import given
from hypothesis import strategies as st

from policy.message.mime import _BARE_ADDRESSES, parse_message

ALPHABET = "aZ09.-_+=?#/!'`{}|~@,; \t\"()<>[]:\\\u00e9\r\n"


def _registry(value: str) -> list[tuple[str, str]] | None:
    header = email.policy.default.header_fetch_parse("To", value)
    assert isinstance(header, AddressHeader)
    if header.defects:  # type: ignore[attr-defined]  # BaseHeader has them; the stubs do not say
        return None
    return [(a.display_name, a.addr_spec) for a in header.addresses]


def _shortcut(value: str) -> list[tuple[str, str]]:
    return [("", address.strip(" \t")) for address in value.split(",")]


@given(st.text(alphabet=ALPHABET, max_size=60))
def test_every_field_the_shortcut_takes_reads_as_the_registry_reads_it(value: str) -> None:
    if _BARE_ADDRESSES.fullmatch(value):
        assert _shortcut(value) == _registry(value)


@given(
    st.lists(
        st.from_regex(
            r"[a-z0-9!#$%&'*+/^_`{|}~-]{1,8}(\.[a-z0-9+_-]{1,5}){0,2}@[a-z0-9-]{1,8}(\.[a-z]{2,4}){0,2}",
            fullmatch=True,
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([",", ", ", " ,", ",\t", " , "]),
)
def test_lists_of_addresses_take_the_shortcut_and_agree(addresses: list[str], comma: str) -> None:
    value = comma.join(addresses)
    assert _BARE_ADDRESSES.fullmatch(value)
    assert _shortcut(value) == _registry(value)


def test_what_the_shortcut_leaves_alone() -> None:
    for value in [
        "Alice <alice@example.com>",
        "alice@example.com (Alice)",
        '"a b"@example.com',
        "alice@[192.0.2.1]",
        "a..b@example.com",
        ".a@example.com",
        "alice@example.com,",
        "alice@example.com,,bob@example.com",
        "alice@example.com\r\n bob@example.com",
        "=?utf-8?q?a?=@example.com",
        "undisclosed-recipients:;",
        "al\u00e9ce@example.com",
    ]:
        assert not _BARE_ADDRESSES.fullmatch(value), value


def test_a_message_reads_the_same_through_the_shortcut() -> None:
    raw = (
        b"From: Alice <alice@example.com>\r\nTo: support@example.com, Bob.B+x@Example.NET\r\n"
        b"Cc: carol@example.org\r\nReply-To: \t a@example.com \r\nSubject: s\r\n\r\nhi\r\n"
    )
    parsed = parse_message(raw)
    assert [(a.name, a.address) for a in parsed.to] == [
        ("", "support@example.com"),
        ("", "Bob.B+x@Example.NET"),
    ]
    assert [(a.name, a.address) for a in parsed.cc] == [("", "carol@example.org")]
    assert [(a.name, a.address) for a in parsed.reply_to] == [("", "a@example.com")]
    assert not parsed.defects


def test_a_long_hostile_field_is_matched_in_linear_time() -> None:
    # Runs of atext and dots that never reach an "@": each run fails once, no
    # backtracking across runs (a quadratic pattern would take minutes here).
    for value in ["a." * 4000, "a" * 8000, "a@b," * 2000 + "!", "a@b " * 2000]:
        assert not _BARE_ADDRESSES.fullmatch(value)
