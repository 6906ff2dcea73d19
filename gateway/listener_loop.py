"""The MLLP listener's own event loop, in a thread of the gateway process, so an acknowledgement never waits
behind the pipeline's work on the main loop.

The main loop runs the pipeline's bookkeeping (claims, commits of mapped batches, submission receipts, its
logs and metrics), the FHIR API, the console and `/metrics`; at full drain that keeps it busy more than half
the time, in steps of several milliseconds. A message arriving then waited for those steps before it was even
read. On its own loop the listener waits for nothing of theirs: it reads, screens, queues its write for the
store's writer thread (gateway/store/writer.py, which wakes the caller on the caller's loop) and answers. The
two loops still share the interpreter's lock (the GIL) and the cores; a shorter switch interval
(`sys.setswitchinterval`, 0.5-1 ms against the default 5 ms) was measured and changed nothing, so it is left.

Only a store whose writes may be awaited from any loop (SQLite: `Store.writes_from_any_loop`) runs the
listener here; with PostgreSQL (its connection pool belongs to the main loop) it stays on the main loop.

The HTTP listener stays on the main loop. It was moved here once and moved back after a review: `/metrics`
and `/readyz` must fail when the main loop hangs (that is what the HealthbookGatewayDown alert and the Docker
health check see), and a large FHIR body parsed on this loop held MLLP acknowledgements for up to a second.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class ListenerLoop:
    """An event loop running in a thread of its own until close(); run() awaits a coroutine on it."""

    def __init__(self, name: str = "mllp-listener") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run the coroutine on the listener's loop and return (or raise) what it does, from the caller's loop."""
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the listener's loop is closed")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    async def close(self) -> None:
        """Stop the loop and end the thread. Stop the servers on it first: a task still running is dropped."""
        if self._loop.is_closed():
            return
        await self.run(self._loop.shutdown_asyncgens())
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()
