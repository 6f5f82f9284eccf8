"""cancel_and_wait: unwanted work ends, its errors are dropped, the caller's cancellation is not."""

from __future__ import annotations

import asyncio
import gc

import pytest

from actors.tasks import cancel_and_wait


class SlowToEnd:
    """Work that, once cancelled, takes until `ended_may` is set to wind down."""

    def __init__(self, *, error: BaseException | None = None) -> None:
        self.started = asyncio.Event()
        self.ended_may = asyncio.Event()
        self.ended = False
        self.error = error

    async def run(self) -> str:
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await self.ended_may.wait()  # cleanup that takes its time
            self.ended = True
            if self.error is not None:
                raise self.error from None
            raise
        return "never"


async def test_the_work_is_cancelled_and_has_ended_when_it_returns() -> None:
    work = SlowToEnd()
    task = asyncio.ensure_future(work.run())
    await work.started.wait()
    waiting = asyncio.ensure_future(cancel_and_wait(task))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # it waits for the work's cleanup
    work.ended_may.set()
    await waiting
    assert work.ended and task.cancelled()


async def test_the_works_error_is_dropped_and_never_reported_as_unread(
        caplog: pytest.LogCaptureFixture) -> None:
    failing, plain = SlowToEnd(error=RuntimeError("cleanup failed")), SlowToEnd()
    for work in (failing, plain):
        work.ended_may.set()
    tasks = [asyncio.ensure_future(failing.run()), asyncio.ensure_future(plain.run())]
    await asyncio.gather(failing.started.wait(), plain.started.wait())

    await cancel_and_wait(*tasks)  # raises neither the error nor the work's cancellation

    # Not read here: only cancel_and_wait may have read the error.
    assert tasks[0].done() and not tasks[0].cancelled() and tasks[1].cancelled()
    del tasks
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_a_caller_cancelled_while_the_work_winds_down_is_cancelled_at_once() -> None:
    work = SlowToEnd()
    task = asyncio.ensure_future(work.run())
    await work.started.wait()
    after: list[str] = []

    async def caller() -> None:
        await cancel_and_wait(task)
        after.append("went on")  # must not run: the caller was cancelled

    running = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running  # at once, while the work is still winding down
    assert not work.ended and not after
    work.ended_may.set()
    await asyncio.wait({task})
    assert work.ended and task.cancelled()


async def test_no_work_is_no_wait_and_work_already_done_is_read_without_one() -> None:
    await cancel_and_wait()
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("failed before it was dropped"))
    steps = 0

    async def count_steps() -> None:
        nonlocal steps
        while True:
            steps += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_steps())
    await asyncio.sleep(0)
    before = steps
    await cancel_and_wait(failed, failed)
    assert steps == before  # no turn of the loop was taken
    counter.cancel()
    await asyncio.wait({counter})
