"""Streaming server under load: N concurrent clients sending audio at real-time pace.

Starts `python -m server` on 127.0.0.1 for each run (a fresh process, so its metrics
and CPU time are the run's own), connects N websocket clients that each send 100 ms
frames on a real-time schedule, and reports per run:

- RTF: the engine's busy time / audio received (`tingxie_batch_seconds_sum` over
  `tingxie_audio_seconds_total`); CPU RTF: the server process's CPU time / audio
  (event loop included). Below 1 the server keeps up.
- partial latency p50/p95: from the moment the client sent the frame holding the audio a
  partial covers (its `end`) to the partial's arrival;
- final latency p50/p95: from the moment the client sent the end of the speech (the last
  loud 20 ms frame before a pause of 300 ms or more, found by frame energy in the audio
  sent) to the arrival of the final that covers it. This includes the endpoint's wait for
  trailing silence (800 ms by default). Finals without the end of a sentence (cut by the
  20 s limit, or a random model's text in a pause) are not timed. With `--pattern
  utterances` each client opens a connection per sentence and sends `end` right after
  the speech (push-to-talk, or a platform with its own VAD): final latency is then from
  sending `end` to the final, the delay the server itself adds;
- the mean batch size, and the same run with batching off (`--max-batch 1`).

    python bench/stream_load.py --model DIR [--streams 10 25 50] [--seconds 30] [--wav a.wav ...]
    python bench/stream_load.py --model DIR --pattern utterances   # finals after the client's end
    python bench/stream_load.py --make-model DIR   # random weights, the default model's architecture

Audio: the WAV files given, else Mandarin sentences synthesised with espeak-ng (if
installed), else harmonic bursts; each client starts at a different offset.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from asr.audio import read_audio
from asr.checkpoint import load_model_dir, save_model_dir
from asr.features import resample, to_float32

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import random_model, speech_like  # noqa: E402 (tests/ is not installed: found through ROOT)
from bench.serverprobe import free_port, scrape  # noqa: E402

SENTENCES = [
    "jin1 tian1 tian1 qi4 hen3 hao3 wo3 men5 qu4 gong1 yuan2 san4 bu4 ba5",
    "qing3 wen4 ni3 de5 zhang4 hu4 yu2 e2 hai2 you3 duo1 shao3",
    "zhe4 ge4 xiang4 mu4 xu1 yao4 zai4 xia4 ge4 xing1 qi1 wan2 cheng2",
    "wo3 xiang3 ding4 yi1 zhang1 ming2 tian1 qu4 shang4 hai3 de5 huo3 che1 piao4",
    "ta1 shuo1 ta1 ming2 tian1 bu4 neng2 lai2 kai1 hui4 le5",
    "qing3 ba3 chuang1 hu4 guan1 shang4 wai4 mian4 you3 dian3 leng3",
    "zhe4 jia1 can1 ting1 de5 cai4 hen3 hao3 chi1 jia4 ge2 ye3 bu4 gui4",
    "ru2 guo3 you3 wen4 ti2 qing3 bo1 da3 ke4 fu2 dian4 hua4",
]
FRAME_S = 0.1



def make_model(out: Path) -> None:
    """Random weights with the shipped model's architecture and unit table (models/default):
    the same compute per step as the trained model, and text in every chunk, so partials
    and finals flow whatever the audio (load tests need no accuracy)."""
    shipped = load_model_dir(ROOT / "models" / "default")
    cfg = shipped.model.cfg
    model = random_model(0, vocab_size=cfg.vocab_size, output_size=cfg.output_size, attention_heads=cfg.attention_heads,
                         linear_units=cfg.linear_units, num_blocks=cfg.num_blocks, cnn_module_kernel=cfg.cnn_module_kernel,
                         input_layer=cfg.input_layer, causal=cfg.causal, cnn_module_norm=cfg.cnn_module_norm)
    out.mkdir(parents=True, exist_ok=True)
    tok = out / "tokenizer"
    tok.mkdir(exist_ok=True)
    for name in ("units.txt", "bpe.model"):
        if (ROOT / "models" / "default" / name).exists():
            shutil.copy(ROOT / "models" / "default" / name, tok / name)
    save_model_dir(out, model, tok, "random-default-architecture", chunk=shipped.chunk)
    shutil.rmtree(tok)
    print(f"wrote {out} ({model.num_parameters() / 1e6:.2f} M parameters, random weights)")


def speech_ends(audio: np.ndarray, rate: int = 16000, threshold_db: float = -40.0, pause_s: float = 0.3) -> np.ndarray:
    """Times (s) where speech stops for at least `pause_s` (20 ms frames against a level)."""
    frame = rate // 50
    n = audio.size // frame
    x = audio[: n * frame].astype(np.float64).reshape(n, frame) / 32768
    loud = np.sqrt((x**2).mean(axis=1)) > 10 ** (threshold_db / 20)
    need = int(round(pause_s / 0.02))
    ends = [i for i in range(n - need) if loud[i] and not loud[i + 1 : i + 1 + need].any()]
    return (np.array(ends, dtype=np.float64) + 1) * 0.02


def load_audio(wavs: list[Path], seconds: float) -> tuple[np.ndarray, list[np.ndarray], str]:
    """16 kHz int16 audio, at least `seconds` long (files repeated, a pause after each),
    the separate utterances (int16) and their source."""
    def as16k(path: Path) -> np.ndarray:
        audio, rate = read_audio(path)
        x = to_float32(audio.mean(axis=0))
        if rate != 16000:
            x = resample(x, rate, 16000)
        return x.numpy()

    if wavs:
        parts, source = [as16k(w) for w in wavs], f"{len(wavs)} WAV files"
    elif shutil.which("espeak-ng"):
        tmp = Path(tempfile.mkdtemp(prefix="tingxie-bench-"))
        parts = []
        for i, text in enumerate(SENTENCES):
            wav = tmp / f"s{i}.wav"
            subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-s", "160", "-w", str(wav), text], check=True)
            parts.append(as16k(wav))
        shutil.rmtree(tmp)
        source = f"{len(SENTENCES)} espeak-ng Mandarin sentences"
    else:
        parts, source = [speech_like(4.0, seed=i) for i in range(8)], "synthetic harmonic bursts"

    def pcm(x: np.ndarray) -> np.ndarray:
        return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)

    pause = np.zeros(int(1.5 * 16000), np.float32)  # a pause after each sentence
    seq = np.concatenate([np.concatenate([p, pause]) for p in parts])
    reps = int(np.ceil(seconds * 16000 / seq.size)) + 1
    return pcm(np.tile(seq, reps)), [pcm(p) for p in parts], source


# ---------------------------------------------------------------- one client


@dataclass
class ClientResult:
    partial_latency: list[float] = field(default_factory=list)
    final_latency: list[float] = field(default_factory=list)
    finals: int = 0
    error: str = ""
    done: bool = False


def frame_sent_at(sent_at: list[float], t: float) -> float | None:
    """When the frame holding the audio up to time t (s) was sent, if it was."""
    k = max(int(np.ceil(t / FRAME_S - 1e-6)) - 1, 0)
    return sent_at[k] if k < len(sent_at) else None


async def send_realtime(ws, audio: np.ndarray, sent_at: list[float]) -> None:
    """Send `audio` in FRAME_S frames, each once it would have been recorded; note the
    wall time each frame left in `sent_at`."""
    frame = int(FRAME_S * 16000)
    t0 = time.perf_counter()
    for k in range(-(-audio.size // frame)):
        delay = t0 + (k + 1) * FRAME_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at.append(time.perf_counter())
        await ws.send(audio[k * frame : (k + 1) * frame].tobytes())


async def client(url: str, audio: np.ndarray, start_delay: float, drain_timeout: float) -> ClientResult:
    ends = speech_ends(audio)

    res = ClientResult()
    sent_at: list[float] = []  # wall time each frame was sent
    await asyncio.sleep(start_delay)
    try:
        async with connect(url, max_size=2**22, open_timeout=30) as ws:

            async def receive() -> None:
                async for raw in ws:
                    now = time.perf_counter()
                    m = json.loads(raw)
                    if m["type"] == "partial" and (t := frame_sent_at(sent_at, m["end"])) is not None:
                        res.partial_latency.append(now - t)
                    elif m["type"] == "final":
                        res.finals += 1
                        inside = ends[(ends >= m["start"]) & (ends <= m["end"] + FRAME_S)]
                        if inside.size and (t := frame_sent_at(sent_at, float(inside[-1]))) is not None:
                            res.final_latency.append(now - t)
                    elif m["type"] == "error":
                        res.error = m["code"]
                    elif m["type"] == "done":
                        res.done = True

            reader = asyncio.create_task(receive())
            await send_realtime(ws, audio, sent_at)
            await ws.send('{"type": "end"}')
            try:
                await asyncio.wait_for(reader, drain_timeout)
            except TimeoutError:
                res.error = res.error or "no done within the drain timeout"
    except ConnectionClosed as e:
        res.error = res.error or f"closed {e.rcvd.code if e.rcvd else '?'}"
    except OSError as e:
        res.error = f"connect failed: {e}"
    return res


async def one_utterance(url: str, audio: np.ndarray, res: ClientResult, drain_timeout: float) -> bool:
    """Stream one utterance at real-time pace, send `end`, wait for `done`; record the
    latencies in `res`. True when `done` arrived."""
    sent_at: list[float] = []
    end_at: float | None = None
    last_final: float | None = None
    async with connect(url, max_size=2**22, open_timeout=30) as ws:

        async def receive() -> bool:
            nonlocal last_final
            async for raw in ws:
                now = time.perf_counter()
                m = json.loads(raw)
                if m["type"] == "partial" and (t := frame_sent_at(sent_at, m["end"])) is not None:
                    res.partial_latency.append(now - t)
                elif m["type"] == "final":
                    res.finals += 1
                    if end_at is not None:
                        last_final = now
                elif m["type"] == "error":
                    res.error = m["code"]
                elif m["type"] == "done":
                    return True
            return False

        reader = asyncio.create_task(receive())
        await send_realtime(ws, audio, sent_at)
        end_at = time.perf_counter()
        await ws.send('{"type": "end"}')
        try:
            ok = await asyncio.wait_for(reader, drain_timeout)
        except TimeoutError:
            ok, res.error = False, res.error or "no done within the drain timeout"
    if last_final is not None:
        res.final_latency.append(last_final - end_at)
    return ok


async def utterance_client(url: str, utterances: list[np.ndarray], seconds: float, start_delay: float,
                           first: int, drain_timeout: float) -> ClientResult:
    """Push-to-talk pattern: one connection per utterance, `end` right after the speech.

    Final latency here is from sending `end` to the final's arrival: what the server
    adds once the client says the speech is over (no endpoint silence to wait for)."""
    res = ClientResult(done=True)
    await asyncio.sleep(start_delay)
    t_stop = time.perf_counter() + seconds
    k = first
    while time.perf_counter() < t_stop and not res.error:
        try:
            ok = await one_utterance(url, utterances[k % len(utterances)], res, drain_timeout)
            res.done = res.done and ok
        except ConnectionClosed as e:
            res.error, res.done = res.error or f"closed {e.rcvd.code if e.rcvd else '?'}", False
        except OSError as e:
            res.error, res.done = f"connect failed: {e}", False
        k += 1
    return res


# ---------------------------------------------------------------- one run



def cpu_seconds(pid: int) -> float:
    fields_ = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run_clients(port: int, audio: np.ndarray, utterances: list[np.ndarray], pattern: str, streams: int,
                      seconds: float, drain_timeout: float) -> list[ClientResult]:
    rng = np.random.default_rng(streams)
    n = int(seconds * 16000)
    jobs = []
    url = f"ws://127.0.0.1:{port}/v1/stream"
    for i in range(streams):
        if pattern == "utterances":
            jobs.append(utterance_client(url, utterances, seconds, float(rng.uniform(0, 1.0)), i, drain_timeout))
            continue
        off = int(rng.integers(0, audio.size - n))
        jobs.append(client(url, audio[off : off + n], float(rng.uniform(0, 1.0)), drain_timeout))
    return await asyncio.gather(*jobs)


def run(args: argparse.Namespace, audio: np.ndarray, utterances: list[np.ndarray], streams: int,
        max_batch: int) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "server", "--model", str(args.model), "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms), "--max-sessions", str(streams + 8),
           "--final-pass", args.final_pass, "--overload-s", "3600", "--idle-timeout-s", "3600", "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += shlex.split(args.server_args)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("the server exited") from None
                time.sleep(0.2)
        # The load generator's own full collections (up to 75 ms seen, over the audio and
        # imports) would count as server latency: what exists now is frozen out of them.
        gc.collect()
        gc.freeze()
        before, cpu0, t0 = scrape(port), cpu_seconds(proc.pid), time.perf_counter()
        results = asyncio.run(
            run_clients(port, audio, utterances, args.pattern, streams, args.seconds, args.drain_timeout)
        )
        wall = time.perf_counter() - t0
        after, cpu1 = scrape(port), cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    audio_s = d.get("tingxie_audio_seconds_total", 0.0)
    partial = [x for r in results for x in r.partial_latency]
    final = [x for r in results for x in r.final_latency]
    errors = [r.error for r in results if r.error]
    return {
        "streams": streams,
        "max_batch": max_batch,
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 1),
        "rtf": d.get("tingxie_batch_seconds_sum", 0.0) / max(audio_s, 1e-9),
        "cpu_rtf": (cpu1 - cpu0) / max(audio_s, 1e-9),
        "mean_batch": d.get("tingxie_batch_size_sum", 0.0) / max(d.get("tingxie_batch_size_count", 0.0), 1e-9),
        "partial_p50": pct(partial, 50),
        "partial_p95": pct(partial, 95),
        "final_p50": pct(final, 50),
        "final_p95": pct(final, 95),
        "finals": sum(r.finals for r in results),
        "passes_skipped": int(d.get("tingxie_final_passes_skipped_total", 0.0)),
        "rescoring_shed": int(d.get("tingxie_rescoring_shed_total", 0.0)),
        "done": sum(r.done for r in results),
        "errors": errors,
    }


def row(r: dict) -> str:
    ms = lambda x: "–" if np.isnan(x) else f"{x * 1000:.0f}"  # noqa: E731
    errs = f"{len(r['errors'])} ({', '.join(sorted(set(r['errors'])))[:40]})" if r["errors"] else "0"
    return (f"| {r['streams']} | {r['max_batch']} | {r['rtf']:.3f} | {r['cpu_rtf']:.3f} | {r['mean_batch']:.1f} | "
            f"{ms(r['partial_p50'])} / {ms(r['partial_p95'])} | {ms(r['final_p50'])} / {ms(r['final_p95'])} | "
            f"{r['passes_skipped']}/{r['finals']} | {r['rescoring_shed']} | {r['done']}/{r['streams']} | {errs} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="model directory")
    p.add_argument("--make-model", type=Path, metavar="DIR", help="write a random model of the default size and exit")
    p.add_argument("--streams", type=int, nargs="+", default=[10, 25, 50])
    p.add_argument("--seconds", type=float, default=30.0, help="audio per client")
    p.add_argument("--pattern", choices=["continuous", "utterances"], default="continuous",
                   help="continuous: one long stream per client, utterances ended by the server's endpointing; "
                   "utterances: a connection per sentence, ended by the client's end message")
    p.add_argument("--wav", type=Path, nargs="*", default=[], help="audio to stream (default: synthesised speech)")
    p.add_argument("--max-batch", type=int, default=32, help="batch limit of the batched runs")
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--final-pass", choices=["auto", "full", "stream"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="server model threads (0: the server default, one per core but one)")
    p.add_argument("--no-unbatched", action="store_true", help="skip the --max-batch 1 runs")
    p.add_argument("--server-args", default="", help='more server flags, e.g. "--precision bf16 --history-ms 2560"')
    p.add_argument("--drain-timeout", type=float, default=120.0, help="wait for done after the last frame (s)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.make_model:
        make_model(args.make_model)
        return
    if not args.model:
        p.error("--model is required")
    audio, utterances, source = load_audio(args.wav, args.seconds)
    print(f"audio: {source}; {args.seconds:g} s per client, {FRAME_S * 1000:.0f} ms frames at real-time pace; "
          f"pattern: {args.pattern}; final pass: {args.final_pass}; "
          f"server flags: {args.server_args or '-'}; {os.cpu_count()} CPUs", flush=True)
    header = ("| streams | max batch | RTF | CPU RTF | mean batch | partial p50 / p95 (ms) | final p50 / p95 (ms) "
              "| full passes skipped | rescoring shed | done | errors |\n|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for n in args.streams:
        for mb in [args.max_batch] + ([] if args.no_unbatched else [1]):
            r = run(args, audio, utterances, n, mb)
            results.append(r)
            print(header if len(results) == 1 else "", row(r), sep="\n" if len(results) == 1 else "", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
