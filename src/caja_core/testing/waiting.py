"""Waiting in tests on a condition with a deadline, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that; fail with ``what``
    once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no sucedió en {timeout_s} s: {what}")
        await asyncio.sleep(interval_s)
