"""Fuzz every entry point of a real server on 127.0.0.1 with malformed input, and report
per endpoint: cases and messages tried, handled as documented, tracebacks in the
server's log, hangs (no answer in 20 s), and other outcomes.

    python bench/fuzz.py [--messages 10000] [--endpoints native twilio ...] [--model DIR] [--seed 0]

The cases come from tests/fuzzcases.py (the same generators as the bounded run in
`make test`): wrong types, Unicode digits, huge numbers and strings, deep nesting,
NaN/Infinity tokens, unpaired surrogate escapes, invalid UTF-8 text frames, torn binary
frames, odd byte counts, out-of-range floats, bad multipart bodies. The server runs in
this process (its log is watched); by default with a small random model, as parsing does
not depend on the weights (`--model` for a real one). Exit status 1 if any case was not
handled as documented.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from asr.checkpoint import save_model_dir  # noqa: E402
from asr.config import ChunkConfig  # noqa: E402
from asr.recognizer import Recognizer  # noqa: E402
from asr.tokens import write_units  # noqa: E402
from server.app import App  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests import fuzzcases  # noqa: E402
from tests.conftest import random_model, units  # noqa: E402


def random_model_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="tingxie-fuzz-model-"))
    write_units(units(), d / "units.txt")
    save_model_dir(d, random_model(), d, "random-fuzz", chunk=ChunkConfig(4, -1))
    return d


async def main_async(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    model = args.model or random_model_dir()
    rec = Recognizer.from_dir(model, device="cpu")
    settings = Settings(model=model, host="127.0.0.1", port=0, http_port=0, audiosocket_port=0, threads=1,
                        idle_timeout_s=5.0, max_frame_bytes=65536, max_sessions=64, shutdown_timeout_s=5.0)
    app = App(settings, rec)
    await app.start()
    ports = {"ws": app.port, "audiosocket": app.integrations.ports["audiosocket"], "http": app.http_api.port}
    counter = fuzzcases.install_counter()
    rows = []
    failed = False
    try:
        for endpoint in args.endpoints:
            cases, messages = 0, 0
            rng_probe = __import__("random").Random(f"{endpoint}-{args.seed}")
            while messages < args.messages:  # cases until the messages reach the target
                messages += len(fuzzcases.GENERATORS[endpoint](rng_probe)[1])
                cases += 1
            t0 = time.monotonic()

            def progress(t: fuzzcases.Tally, endpoint=endpoint, cases=cases) -> None:
                print(f"  {endpoint}: {t.tried}/{cases} cases", file=sys.stderr, flush=True)

            tally = await fuzzcases.fuzz(ports, endpoint, cases, args.seed, counter, args.concurrency, progress)
            row = {"endpoint": endpoint, "cases": tally.tried, "messages": messages, "documented": tally.documented,
                   "tracebacks": tally.tracebacks, "hangs": tally.hangs, "undocumented": tally.undocumented,
                   "seconds": round(time.monotonic() - t0, 1), "examples": tally.examples}
            rows.append(row)
            failed |= tally.documented != tally.tried
            print(json.dumps(row, ensure_ascii=False), flush=True)
    finally:
        fuzzcases.remove_counter(counter)
        await app.shutdown()
    print("\n| endpoint | cases | messages | handled as documented | tracebacks | hangs | other |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['endpoint']} | {r['cases']} | {r['messages']} | {r['documented']} | {r['tracebacks']} | "
              f"{r['hangs']} | {r['undocumented']} |")
    return 1 if failed else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000, help="malformed messages per endpoint (at least)")
    ap.add_argument("--endpoints", nargs="+", default=list(fuzzcases.ENDPOINTS), choices=fuzzcases.ENDPOINTS)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    logging.getLogger().addHandler(logging.NullHandler())  # the counter sees the records; the console stays quiet
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
