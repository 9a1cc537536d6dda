"""glibc's allocator tuned for a relay that reads large blocks (``mallopt``)."""

from __future__ import annotations

import ctypes

MALLOC_MMAP_THRESHOLD = 4 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024


def tune_allocator() -> None:
    """Keep glibc from handing the heap back to the kernel after every socket read.

    Each read of a pipe is a fresh ``bytes`` of up to 256 KiB (uvloop). With
    glibc's defaults such blocks sit at the top of the heap, are trimmed with
    ``brk`` as soon as they are freed and faulted in again by the next read,
    which on a bulk transfer costs the SC much system time. Allocations up to
    ``MALLOC_MMAP_THRESHOLD`` (4 MiB) now come from the heap, and up to
    ``MALLOC_TRIM_THRESHOLD`` (32 MiB) of free heap is kept.
    Other C libraries are left alone.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
    mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)
