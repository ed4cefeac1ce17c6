"""The async app's gate (in-flight slots and pool connections): waits, hand-over, no barging,
deadlines, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from servers.slots import Slots, loop_time

pytestmark = pytest.mark.unit


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_free_slots_are_taken_at_once_and_then_refused() -> None:
    slots = Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    slots.give()
    assert slots.try_take()


def test_a_waiter_is_handed_the_next_free_slot_in_order() -> None:
    async def main() -> list[int]:
        slots = Slots(1)
        assert slots.try_take()
        order: list[int] = []

        async def wait(i: int) -> None:
            assert await slots.take(loop_time() + 5.0)
            order.append(i)
            slots.give()

        tasks = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert slots.waiting == 3
        slots.give()
        await asyncio.gather(*tasks)
        assert slots.taken == 0 and slots.waiting == 0
        return order

    assert run(main()) == [0, 1, 2]


def test_a_freed_slot_goes_to_the_waiter_not_to_a_newcomer() -> None:
    async def main() -> None:
        slots = Slots(1)
        assert slots.try_take()
        waiter = asyncio.create_task(slots.take(loop_time() + 5.0))
        await asyncio.sleep(0)
        slots.give()  # handed over; the waiter has not run yet
        assert not slots.try_take()  # a request arriving now must queue behind it
        assert await waiter is True
        assert slots.taken == 1

    run(main())


def test_expire_ends_only_the_overdue_waits_and_leaves_the_count_intact() -> None:
    async def main() -> None:
        slots = Slots(1)
        assert slots.try_take()
        now = loop_time()
        early = asyncio.create_task(slots.take(now + 0.05))
        late = asyncio.create_task(slots.take(now + 60.0))
        await asyncio.sleep(0)
        slots.expire(now + 0.1)
        assert await early is False
        assert not late.done() and slots.waiting == 1 and slots.taken == 1
        slots.give()  # goes to the wait still queued
        assert await late is True
        slots.give()
        assert slots.taken == 0 and slots.try_take()

    run(main())


def test_a_cancelled_waiter_passes_a_handed_slot_on() -> None:
    async def main() -> None:
        slots = Slots(1)
        assert slots.try_take()
        first = asyncio.create_task(slots.take(loop_time() + 5.0))
        second = asyncio.create_task(slots.take(loop_time() + 5.0))
        await asyncio.sleep(0)
        slots.give()  # handed to `first`...
        first.cancel()  # ...which is cancelled before it runs: the slot must reach `second`
        assert await second is True
        assert slots.taken == 1 and slots.waiting == 0

    run(main())
