"""docs/json.md read as data: each document's keys and when they are present.

The JSON tests hold every document the CLI, the API and webhooks emit to these
tables, so the page and the code cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs" / "json.md"


@dataclass(frozen=True)
class Shape:
    always: frozenset[str]
    alone: frozenset[str]
    optional: frozenset[str]

    def check(self, value: dict[str, Any], *, alone: bool, where: str) -> None:
        keys = set(value)
        required = self.always | (self.alone if alone else frozenset())
        allowed = required | self.optional
        assert required <= keys, f"{where}: missing {sorted(required - keys)}"
        assert keys <= allowed, f"{where}: not in docs/json.md: {sorted(keys - allowed)}"


def documented() -> dict[str, Shape]:
    """Each object's table on the page: key → always | alone | when …."""
    shapes: dict[str, Shape] = {}
    for section in re.split(r"^## ", DOCS.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        name = section.splitlines()[0].strip()
        rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.MULTILINE)
        if not rows:
            continue
        kinds: dict[str, set[str]] = {"always": set(), "alone": set(), "when": set()}
        for key, shown in rows:
            kinds[shown.split()[0]].add(key)
        shapes[name] = Shape(*(frozenset(kinds[k]) for k in ("always", "alone", "when")))
    return shapes
