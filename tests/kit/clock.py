"""Clocks the tests inject instead of sleeping."""

from __future__ import annotations


class FakeClock:
    """Time that moves only when someone sleeps on it or the test advances it.

    Use `clock` wherever a core takes `clock: Callable[[], float]` and `clock.sleep` where it
    takes `sleep`. `max_sleeps` turns a runaway retry loop into a failed test.
    """

    def __init__(self, start: float = 0.0, max_sleeps: int = 5_000) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._max_sleeps = max_sleeps

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) > self._max_sleeps:
            raise AssertionError("kept sleeping: the code under test never settled")
