"""CER table for a model directory on the synthetic held-out set and the real eval sets.

    python bench/eval_model.py --model models/default \
        [--synth-test /path/to/synth-v1/test.jsonl] [--real ../shared/data/real_zh/eval]

Runs `tingxie eval` for each set and mode and prints a Markdown table (CER, RTF).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def run_eval(model: Path, manifest: Path, streaming: bool, precision: str) -> dict:
    cmd = [sys.executable, "-m", "asr.cli", "eval", "--model", str(model), "--manifest", str(manifest),
           "--precision", precision]
    if streaming:
        cmd += ["--streaming", "--chunk-ms", "640"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--synth-test", type=Path, default=None)
    p.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/real_zh/eval")
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()
    sets = []
    if args.synth_test:
        sets += [("synthetic held-out test", args.synth_test, False), ("synthetic held-out test", args.synth_test, True)]
    if args.real.exists():
        sets += [("real eval (16 kHz)", args.real / "manifest.jsonl", False),
                 ("real eval (16 kHz)", args.real / "manifest.jsonl", True),
                 ("real eval, simulated 8 kHz telephone", args.real / "manifest_8k_simulated.jsonl", False),
                 ("real eval, simulated 8 kHz telephone", args.real / "manifest_8k_simulated.jsonl", True)]
    print("| set | mode | utterances | CER | RTF |")
    print("|---|---|---|---|---|")
    for name, manifest, streaming in sets:
        r = run_eval(args.model, manifest, streaming, args.precision)
        mode = "streaming 640 ms" if streaming else "full context"
        print(f"| {name} | {mode} | {r['utterances']} | {100 * r['cer']:.1f}% | {r['rtf']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
