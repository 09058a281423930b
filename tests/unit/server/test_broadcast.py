"""The event stream hub: a stop ends every open stream at once."""

from __future__ import annotations

import asyncio

from edge_service.server.broadcast import Broadcaster


def test_open_streams_end_after_the_frames_sent_so_far_when_the_hub_is_closed() -> None:
    async def scenario() -> list[str]:
        hub = Broadcaster()
        hub.bind(asyncio.get_running_loop())
        queue = hub.subscribe()
        assert queue is not None
        hub.publish("adaptation", {"to_variant": "base@int8"})
        hub.close()  # what a SIGTERM does (from the signal handler)
        frames = [f async for f in hub.stream(queue, ["event: hello\ndata: {}\n\n"], ping_s=5)]
        assert hub.subscribers == 0
        return frames

    frames = asyncio.run(asyncio.wait_for(scenario(), 3))
    assert frames[0].startswith("event: hello") and "base@int8" in frames[1]
    assert len(frames) == 2
