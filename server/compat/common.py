"""Shared by the compatibility adapters: an ordered outbox drained by one sender task, so
session callbacks never await a socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.exceptions import ConnectionClosed

__all__ = ["Outbox", "dumps", "next_frame"]


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))


class Outbox:
    """Text frames (or a close) sent in order; `close` waits until everything went out."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def send(self, text: str) -> None:
        self._q.put_nowait(("send", text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._q.put_nowait(("close", (code, reason)))
        await asyncio.gather(self._task, return_exceptions=True)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                kind, item = await self._q.get()
                if kind == "close":
                    await self.ws.close(*item)
                    return
                await self.ws.send(item)
        except ConnectionClosed:
            return


async def next_frame(ws: Any, idle_s: float) -> str | bytes:
    """The client's next frame; TimeoutError after `idle_s` seconds without one
    (`--idle-timeout-s`, as on the native endpoint)."""
    async with asyncio.timeout(idle_s):
        return await ws.recv()
