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


def count_calls(
    obj: Any, name: str, *, raising: tuple[type[BaseException], ...] = (), monkeypatch: Any = None
) -> Callable[[], int]:
    """Wrap the async method ``obj.name`` and return a function saying how many times it has been called so far
    (with ``raising``: how many calls raised one of those), so a test waits for "three more passes of the
    worker" or "the write was refused twice" instead of sleeping. Pass pytest's ``monkeypatch`` when ``obj``
    outlives the test (a module): the wrapper is removed after it."""
    count = 0
    method = getattr(obj, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        if not raising:
            count += 1
        try:
            return await method(*args, **kwargs)
        except raising:
            count += 1
            raise

    if monkeypatch is not None:
        monkeypatch.setattr(obj, name, counted)
    else:
        setattr(obj, name, counted)
    return lambda: count
