"""A long file sent at full speed over the native protocol: every final and `done` must
arrive (the server slows the sender down by backpressure, never cuts it off).

    python bench/fast_sender.py [--minutes 5] [--frame-bytes 6400] [--model DIR]

Starts `python -m server` on 127.0.0.1, concatenates the real recordings of
../shared/data/real_zh/eval (16 kHz) up to `--minutes`, sends them in `--frame-bytes`
frames as fast as the socket takes them, then `end`, and prints one JSON line: seconds
sent, time to send, time to `done`, finals (by pass), the close code and any error.
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
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serverprobe import free_port  # noqa: E402
from bench.soak import load_audio  # noqa: E402


async def run(args: argparse.Namespace) -> dict:
    audio = b""
    for pcm in load_audio(1000):
        audio += pcm
        if len(audio) >= args.minutes * 60 * 32000:
            break
    audio = audio[: int(args.minutes * 60 * 32000)]
    port = free_port()
    cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if args.model:
        cmd += ["--model", str(args.model)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                await asyncio.sleep(0.5)
        finals = {"full": 0, "stream": 0}
        out = {"audio_s": len(audio) / 32000, "frame_bytes": args.frame_bytes}
        async with connect(f"ws://127.0.0.1:{port}/v1/stream", max_size=None, ping_interval=args.client_ping) as ws:
            async def reader() -> None:
                try:
                    async for m in ws:
                        msg = json.loads(m)
                        if msg["type"] == "final":
                            finals[msg.get("pass", "full")] += 1
                        elif msg["type"] == "done":
                            out["done_audio_s"] = msg["audio_seconds"]
                            out["t_done_s"] = round(time.monotonic() - t0, 1)
                        elif msg["type"] == "error":
                            out["error"] = msg
                except ConnectionClosed:
                    pass

            t0 = time.monotonic()
            rx = asyncio.create_task(reader())
            for i in range(0, len(audio), args.frame_bytes):
                await ws.send(audio[i : i + args.frame_bytes])
            await ws.send('{"type": "end"}')
            out["t_sent_s"] = round(time.monotonic() - t0, 1)
            await rx
            out["close"] = ws.close_code
        out["finals"] = finals
        return out
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--frame-bytes", type=int, default=6400)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--client-ping", type=float, default=20.0,
                    help="the client's own keepalive ping interval in s (websockets' default 20 s, timeout 20 s; 0: off)")
    args = ap.parse_args()
    args.client_ping = args.client_ping or None
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
