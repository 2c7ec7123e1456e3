"""Wait for a condition instead of sleeping a fixed time: ``eventually()`` and ``always()``.

Both read time from the running event loop, so under a
:class:`~alphapanda.testing.VirtualClock` loop they follow virtual time (and with
autojump they cost no real time at all).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    # A deadline of the predicate, not of the caller: asyncio.timeout() around the
    # call could not say which condition failed, nor how it last looked.
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.01,
    what: str | None = None,
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """Check ``predicate`` every ``interval`` seconds until it returns something truthy,
    and return that; fail with an ``AssertionError`` after ``timeout`` seconds.

    ``predicate`` may be a plain function or a coroutine function. An exception of a
    type in ``retry_on`` counts as "not yet" (so ``lambda: check_something()`` with
    asserts inside works); any other exception is a bug and propagates at once. The
    failure message names the condition (``what``, else the predicate's source), the
    number of checks, and the last result or exception.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"need timeout >= 0 and interval > 0, got {timeout!r}, {interval!r}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    checks = 0
    last: object = None
    last_error: BaseException | None = None
    while True:
        checks += 1
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
        except retry_on as exc:
            last, last_error = None, exc
        else:
            if result:
                return result
            last, last_error = result, None
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
    outcome = (
        f"last check raised {type(last_error).__name__}: {last_error}"
        if last_error is not None
        else f"last result: {last!r}"
    )
    raise AssertionError(
        f"{what or describe(predicate)} did not become true within {timeout:g} s "
        f"({checks} checks); {outcome}"
    ) from last_error


async def always(
    predicate: Callable[[], object | Awaitable[object]],
    *,
    duration: float,
    interval: float = 0.05,
    what: str | None = None,
) -> None:
    """Check that ``predicate`` stays truthy for ``duration`` seconds, checking every
    ``interval``: an observation window ("nothing may happen in it"), failing at the
    first check that does not hold instead of only at the end."""
    if duration < 0 or interval <= 0:
        raise ValueError(f"need duration >= 0 and interval > 0, got {duration!r}, {interval!r}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + duration
    checks = 0
    while True:
        checks += 1
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if not result:
            raise AssertionError(
                f"{what or describe(predicate)} stopped holding after "
                f"{loop.time() - start:.3f} s of {duration:g} s (check {checks}); "
                f"result: {result!r}"
            )
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(interval, remaining))


def describe(predicate: Callable[..., object]) -> str:
    """A readable name for a condition: a lambda's source text, else its qualified name."""
    name = getattr(predicate, "__qualname__", None) or repr(predicate)
    if name.endswith("<lambda>"):
        try:
            source = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            return name
        start = source.find("lambda")
        source = " ".join(source[start:].split())
        return source if len(source) <= 160 else source[:157] + "..."
    return name
