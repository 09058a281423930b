"""Fan-out of live events (adaptation events, context samples) to SSE subscribers.

Publishers are plain threads (the adaptation loop); subscribers are asyncio tasks (one per
open ``/v1/events`` connection). Each subscriber has a bounded queue: a client that reads
too slowly loses its oldest messages rather than growing the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)
END = ""  # queued by close(): the stream ends (a real frame is never empty)


def sse(kind: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event frame."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Broadcaster:
    """Thread-safe publish; async subscribe."""

    def __init__(self, max_subscribers: int = 32, queue_size: int = 256) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[asyncio.Queue[str]] = set()
        self._lock = threading.Lock()
        self.max_subscribers, self._queue_size = max_subscribers, queue_size

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the subscribers live on (set by the app's lifespan)."""
        self._loop = loop

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send to every subscriber, from any thread; a no-op with none."""
        loop = self._loop
        if loop is None or not self._subs or loop.is_closed():
            return
        frame = sse(kind, data)
        with contextlib.suppress(RuntimeError):  # the loop closed since the check
            loop.call_soon_threadsafe(self._fan_out, frame)

    def _fan_out(self, frame: str) -> None:
        for queue in list(self._subs):
            if queue.full():
                queue.get_nowait()  # drop the oldest for a slow reader
            queue.put_nowait(frame)

    def subscribe(self) -> asyncio.Queue[str] | None:
        """A new subscriber's queue, or None when the subscriber limit is reached."""
        with self._lock:
            if len(self._subs) >= self.max_subscribers:
                return None
            queue: asyncio.Queue[str] = asyncio.Queue(self._queue_size)
            self._subs.add(queue)
            return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        with self._lock:
            self._subs.discard(queue)

    def close(self) -> None:
        """End every open stream (the server is stopping: open event streams would hold
        the drain of requests in flight to its time limit); safe from a signal handler."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed since the check
            loop.call_soon_threadsafe(self._fan_out, END)

    async def stream(
        self, queue: asyncio.Queue[str], first: list[str], ping_s: float = 15.0
    ) -> AsyncIterator[str]:
        """``first`` frames, then live ones, with keep-alive comments; unsubscribes at end."""
        try:
            for frame in first:
                yield frame
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), ping_s)
                except asyncio.TimeoutError:
                    frame = ": ping\n\n"
                if frame == END:
                    return
                yield frame
        finally:
            self.unsubscribe(queue)
