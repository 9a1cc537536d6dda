"""Many deadlines on one loop timer (``waiting.Deadlines``): each comes once, at
its time and not before; a discarded one never comes; one set again moves."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from edgerq.runtime.waiting import Deadlines


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_each_deadline_comes_once_in_order_and_not_early(loop_kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        came: list[tuple[str, float]] = []
        done = asyncio.Event()

        def due(key: str) -> None:
            came.append((key, loop.time()))
            if len(came) == 3:
                done.set()

        deadlines: Deadlines[str] = Deadlines(due)
        start = loop.time()
        wanted = {"c": start + 0.15, "a": start + 0.05, "b": start + 0.10}
        for key, when in wanted.items():
            deadlines.set(key, when, loop)
        await asyncio.wait_for(done.wait(), 10)
        assert [key for key, _ in came] == ["a", "b", "c"]
        for key, at in came:
            assert at >= wanted[key] - 0.002  # a loop timer may fire a clock tick early
        assert len(deadlines) == 0

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        run(main())


def test_a_discarded_deadline_never_comes_and_the_others_still_do() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        came: list[str] = []
        later = asyncio.Event()

        def due(key: str) -> None:
            came.append(key)
            later.set()

        deadlines: Deadlines[str] = Deadlines(due)
        deadlines.set("first", loop.time() + 0.02, loop)
        deadlines.set("second", loop.time() + 0.08, loop)
        deadlines.discard("first")  # the timer armed for it fires, finds nothing due
        await asyncio.wait_for(later.wait(), 10)
        assert came == ["second"]

    run(main())


def test_setting_a_key_again_moves_its_deadline_and_a_due_key_may_set_itself_again() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        came: list[str] = []
        finished = asyncio.Event()

        def due(key: str) -> None:
            came.append(key)
            if came.count(key) < 3:
                deadlines.set(key, loop.time() + 0.01, loop)  # like a probe re-armed
            else:
                finished.set()

        deadlines: Deadlines[str] = Deadlines(due)
        deadlines.set("probe", loop.time() + 60, loop)
        deadlines.set("probe", loop.time() + 0.01, loop)  # moved earlier: comes soon
        await asyncio.wait_for(finished.wait(), 10)
        assert came == ["probe"] * 3
        assert "probe" not in deadlines

    run(main())


def test_close_forgets_everything() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        came: list[str] = []
        deadlines: Deadlines[str] = Deadlines(came.append)
        deadlines.set("x", loop.time() + 0.01, loop)
        deadlines.close()
        await asyncio.sleep(0.05)  # past the deadline: asserting it did not come
        assert came == [] and len(deadlines) == 0

    run(main())
