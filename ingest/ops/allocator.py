"""Give memory back to the system once large messages are gone.

glibc's malloc serves a block above its mmap threshold (128 KiB at first)
with a mapping of its own, unmapped when freed; but each time it frees one
it raises the threshold to that block's size, up to 32 MiB. After the first
10 MiB message every later one came from the heap arenas instead, which
fragment and are not trimmed: ``serve`` kept gigabytes after the load had
gone. A fixed threshold (which also switches the raising off) keeps large
messages in mappings of their own; trimming when the sessions have drained
returns what the arenas still hold of the small objects around them.

Other C libraries (musl, macOS) have neither call, and are left as they are.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger("mail.app")

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_LARGE = 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def map_large_blocks() -> None:
    """Serve every block of 1 MiB or more from a mapping of its own, for good."""
    if _LIBC is not None and not _LIBC.mallopt(_M_MMAP_THRESHOLD, _LARGE):
        log.warning("mallopt(M_MMAP_THRESHOLD) was refused")


def trim() -> None:
    """Return the arenas' free pages to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(ctypes.c_size_t(0))
