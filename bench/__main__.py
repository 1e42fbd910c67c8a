"""``make bench``: run every benchmark section and print its ratios."""

from __future__ import annotations

import os
import platform
import sys

from bench import bigstore, ingest, memory, postgres, processing, scaling, verification

SECTIONS = {
    "ingest": ingest,
    "processing": processing,
    "scaling": scaling,
    "verification": verification,
    "postgres": postgres,
    "memory": memory,
    "bigstore": bigstore,
}


def main() -> None:
    """Every section, or only those named (``python -m bench scaling``)."""
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for section in [SECTIONS[name] for name in sys.argv[1:]] or SECTIONS.values():
        for line in section.run():
            print(line, flush=True)


if __name__ == "__main__":
    main()
