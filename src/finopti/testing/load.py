"""Open-loop load for tests and benchmarks: requests leave on their schedule whether or not earlier ones have
answered, as users' requests do (a closed loop would slow down with the system it measures)."""

import asyncio
import time
from collections.abc import Awaitable, Callable


async def send_on_schedule(rate: float, count: int, send: Callable[[], Awaitable[None]]) -> float:
    """Start `send()` `count` times, `rate` per second, and wait for all of them; returns the wall time taken."""
    started = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send()))
    await asyncio.gather(*tasks)
    return time.perf_counter() - started
