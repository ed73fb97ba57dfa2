"""The batching engine: one owner of the model for every session.

Sessions submit requests (`server.session.ChunkRequest` / `FinalRequest`) and await a
future each. One gatherer task on the event loop waits for the first request, then for
`max_batch` requests or until `max_wait_ms` after the oldest one arrived (a deadline,
never a polling sleep), and hands the batch to a single worker thread, which

1. runs one `Recognizer.step` over every stream with a chunk ready: one batched
   `forward_chunk` for streams at different offsets,
2. runs the utterance ends (`Stream.end_utterance`, and `Recognizer.transcribe_many` for
   the full-context final passes, one padded batch) for about as long as the step took,
   deferring the rest to the next batch so that a burst of finals never stalls the
   partials of every stream; with final pass "auto" a pass gives way to the streaming
   result only under sustained overload: while the streaming steps alone kept the
   worker busy more than MAX_STEP_SHARE_FOR_PASSES of the last SKIP_WINDOW_S seconds, or
   when it has waited `final_pass_max_wait_ms` while the worker was busy (steps and
   passes) more than MAX_BUSY_FOR_LATE_PASSES of that time (passes piling up); before
   that, passes run without their attention rescoring while the worker was busy more than
   MAX_BUSY_FOR_RESCORING of the last BUSY_WINDOW_S seconds. An idle engine always runs
   the whole pass, whatever the timing of the queue. Each final request records which
   pass produced its result (`FinalRequest.produced_by`: "full", "unrescored" or
   "stream"),

and the gatherer resolves the futures on the loop. An utterance end whose final is the
streaming result (no full pass asked for, or none affordable now, and no rescoring) is
resolved on submission instead, on the loop's thread: it needs no model work, and a trip
through the queue would cost it one to two steps. A chunk request's audio is fed to its
stream (and VAD) when it is submitted, on the loop's thread: the features (fbank) are a
per-stream cost that no batching shares, and the worker, which is the bottleneck at
capacity, spent about a fifth of its time on them; the
loop's thread had the time to spare. While the worker runs, new requests queue up, so
batches grow with load. Each stream has at most one request in flight, so the queue never
holds more requests than there are streams. A request that waited longer than
`overload_s` fails with `Overloaded`: the machine cannot keep up.

Nothing here touches a socket: a slow or dead client cannot stall the engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Protocol

import torch

from asr.memory import release_free_heap

from .errors import InternalError, Overloaded
from .session import ChunkRequest, FinalRequest, Request

__all__ = ["Batcher", "BatchStats", "EngineClosed"]

log = logging.getLogger("tingxie.engine")

# Final passes get at least this share of a chunk period per batch (or the step's own
# time, if longer): a Whisper-CTC pass over a sentence takes 50-150 ms on 2 cores, and a
# smaller budget ran them one per batch, queueing finals behind each other; a batch that
# ends within half a chunk period still leaves every partial on time.
FINAL_BUDGET_CHUNK_SHARE = 0.5
MIN_FINAL_BUDGET_S = 0.05
# Final pass "auto": full passes run while the streaming steps (which must run) took less
# than this share of the worker over the last SKIP_WINDOW_S seconds; passes use what is
# left. Measured on the steps alone, so that the passes' own time cannot turn them off.
MAX_STEP_SHARE_FOR_PASSES = 0.75
# ... and a pass that has waited final_pass_max_wait_ms is dropped only while the worker
# had (almost) no idle time: the passes are then piling up behind each other.
MAX_BUSY_FOR_LATE_PASSES = 0.9
# Skipping judges the load over this long: over 3 s, a burst of utterance ends (or another
# process taking the cores for a moment) crossed both thresholds on an engine that was 60%
# busy on average, and the skipped passes were lost for nothing. At the onset of a real
# overload passes wait this long (deferred, partials first) before they give way.
SKIP_WINDOW_S = 10.0
# ... and before that, under the same rule ("auto"), a model that rescores its full passes
# (Whisper's decoder, ~30% of a pass) sheds the rescoring first: while the worker was busy
# more than this share of the window, passes run without it ("pass": "unrescored"), so
# that finals keep the full-context model as long as the machine can afford that.
MAX_BUSY_FOR_RESCORING = 0.8
BUSY_WINDOW_S = 3.0
SKIP_LOG_INTERVAL_S = 10.0  # at most one log line this often about skipped passes
DEFERRED = object()  # a final pass left for the next batch
# The worker hands the heap's free pages back to the OS (`asr.memory`) when the queue is
# empty and this long has passed since it last did, and after six times this long even
# when it never runs dry: without it RSS climbs in steps to the largest working set the
# passes ever needed (+55 MB in the second half of an hour-long soak).
HEAP_TRIM_INTERVAL_S = 10.0


def _feed(req: ChunkRequest) -> InternalError | None:
    """Give a chunk request's audio to its stream and VAD (features are computed here)."""
    try:
        if req.audio is not None and req.audio.size:
            req.stream.accept_waveform(req.audio)
            if req.vad is not None:
                req.vad.accept(req.audio)
        if req.finish:
            req.stream.input_finished()
    except Exception:
        log.exception("feeding audio failed")
        return InternalError("could not process the audio")
    return None


class EngineClosed(InternalError):
    def __init__(self) -> None:
        super().__init__("the server is shutting down", "internal_error")


@dataclass(frozen=True)
class BatchStats:
    """What one worker run did (for metrics)."""

    requests: int
    chunks: int  # streams stepped together in one forward_chunk
    finals: int
    seconds: float  # worker time
    step_seconds: float  # of which the batched model step
    audio_seconds: float  # audio the step decoded (chunks x chunk duration) + final passes
    max_wait_seconds: float  # longest queue wait in the batch
    passes_skipped: int = 0  # final passes replaced by the streaming result (final pass "auto")
    rescoring_shed: int = 0  # full passes run without their attention rescoring (final pass "auto")


class Load(NamedTuple):
    """The worker's recent load, as the final-pass rules read it (shares of wall time)."""

    steps: float  # on streaming steps, over SKIP_WINDOW_S
    busy: float  # on anything, over SKIP_WINDOW_S
    busy_recent: float  # on anything, over BUSY_WINDOW_S


class StepRunner(Protocol):
    """What the engine needs from a recognizer (`asr.recognizer.Recognizer` fits)."""

    def step(self, streams: list[Any]) -> None: ...

    def transcribe(self, audio: Any, sample_rate: int = 16000) -> Any: ...

    # Optional: `transcribe` for several utterances in one batch (Recognizer has it).
    # def transcribe_many(self, audios: list[Any], sample_rate: int = 16000) -> list[Any]


@dataclass(eq=False)
class _Item:
    request: Request
    future: asyncio.Future
    t: float  # loop time when queued


class Batcher:
    """Deadline-driven cross-session batching on one worker thread."""

    def __init__(
        self,
        recognizer: StepRunner,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        overload_s: float = 10.0,
        chunk_seconds: float = 0.64,
        on_batch: Optional[Callable[[BatchStats], None]] = None,
        threads: int = 0,
        final_pass_max_wait_ms: float | None = None,
        trim_interval_s: float = HEAP_TRIM_INTERVAL_S,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.rec = recognizer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.overload_s = overload_s
        self.chunk_seconds = chunk_seconds
        self.on_batch = on_batch
        self.on_pass_skipped: Optional[Callable[[int], None]] = None  # final passes replaced by the streaming result
        self._threads = threads
        # A final pass that has waited this long gives way to the streaming result (None:
        # never): under load finals stay prompt rather than queue behind full passes.
        self.final_pass_max_wait = None if final_pass_max_wait_ms is None else final_pass_max_wait_ms / 1000.0
        self._threads_before = 0
        self.trim_interval = trim_interval_s  # 0: never
        self._last_trim = 0.0  # loop time of the last trim (or of the first batch after it)
        self._worked_since_trim = False
        self.heap_trims = 0
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        # Worker seconds per audio second of the full-context final passes (measured as
        # they run); 0 until the first batch of them, which is then one pass alone.
        self._final_cost_per_s = 0.0
        self.passes_skipped = 0  # final passes that gave way to the streaming result (auto)
        self._skipped_unlogged, self._last_skip_log = 0, -math.inf
        # (end, worker seconds, streaming-step seconds) per batch
        self._busy: collections.deque[tuple[float, float, float]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tingxie-engine", initializer=self._init_thread)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tingxie-batcher")

    def _init_thread(self) -> None:
        if self._threads > 0:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self._threads)  # process-wide: restored by close()

    async def close(self) -> None:
        """Fail what is still queued and stop the worker (after its current batch)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(EngineClosed())
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._threads_before:
            torch.set_num_threads(self._threads_before)
            self._threads_before = 0

    async def run_in_worker(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the model's thread (e.g. a warm-up), outside any batch."""
        if self._executor is None:
            raise EngineClosed()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def submit(self, request: Request) -> asyncio.Future:
        """Queue a request; the future gets its outcome (see `server.session`)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._closing or self._task is None or self._wakeup is None:
            fut.set_exception(EngineClosed())
            return fut
        if isinstance(request, ChunkRequest):
            error = _feed(request)
            if error is not None:
                fut.set_exception(error)
                return fut
        elif self._streaming_final_now(request, loop.time()):
            # The stream's own result: nothing left for the model to do.
            request.produced_by = "stream"
            if request.audio is not None:
                self._count_skipped(1, self.load(loop.time()))
            try:
                fut.set_result(request.stream.end_utterance())
            except Exception:
                log.exception("ending an utterance failed")
                fut.set_exception(InternalError("recognition failed"))
            return fut
        self._queue.append(_Item(request, fut, loop.time()))
        self._wakeup.set()
        return fut

    def _count_skipped(self, n: int, load: Load) -> None:
        """Final passes replaced by the streaming result (on the loop's thread only); the
        operator learns why, at most every SKIP_LOG_INTERVAL_S."""
        self.passes_skipped += n
        self._skipped_unlogged += n
        if self.on_pass_skipped is not None:
            self.on_pass_skipped(n)
        now = time.monotonic()
        if now - self._last_skip_log >= SKIP_LOG_INTERVAL_S:
            log.warning(
                "engine overloaded: %d final pass(es) replaced by the streaming result; over the last %.0f s "
                "the streaming steps took %.0f%% of the worker and it was busy %.0f%%",
                self._skipped_unlogged, SKIP_WINDOW_S, 100 * load.steps, 100 * load.busy,
            )
            self._last_skip_log, self._skipped_unlogged = now, 0

    def _streaming_final_now(self, req: FinalRequest, now: float) -> bool:
        """Whether a final is the streaming result, decidable at submission: no full pass
        was asked for, or (final pass "auto") the worker has no spare capacity for one;
        and the stream does not rescore (attention rescoring is model work)."""
        if getattr(req.stream, "rescoring", False):
            return False
        if req.audio is None:
            return True
        return self.final_pass_max_wait is not None and self.step_fraction(now) > MAX_STEP_SHARE_FOR_PASSES

    # ------------------------------------------------------------------ gatherer

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            self._drop_cancelled()
            until_trim = self._until_trim(loop.time())
            if not self._queue:
                self._wakeup.clear()
                if until_trim is not None and until_trim <= 0:
                    await self._trim(loop)
                elif until_trim is None:
                    await self._wakeup.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), until_trim)
                continue
            if until_trim is not None and until_trim <= -5 * self.trim_interval:  # never idle: trim anyway
                await self._trim(loop)
            deadline = self._queue[0].t + self.max_wait
            while len(self._queue) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
                self._drop_cancelled()
            batch = self._take(loop.time())
            if not batch:
                continue
            t0 = loop.time()
            if not self._worked_since_trim:
                self._worked_since_trim, self._last_trim = True, t0
            load = self.load(t0)
            try:
                outcomes, stats = await loop.run_in_executor(
                    self._executor, self._work, [i.request for i in batch], [t0 - i.t for i in batch], load
                )
            except Exception:  # the worker itself failed: fail the batch, keep serving
                log.exception("engine batch failed")
                outcomes = [InternalError("recognition failed")] * len(batch)
                stats = None
            deferred = [item for item, outcome in zip(batch, outcomes) if outcome is DEFERRED]
            self._queue.extendleft(reversed(deferred))  # first in line next time, original times kept
            for item, outcome in zip(batch, outcomes):
                if item.future.done() or outcome is DEFERRED:
                    continue
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)
            if stats is not None and stats.passes_skipped:
                self._count_skipped(stats.passes_skipped, load)
            t1 = loop.time()
            self._busy.append((t1, t1 - t0, stats.step_seconds if stats is not None else t1 - t0))
            if stats is not None and self.on_batch is not None:
                wait = max(t0 - i.t for i in batch)
                self.on_batch(dataclasses.replace(stats, max_wait_seconds=wait))

    def _until_trim(self, now: float) -> float | None:
        """Seconds until a heap trim is due (negative: overdue); None: none pending."""
        if not self.trim_interval or not self._worked_since_trim:
            return None
        return self._last_trim + self.trim_interval - now

    async def _trim(self, loop: asyncio.AbstractEventLoop) -> None:
        """Release the heap's free pages on the worker thread (it owns the model's memory)."""
        self._worked_since_trim = False
        self._last_trim = loop.time()
        try:
            await loop.run_in_executor(self._executor, release_free_heap)
            self.heap_trims += 1
        except Exception:  # never worth failing the engine over
            log.exception("releasing free heap memory failed")

    def _window(self, now: float) -> collections.deque[tuple[float, float, float]]:
        while self._busy and self._busy[0][0] < now - SKIP_WINDOW_S:
            self._busy.popleft()
        return self._busy

    def busy_fraction(self, now: float, window: float = BUSY_WINDOW_S) -> float:
        """Share of the last `window` seconds the worker spent on batches."""
        return min(1.0, sum(s for end, s, _ in self._window(now) if end >= now - window) / window)

    def step_fraction(self, now: float) -> float:
        """Share of the last SKIP_WINDOW_S seconds the worker spent on streaming steps."""
        return min(1.0, sum(s for _, _, s in self._window(now)) / SKIP_WINDOW_S)

    def load(self, now: float) -> Load:
        """The worker's recent load, as the final-pass rules read it."""
        return Load(self.step_fraction(now), self.busy_fraction(now, SKIP_WINDOW_S), self.busy_fraction(now))

    def _drop_cancelled(self) -> None:
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()

    def _take(self, now: float) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.future.done():  # cancelled: the session is gone
                continue
            if now - item.t > self.overload_s:
                item.future.set_exception(
                    Overloaded(f"the server is overloaded (audio waited {now - item.t:.1f} s for the recogniser)")
                )
                continue
            batch.append(item)
        return batch

    # ------------------------------------------------------------------ worker thread

    def _work(self, requests: list[Request], waits: list[float] | None = None,
              load: Load = Load(0.0, 0.0, 0.0)) -> tuple[list[Any], BatchStats]:
        """Run one batch on the worker thread; waits: how long each request queued (s);
        load: the worker's recent load."""
        t0 = time.perf_counter()
        waits = waits or [0.0] * len(requests)
        skip_pass = self.final_pass_max_wait
        shed_rescoring = (skip_pass is not None and load.busy_recent > MAX_BUSY_FOR_RESCORING
                          and getattr(self.rec, "rescores_full_passes", False))
        outcomes: list[Any] = [False] * len(requests)
        stepping: list[int] = []
        for i, req in enumerate(requests):
            if isinstance(req, ChunkRequest) and req.stream.ready():  # fed on submit
                stepping.append(i)
        t1 = time.perf_counter()
        if stepping:
            try:
                self.rec.step([requests[i].stream for i in stepping])
                for i in stepping:
                    outcomes[i] = True
            except Exception:
                log.exception("batched step failed (%d streams)", len(stepping))
                for i in stepping:
                    outcomes[i] = InternalError("recognition failed")
        t2 = time.perf_counter()
        audio_s = len(stepping) * self.chunk_seconds
        # Final passes (a whole utterance each) share the worker with the streams: at
        # most about as long as this step took, or half a chunk period, so partials never
        # wait for a convoy of finals; the rest go back to the queue for the next batch.
        # The passes chosen run as one padded batch where the recognizer can
        # (`transcribe_many`).
        budget = max(t2 - t1, FINAL_BUDGET_CHUNK_SHARE * self.chunk_seconds, MIN_FINAL_BUDGET_S)
        passes: list[int] = []
        planned = 0.0
        finals = skipped = 0
        for i, req in enumerate(requests):
            if not isinstance(req, FinalRequest):
                continue
            full = req.audio is not None
            if full and skip_pass is not None and (
                load.steps > MAX_STEP_SHARE_FOR_PASSES or (waits[i] >= skip_pass and load.busy > MAX_BUSY_FOR_LATE_PASSES)
            ):
                full = False  # auto, overloaded: the streaming result it is
                skipped += 1
            cost = req.audio.size / req.sample_rate * self._final_cost_per_s if full else 0.0
            if full and passes and (not self._final_cost_per_s or planned + cost > budget):
                outcomes[i] = DEFERRED
                continue
            finals += 1
            planned += cost
            try:
                outcomes[i] = req.stream.end_utterance()
                req.produced_by = ("unrescored" if shed_rescoring else "full") if full else "stream"
                if full:
                    passes.append(i)
            except Exception:
                log.exception("ending an utterance failed")
                outcomes[i] = InternalError("recognition failed")
        if passes:
            t_pass = time.perf_counter()
            pass_audio = sum(requests[i].audio.size / requests[i].sample_rate for i in passes)
            for i, outcome in zip(passes, self._full_passes([requests[i] for i in passes], shed_rescoring)):
                outcomes[i] = outcome
            audio_s += pass_audio
            self._final_cost_per_s = (time.perf_counter() - t_pass) / max(pass_audio, 1e-3)
        t3 = time.perf_counter()
        stats = BatchStats(len(requests), len(stepping), finals, t3 - t0, t2 - t1, audio_s, 0.0, skipped,
                           len(passes) if shed_rescoring else 0)
        return outcomes, stats

    def _full_passes(self, requests: list[FinalRequest], shed_rescoring: bool = False) -> list[Any]:
        """Full-context results (or the exception) for each request's utterance audio;
        shed_rescoring: without the recognizer's attention rescoring."""
        many = getattr(self.rec, "transcribe_many", None)
        rates = {r.sample_rate for r in requests}
        hot = [getattr(r, "hotwords", None) for r in requests]
        extra: dict[str, Any] = {"hotwords": hot} if any(h is not None for h in hot) else {}
        if shed_rescoring:
            extra["rescoring"] = False
        if many is not None and len(requests) > 1 and len(rates) == 1:
            try:
                return list(many([r.audio for r in requests], rates.pop(), **extra))
            except Exception:
                log.exception("batched final passes failed; running them one by one")
        out: list[Any] = []
        for r in requests:
            try:
                one = {k: v for k, v in (("hotwords", getattr(r, "hotwords", None)),
                                         ("rescoring", False if shed_rescoring else None)) if v is not None}
                out.append(self.rec.transcribe(r.audio, r.sample_rate, **one))
            except Exception:
                log.exception("final pass failed")
                out.append(InternalError("recognition failed"))
        return out
