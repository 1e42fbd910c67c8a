"""``make bench``: run every benchmark section and print its ratios."""

from __future__ import annotations

import os
import platform

from bench import ingest, postgres, processing, verification


def main() -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for section in (ingest, processing, verification, postgres):
        for line in section.run():
            print(line, flush=True)


if __name__ == "__main__":
    main()
