"""The one author of a message: strict and lenient readings of From, and when they disagree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.message import author
from policy.message.author import MAX_FROM_CHARS, Author, NoAuthor, read


@pytest.mark.parametrize(
    ("value", "address", "display"),
    [
        ("Alice <alice@Example.COM>", "alice@example.com", "Alice"),
        ('"Bob, Jr." <bob@mail.example.co.uk>', "bob@mail.example.co.uk", "Bob, Jr."),
        ("carol@example.org (Carol)", "carol@example.org", "Carol"),
        # Exchange: an encoded display name whose decoded text holds a comma.
        (
            "=?iso-8859-1?Q?B=FCrling,=20Andreas?= <a@example.com>",
            "a@example.com",
            "Bürling, Andreas",
        ),
        # Unquoted specials in the display name still name one angle-addr.
        ("Doe, John <john@example.com>", "john@example.com", "Doe, John"),
        ("jane@laptop <jane@example.com>", "jane@example.com", "jane@laptop"),
        ('"Alice <Sales>" <alice@example.com>', "alice@example.com", "Alice <Sales>"),
        # RFC 5322 4: obsolete phrase and CFWS inside the address.
        ("John Q. Public <jqp@example.com>", "jqp@example.com", "John Q. Public"),
        ("Alice <alice @ example.com>", "alice@example.com", "Alice"),
        ("Alice <alice@example.com> (Sales)", "alice@example.com", "Alice"),
        ("x@nodmarc.example.", "x@nodmarc.example", ""),
        ("=?utf-8?b?5byg5LiJ?= <zhang@example.cn>", "zhang@example.cn", "张三"),
        ("Jöhn <jöhn@exämple.com>", "jöhn@exämple.com", "Jöhn"),
        # A display name that looks like an address is display text, not the author.
        ("ceo@victim.example <eve@attacker.example>", "eve@attacker.example", "ceo@victim.example"),
    ],
)
def test_one_author(value: str, address: str, display: str) -> None:
    assert read([value]) == Author(address, display)


@pytest.mark.parametrize(
    ("value", "display"),
    [("<>", ""), ("Mail Delivery System <>", "Mail Delivery System"),
     ("MAILER-DAEMON (Mail Delivery System)", "Mail Delivery System")],
)  # fmt: skip
def test_null_sender_forms_are_bounces(value: str, display: str) -> None:
    author = read([value])
    assert author.null and author.display == display and author.domain == ""


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], "from_missing"),
        (["a@example.com", "b@example.com"], "from_several"),
        (["a@example.com, b@example.net"], "from_several"),
        (["Eve <eve@attacker.example>, <ceo@victim.example>"], "from_several"),
        (["undisclosed-recipients:;"], "from_missing"),
        (["no address here"], "from_unreadable"),
        (["alice@"], "from_unreadable"),
        (["alice@localhost"], "from_unreadable"),
        (["alice@[192.0.2.1]"], "from_unreadable"),
        # The spoofs: each parser would have read another domain.
        (["CEO <ceo@victim.example[>"], "from_unreadable"),
        (["ceo@victim.example\\"], "from_unreadable"),
        (["=?utf-8?q?=3Cceo=40victim.example=3E?= eve@attacker.example"], "from_unreadable"),
        (["<ceo@victim.example> eve@attacker.example"], "from_unreadable"),
        (["Group: ceo@victim.example;"], "from_ambiguous"),
        (["a@b.example (" + "(" * 1000 + ")" * 1000 + ")"], "from_unreadable"),
        (["x" * MAX_FROM_CHARS + " <a@example.com>"], "from_unreadable"),
    ],
)
def test_no_trustworthy_author(values: list[str], reason: str) -> None:
    with pytest.raises(NoAuthor) as caught:
        read(values)
    assert caught.value.reason == reason


def _outcome(values: list[str]) -> Author | tuple[str, str]:
    try:
        return read(values)
    except NoAuthor as exc:
        return exc.reason, exc.detail


def _both(values: list[str]) -> tuple[Author | tuple[str, str], Author | tuple[str, str]]:
    """(the reading with the plain shortcut, the two parsers' reading without it)."""
    shortcut = _outcome(values)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(author, "_plain", lambda value: None)
        return shortcut, _outcome(values)


@pytest.mark.parametrize(
    "value",
    [
        "Customer 1 <customer1@example.net>",
        "customer1@example.net",
        "<customer1@example.net>",
        "A.B <a@example.net>",  # obsolete phrase: not plain
        "Alice  Smith <a@example.net>",  # two spaces: not plain
        "Alice\tSmith <a@example.net>",
        "a@b",  # one label: no usable domain
        "a@-b.example",
        "a@b-.example",
        "a@b..example",
        "a..b@example.net",
        ".a@example.net",
        "a@example.net.",
        "a@[192.0.2.1]",
        "=?utf-8?q?x?= <a@example.net>",
        "x=?utf-8?q?x?=@example.net",
        "Alice <a@example.net>, Bob <b@example.net>",
        "Alice <a@example.net> <b@example.net>",
        "ceo@victim.example <eve@attacker.example>",
        "Mailer-Daemon <>",
        "MAILER-DAEMON",
        "<>",
        "postmaster@example.net",
        "Alice <a@EXAMPLE.NET>",
        "A" * 300 + "@example.net",
        "a@" + "b" * 300 + ".example",
        "x <" + "a" * 64 + "@" + ".".join(["b"] * 150) + ">",
        "Al'ice O'Neil <o'neil@example.net>",
        "~ <a+tag@example.net>",
        "- <a@example.net>",
    ],
)
def test_plain_shortcut_reads_as_both_parsers(value: str) -> None:
    shortcut, parsers = _both([value])
    assert shortcut == parsers


@settings(max_examples=600, deadline=None)
@given(
    st.text(alphabet="ab.-@<> \t=?\"(),;:[]\\'~Ä0", max_size=40).map(str.strip)
    | st.from_regex(
        r"\A(?:[A-Za-z~'=.-]{1,6}(?: {1,2}[a-z.]{1,4}){0,2} )?<?[a-z.+=-]{1,5}@[a-zA-Z.-]{1,9}>?\Z"
    )
    | st.from_regex(
        r"\A(?:[A-Za-z'-]{1,5}(?: [a-z]{1,3}){0,2} )?<[a-z.+]{1,4}@[a-z-]{1,4}\.[a-z.]{1,5}>\Z"
    )
)
def test_plain_shortcut_never_reads_differently(value: str) -> None:
    shortcut, parsers = _both([value])
    assert shortcut == parsers


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        ("Customer 1 <customer1@example.net>", Author("customer1@example.net", "Customer 1")),
        ("customer1@example.net", Author("customer1@example.net", "")),
        ("<customer1@example.net>", Author("customer1@example.net", "")),
        ("Alice <a@EXAMPLE.NET>", Author("a@example.net", "Alice")),
        ("A.B <a@example.net>", None),
        ("Alice  Smith <a@example.net>", None),
        ("=?utf-8?q?x?= <a@example.net>", None),
        ("ceo@victim.example <eve@attacker.example>", None),
        ("a@b", None),
    ],
)
def test_the_plain_shapes_are_read_by_the_shortcut_alone(value: str, taken: Author | None) -> None:
    """The common shapes take the one pattern (the differential tests above would
    pass with the shortcut never taken); the rest go on to the two parsers."""
    assert author._plain(value) == taken
