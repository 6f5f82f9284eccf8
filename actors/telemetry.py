"""What the cores report for monitoring; the Ray shells export it to the dashboard."""

from __future__ import annotations

import logging
from typing import Protocol

_log = logging.getLogger("dexec.orders")


def order_log(order_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """Return a logger whose every line carries `order_id` as a structured field."""
    return logging.LoggerAdapter(_log, {"order_id": order_id})


class Metrics(Protocol):
    """Application metrics reported by the plain cores (no Ray import here)."""

    def order_submitted(self, order_type: str) -> None: ...

    def order_finished(self, status: str, venue: str, seconds: float) -> None: ...

    def stage(self, stage: str, seconds: float) -> None: ...

    def retry(self, error_class: str) -> None: ...

    def queue(self, waiting: int, executing: int) -> None: ...


class NullMetrics:
    """Report nothing (unit tests, tools)."""

    def order_submitted(self, order_type: str) -> None:
        return None

    def order_finished(self, status: str, venue: str, seconds: float) -> None:
        return None

    def stage(self, stage: str, seconds: float) -> None:
        return None

    def retry(self, error_class: str) -> None:
        return None

    def queue(self, waiting: int, executing: int) -> None:
        return None
