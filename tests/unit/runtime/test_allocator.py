"""``tune_allocator``: glibc's ``mallopt`` told the two thresholds where the C library
has it, and nothing done where it has not."""

from __future__ import annotations

import ctypes

import pytest

from edgerq.runtime.allocator import MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD, tune_allocator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
"""``tune_allocator`` looks ``ctypes.CDLL`` up as it runs: the tests patch it there."""


class Glibc:
    """A C library with ``mallopt``; records what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


class Musl:
    """A C library without ``mallopt`` (ctypes raises AttributeError for a symbol it
    does not have); records the symbols looked up."""

    def __init__(self) -> None:
        self.looked_up: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.looked_up.append(name)
        raise AttributeError(f"undefined symbol: {name}")


def test_glibc_is_told_both_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = Glibc()
    opened: list[object] = []

    def cdll(name: object) -> Glibc:
        opened.append(name)
        return libc

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    tune_allocator()
    assert opened == [None]  # the process's own C library
    assert libc.calls == [
        (M_MMAP_THRESHOLD, 4 * 1024 * 1024),
        (M_TRIM_THRESHOLD, 32 * 1024 * 1024),
    ]
    assert (MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD) == (4194304, 33554432)


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = Musl()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    tune_allocator()  # no AttributeError
    assert libc.looked_up == ["mallopt"]  # looked for once, nothing else tried


def test_no_c_library_at_all_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []

    def cdll(name: object) -> object:
        opened.append(name)
        raise OSError("no C library")

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    tune_allocator()  # no OSError
    assert opened == [None]
