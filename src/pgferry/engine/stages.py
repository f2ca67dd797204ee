"""Running stages together: one ``asyncio.TaskGroup``, the first real error wins.

An exception in any stage, a task cancellation or Ctrl-C cancels the others; each stage's own
cleanup (rolling back the batch in flight, closing a cursor) runs as it unwinds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["END", "run_stages"]


class _End:
    def __repr__(self) -> str:
        return "END"


END: Any = _End()
"""Marker a stage puts on its queue after the last item."""


async def run_stages(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run stages together; the first real error wins and cancels the rest."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except BaseExceptionGroup as eg:
        errors = [e for e in _leaves(eg) if not isinstance(e, asyncio.CancelledError)]
        if errors:
            raise errors[0] from None
        raise


def _leaves(eg: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in eg.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
