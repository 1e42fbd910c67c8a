"""Making the HTML of a customer's mail safe to show an agent.

An agent's browser is logged in to the helpdesk, so mail HTML is hostile by
default: scripts, event handlers, ``javascript:`` links, forms that post
elsewhere, CSS that overlays the page, and remote images that tell the
sender when (and from where) a ticket was read. nh3 (ammonia) does the
sanitising; this module only decides the policy.

Image sources after sanitising are one of:

* ``cid:<content-id>`` — the inline attachment of the same ticket message
  whose ``content_id`` is ``<content-id>`` (stored without angle brackets).
  The API resolves it to the attachment's download URL when it serves the
  HTML; references to parts the message does not contain are removed.
* ``x-firstline-remote:<original URL>`` — a remote image, not loaded. The
  scheme is unknown to browsers, so nothing is fetched; a "show images"
  button can strip the prefix once the agent asks for it.
* ``data:image/...;base64,...`` — an embedded bitmap; it loads nothing.
"""

from __future__ import annotations

import html as html_module
import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import unquote

import nh3
from inscriptis import get_text

REMOTE_IMAGE_SCHEME = "x-firstline-remote:"

_TAGS = frozenset(nh3.ALLOWED_TAGS | {"font", "tfoot"})

# Removed together with everything inside them: none of it is message text
# an agent needs, and all of it can leak, run code or fake the interface.
_DROP_WITH_CONTENT = frozenset(
    {
        "script",
        "style",
        "title",
        "button",
        "select",
        "textarea",
        "noscript",
        "iframe",
        "object",
        "embed",
        "template",
        "svg",
        "math",
    }
)

_ATTRIBUTES: dict[str, set[str]] = {
    tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()
} | {"*": {"style", "dir", "lang", "title"}}
for _tag, _extra in {
    "a": {"name"},
    "img": {"border", "hspace", "vspace"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"width", "height", "valign", "bgcolor", "nowrap"},
    "th": {"width", "height", "valign", "bgcolor", "nowrap"},
    "tr": {"valign", "bgcolor"},
    "font": {"color", "face", "size"},
    "p": {"align"},
    "div": {"align"},
}.items():
    _ATTRIBUTES.setdefault(_tag, set()).update(_extra)

# Properties that can neither load a URL nor lift content out of its box.
_STYLE_PROPERTIES = frozenset(
    {
        "color",
        "background-color",
        "font",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "text-align",
        "text-decoration",
        "text-indent",
        "vertical-align",
        "line-height",
        "white-space",
        "list-style-type",
        "margin",
        "margin-top",
        "margin-bottom",
        "margin-left",
        "margin-right",
        "padding",
        "padding-top",
        "padding-bottom",
        "padding-left",
        "padding-right",
        "border",
        "border-top",
        "border-bottom",
        "border-left",
        "border-right",
        "border-color",
        "border-style",
        "border-width",
        "border-collapse",
        "width",
        "height",
    }
)

# Elements that nest without bound in the tree a parser builds; the ones whose
# end tag may be left out (p, li, td …) or that have none (br, img …) are not
# counted, so that sloppy but ordinary HTML is never mistaken for deep HTML.
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*>")
_UNCOUNTED = frozenset(
    {
        *("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"),
        *("source", "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "thead"),
        *("tbody", "tfoot", "option", "optgroup", "colgroup", "caption", "rb", "rt", "rtc"),
        *("rp", "html", "head", "body"),
    }
)
_CLOSE_SEARCH = 16  # how far down the open elements an end tag may close
_MARKUP = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)

_URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid", "data"})
_DATA_IMAGES = ("data:image/png;", "data:image/gif;", "data:image/jpeg;", "data:image/webp;")


@dataclass(frozen=True)
class SanitisedHtml:
    """Safe HTML plus what was done to its images, for the ticket's evidence."""

    html: str
    remote_images: tuple[str, ...]
    content_ids: frozenset[str]


def normalise_content_id(value: str) -> str:
    """A Content-ID header value or a ``cid:`` URL path in one comparable form."""
    return unquote(value).strip().removeprefix("<").removesuffix(">").strip()


def bound_depth(html: str, limit: int) -> tuple[str, bool]:
    """``html`` with elements nested deeper than ``limit`` unwrapped (their text kept).

    html5ever (under nh3) takes time quadratic in the nesting depth, and lxml
    (under the text conversion) drops everything beyond 256 levels; one pass
    over the tags keeps both bounded. Returns whether anything was unwrapped.
    """
    open_elements: list[tuple[str, bool]] = []  # (name, kept)
    dropped: list[tuple[int, int]] = []
    for match in _TAG.finditer(html):
        name = match.group(2).lower()
        if name in _UNCOUNTED or match.group(0).endswith("/>"):
            continue
        if not match.group(1):
            kept = len(open_elements) < limit
            open_elements.append((name, kept))
            if not kept:
                dropped.append(match.span())
            continue
        for back in range(1, min(_CLOSE_SEARCH, len(open_elements)) + 1):
            if open_elements[-back][0] == name:
                kept = open_elements[-back][1]
                del open_elements[-back:]
                if not kept:
                    dropped.append(match.span())
                break
    if not dropped:
        return html, False
    pieces, position = [], 0
    for start, end in dropped:
        pieces.append(html[position:start])
        position = end
    pieces.append(html[position:])
    return "".join(pieces), True


def has_text(html: str) -> bool:
    """Whether ``html`` holds any text at all (to tell an empty body from a lost one)."""
    return bool(html_module.unescape(_MARKUP.sub("", html)).strip())


def sanitise_html(
    html: str, content_ids: Collection[str] = (), *, keep_remote: bool = True
) -> SanitisedHtml:
    """Sanitise ``html``; ``content_ids`` are the inline parts ``cid:`` may name.

    ``keep_remote=False`` (mail we send) drops remote image sources instead of
    turning them into ``x-firstline-remote:`` placeholders, which only our
    console understands.
    """
    known = {normalise_content_id(cid).lower(): normalise_content_id(cid) for cid in content_ids}
    remote: list[str] = []
    used: set[str] = set()

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        # nh3 has already removed values whose scheme is not in _URL_SCHEMES.
        if attr not in ("src", "href"):
            return value
        lowered = value.strip().lower()
        if lowered.startswith("data:"):
            return value if tag == "img" and lowered.startswith(_DATA_IMAGES) else None
        if lowered.startswith("cid:"):
            cid = known.get(normalise_content_id(value.strip()[4:]).lower())
            if cid is None or tag != "img":
                return None
            used.add(cid)
            return f"cid:{cid}"
        if tag == "img" and attr == "src":
            remote.append(value)
            return REMOTE_IMAGE_SCHEME + value if keep_remote else None
        return value

    cleaned = nh3.clean(
        html,
        tags=set(_TAGS),
        clean_content_tags=set(_DROP_WITH_CONTENT),
        attributes=_ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes=set(_URL_SCHEMES),
        # A relative URL in mail would resolve against the helpdesk itself.
        url_relative="deny",
        filter_style_properties=set(_STYLE_PROPERTIES),
        link_rel="noopener noreferrer nofollow",
    )
    return SanitisedHtml(cleaned, tuple(remote), frozenset(used))


def html_to_text(html: str) -> str:
    """The readable text of ``html``, laid out like a text mail client would."""
    if not html.strip():
        return ""
    return "\n".join(line.rstrip() for line in get_text(html).strip("\n").split("\n"))
