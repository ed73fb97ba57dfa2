"""Start-up cost: `tingxie transcribe` on one short file with the model's LM (its memory-
mapped binary), without it, and with the LM parsed from its ARPA file; and `tingxie serve`
from launch to `/healthz` answering 200 (model load, LM, warm-up and tracing included).

    python bench/startup.py [--model models/default] [--wav FILE] [--repeats 3]

Each figure is the median wall time of --repeats fresh processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.serverprobe import free_port  # noqa: E402
TINGXIE = [sys.executable, "-m", "tingxie"]


def short_wav(path: Path, seconds: float = 4.0) -> Path:
    """A few seconds of harmonic bursts: start-up is measured, not accuracy."""
    t = np.arange(int(seconds * 16000)) / 16000
    sig = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 1.3 * t) > 0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((0.2 * sig * 32767).astype(np.int16).tobytes())
    return path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t0


def serve_ready(model: str, extra: list[str], timeout: float = 300.0) -> float:
    """Seconds from launching `tingxie serve` to /healthz answering 200."""
    port = free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([*TINGXIE, "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"tingxie serve exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        raise SystemExit("tingxie serve was not ready in time")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/default")
    p.add_argument("--wav", type=Path, default=None, help="short file to transcribe (default: 4 s of synthetic audio)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    arpa = str(Path(args.model) / "lm.arpa.gz")
    with tempfile.TemporaryDirectory() as tmp:
        wav = str(args.wav or short_wav(Path(tmp) / "short.wav"))
        runs = {
            "import torch, torchaudio": [sys.executable, "-c", "import torch, torchaudio"],
            "transcribe, model's LM (lm.bin)": [*TINGXIE, "transcribe", "--model", args.model, wav],
            "transcribe, --lm none": [*TINGXIE, "transcribe", "--model", args.model, "--lm", "none", wav],
            "transcribe, LM parsed from ARPA": [*TINGXIE, "transcribe", "--model", args.model, "--lm", arpa, wav],
        }
        print(f"model {args.model}, file {wav}, median of {args.repeats} processes")
        for name, cmd in runs.items():
            times = [timed(cmd) for _ in range(args.repeats)]
            print(f"  {name:<36} {statistics.median(times):6.2f} s   ({', '.join(f'{t:.2f}' for t in times)})")
        for name, extra in (("serve to /healthz, model's LM", []), ("serve to /healthz, --lm none", ["--lm", "none"])):
            times = [serve_ready(args.model, extra) for _ in range(args.repeats)]
            print(f"  {name:<36} {statistics.median(times):6.2f} s   ({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
