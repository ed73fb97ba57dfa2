"""HTTP POST of every final (and call end) to a configured URL, off the audio path.

Events are queued (bounded; the oldest is dropped when full) and posted by one sender
task with an aiohttp client: JSON body, up to `attempts` tries with exponential backoff
on connection errors, 5xx and 429; 4xx other than 429 is not retried. Nothing here can
block or fail a session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

__all__ = ["Webhook", "WEBHOOK_EVENTS"]

log = logging.getLogger("tingxie.telephony")

WEBHOOK_EVENTS = ("final", "dtmf", "call_end")


class Webhook:
    def __init__(self, url: str, attempts: int = 4, backoff_s: float = 0.5, timeout_s: float = 10.0,
                 max_queue: int = 10_000, events: tuple[str, ...] = WEBHOOK_EVENTS) -> None:
        self.url = url
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.events = events
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self._task: asyncio.Task | None = None
        self._session: Any = None
        self.delivered = 0
        self.failed = 0

    def __call__(self, event: dict[str, Any]) -> None:
        """A hub sink: queue the event if it is one the webhook carries."""
        if event.get("type") not in self.events:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self.failed += 1
            log.warning("webhook queue full: oldest event dropped")
        self._queue.put_nowait(event)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._task = asyncio.create_task(self._run())

    async def close(self, drain_s: float = 5.0) -> None:
        """Try to deliver what is queued for up to drain_s, then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(drain_s):
                await self._queue.join()  # queued and in-flight posts
        except TimeoutError:
            log.warning("webhook: %d events undelivered at shutdown", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._session.close()
        self._task = None

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if await self._post(event):
                    self.delivered += 1
                else:
                    self.failed += 1
            finally:
                self._queue.task_done()

    async def _post(self, event: dict[str, Any]) -> bool:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.post(self.url, json=event) as r:
                    if r.status < 400:
                        return True
                    if r.status < 500 and r.status != 429:
                        log.warning("webhook: HTTP %d: not retried", r.status)
                        return False
                    log.info("webhook: HTTP %d (try %d/%d)", r.status, attempt, self.attempts)
            except (aiohttp.ClientError, TimeoutError) as e:
                log.info("webhook: %s (try %d/%d)", e, attempt, self.attempts)
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning("webhook: gave up on a %s event of call %s", event.get("type"), event.get("call_id"))
        return False
