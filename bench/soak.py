"""Soak: N real-time streams for M minutes against a fresh server, half of them on one
long connection each, half reconnecting for every file; samples the server's memory,
sessions, final passes and errors as it goes.

    python bench/soak.py --streams 8 --minutes 60 [--model DIR] [--out soak.jsonl]

Every `--sample-s` seconds one JSON line (stdout and `--out`): elapsed minutes, the
server's RSS (MB, /proc), open sessions (/healthz), finals by pass (`tingxie_finals_total`
by `pass`: full-context or streaming), final passes skipped, the engine's real-time
factor, error messages and abnormal closes seen by the clients. At the end a summary:
RSS at start, at half time and at the end, the growth over the second half (from sample to
sample, and between the 5-minute means around half time and at the end), its least-squares
slope (MB per minute) and the trend over the half that it gives (the growth figure: single
samples move by tens of MB), and the finals' passes.

Audio: the real Mandarin recordings of ../shared/data/real_zh/eval (16 kHz WAV), sent in
100 ms frames on a real-time schedule, each stream starting at a different file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.serverprobe import free_port, scrape  # noqa: E402

AUDIO_DIR = ROOT.parent / "shared" / "data" / "real_zh" / "eval" / "audio"
FRAME_S = 0.1



def load_audio(limit: int) -> list[bytes]:
    files = sorted(AUDIO_DIR.glob("*.wav"))[:limit]
    if not files:
        sys.exit(f"no WAV files in {AUDIO_DIR}")
    out = []
    for f in files:
        with wave.open(str(f)) as w:
            if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
                continue
            out.append(w.readframes(w.getnframes()))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")



@dataclass
class Counts:
    finals: int = 0
    done: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error codes and abnormal close codes
    connections: int = 0


async def send_realtime(ws, pcm: bytes, t_next: float) -> float:
    step = int(16000 * FRAME_S) * 2
    for i in range(0, len(pcm), step):
        await asyncio.sleep(max(0.0, t_next - time.monotonic()))
        await ws.send(pcm[i : i + step])
        t_next += FRAME_S
    return t_next


async def receive(ws, counts: Counts) -> None:
    try:
        async for msg in ws:
            m = json.loads(msg)
            if m["type"] == "final":
                counts.finals += 1
            elif m["type"] == "done":
                counts.done += 1
            elif m["type"] == "error":
                counts.errors[m["code"]] = counts.errors.get(m["code"], 0) + 1
    except ConnectionClosed:
        pass
    code = ws.close_code
    if code not in (1000, 1001, None):
        counts.errors[f"close_{code}"] = counts.errors.get(f"close_{code}", 0) + 1


async def client(port: int, audio: list[bytes], first: int, reconnect: bool, until: float, counts: Counts) -> None:
    url = f"ws://127.0.0.1:{port}/v1/stream"
    silence = bytes(int(16000 * 1.0) * 2)  # a pause between files on a long connection
    i = first
    while time.monotonic() < until:
        counts.connections += 1
        try:
            async with connect(url, max_size=None, open_timeout=30) as ws:
                rx = asyncio.create_task(receive(ws, counts))
                await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
                t_next = time.monotonic()
                while time.monotonic() < until:
                    t_next = await send_realtime(ws, audio[i % len(audio)] + silence, t_next)
                    i += 1
                    if reconnect:
                        break
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.wait_for(rx, 120)
        except Exception as e:  # noqa: BLE001 (counted, the soak goes on)
            key = f"client_{type(e).__name__}"
            counts.errors[key] = counts.errors.get(key, 0) + 1
            await asyncio.sleep(1.0)


def fit_slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return float("nan")
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])


async def soak(args: argparse.Namespace) -> dict:
    audio = load_audio(args.files)
    port = free_port()
    cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--max-sessions", str(args.streams + 8), *args.server_args]
    if args.model:
        cmd += ["--model", str(args.model)]
    log = open(args.server_log, "w") if args.server_log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
    samples: list[dict] = []
    out = open(args.out, "w") if args.out else None
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    sys.exit("the server did not start")
                await asyncio.sleep(0.5)
        t0 = time.monotonic()
        until = t0 + args.minutes * 60
        counts = Counts()
        tasks = [asyncio.create_task(client(port, audio, k * 7, k % 2 == 1, until, counts)) for k in range(args.streams)]
        while time.monotonic() < until + 5:
            await asyncio.sleep(min(args.sample_s, max(until + 5 - time.monotonic(), 0.1)))
            m = scrape(port)
            health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read())
            sample = {
                "minute": round((time.monotonic() - t0) / 60, 2),
                "rss_mb": round(rss_mb(proc.pid), 1),
                "sessions": health["sessions"],
                "finals_full": int(m.get('tingxie_finals_total{pass="full"}', 0)),
                "finals_unrescored": int(m.get('tingxie_finals_total{pass="unrescored"}', 0)),
                "finals_stream": int(m.get('tingxie_finals_total{pass="stream"}', 0)),
                "passes_skipped": int(m.get("tingxie_final_passes_skipped_total", 0)),
                "rtf": round(m.get("tingxie_real_time_factor", float("nan")), 3),
                "client_finals": counts.finals,
                "client_done": counts.done,
                "connections": counts.connections,
                "errors": dict(counts.errors),
            }
            samples.append(sample)
            line = json.dumps(sample)
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if out:
            out.close()
    half = args.minutes / 2
    second = [(s["minute"], s["rss_mb"]) for s in samples if s["minute"] >= half]
    at_half = second[0][1] if second else float("nan")
    last = samples[-1] if samples else {}
    # RSS moves by tens of MB between samples (passes of every size; heap trims), so the
    # growth is also given between 5-minute means: at half time and at the end.
    window = min(5.0, half / 2)
    def mean_rss(lo: float, hi: float) -> float:
        v = [s["rss_mb"] for s in samples if lo <= s["minute"] <= hi]
        return sum(v) / len(v) if v else float("nan")
    windowed = mean_rss(args.minutes - window, args.minutes) - mean_rss(half - window / 2, half + window / 2)
    return {
        "streams": args.streams,
        "minutes": args.minutes,
        "rss_start_mb": samples[0]["rss_mb"] if samples else None,
        "rss_half_mb": at_half,
        "rss_end_mb": last.get("rss_mb"),
        "rss_second_half_growth_mb": round(last.get("rss_mb", float("nan")) - at_half, 1),
        "rss_second_half_growth_5min_means_mb": round(windowed, 1),
        "rss_second_half_max_minus_min_mb": round(max(r for _, r in second) - min(r for _, r in second), 1) if second else None,
        "rss_second_half_slope_mb_per_min": round(fit_slope(second), 3),
        # the growth figure: single samples move by tens of MB, the trend over all of them does not
        "rss_second_half_trend_mb": round(fit_slope(second) * (args.minutes - half), 1),
        "finals_full": last.get("finals_full"),
        "finals_unrescored": last.get("finals_unrescored"),
        "finals_stream": last.get("finals_stream"),
        "passes_skipped": last.get("passes_skipped"),
        "client_finals": last.get("client_finals"),
        "connections": last.get("connections"),
        "errors": last.get("errors"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--files", type=int, default=40, help="recordings used (in name order)")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON lines of the samples")
    ap.add_argument("--server-log", type=Path, default=None)
    ap.add_argument("server_args", nargs="*", help="extra flags for the server (after --)")
    args = ap.parse_args()
    summary = asyncio.run(soak(args))
    print(json.dumps({"summary": summary}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
