"""Templates and what they show: everything from mail is hostile, and shown inert.

Jinja2 escapes every value (autoescape on for all templates); on top of that
:func:`show` makes invisible and direction-changing characters visible
(``⟨U+202E⟩``) so a subject cannot reorder the text around it, and cuts long
values in lists. The chart is SVG drawn here: shapes and numbers, no script.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader

from ingest.console.explain import explain
from policy.verify.verdict import original_sender, summary

# Controls (but tab and line breaks), bidi embeddings/overrides/isolates, zero-width
# characters, soft hyphen and BOM.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2069\ufeff]"
)


def show(value: Any, limit: int | None = None) -> str:
    text = "" if value is None else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return _INVISIBLE.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def when(value: str | datetime | None) -> str:
    """An ISO time as ``2026-11-24 14:05:09`` (UTC), the way the CLI prints it."""
    if value is None:
        return "-"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text[:19].replace("T", " ")


def chart(hours: list[dict[str, Any]], width: int = 720, height: int = 160) -> dict[str, Any]:
    """Geometry for the accepted-vs-refused bars: one pair of bars per hour."""
    top = max([1, *(max(h["accepted"], h["refused"]) for h in hours)])
    plot = height - 20
    slot = width / max(len(hours), 1)
    bar = max(slot / 2 - 1, 1)
    bars = []
    for index, hour in enumerate(hours):
        x = index * slot
        for offset, kind in ((0.0, "accepted"), (bar, "refused")):
            h = round(hour[kind] / top * plot, 1)
            bars.append(
                {
                    "x": round(x + offset, 1),
                    "y": round(plot - h, 1),
                    "w": round(bar, 1),
                    "h": h,
                    "kind": kind,
                    "title": f"{when(hour['hour'])[11:16]} UTC: {hour[kind]} {kind}",
                }
            )
    labels = [
        {"x": round(i * slot, 1), "text": when(h["hour"])[11:16]}
        for i, h in enumerate(hours)
        if i % 4 == 0
    ]
    return {"width": width, "height": height, "plot": plot, "bars": bars, "labels": labels,
            "top": top}  # fmt: skip


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("ingest.console", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["show"] = show
    env.filters["when"] = when
    env.globals["explain"] = explain
    env.globals["verdict_line"] = summary
    env.globals["original_sender"] = original_sender
    return env
