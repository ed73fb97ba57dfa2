"""Streaming encoder throughput: time per batched `forward_chunk` step and audio-seconds
per compute-second at several batch sizes (random weights, the shipped model's shape).

    python bench/encoder.py [--batches 1 8 32 128] [--chunk 16] [--history-s 5] [--threads N] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from asr.config import ModelConfig
from asr.model.conformer import CTCModel, chunk_window
from asr.model.state import EncoderState
from asr.recognizer import matmul_weights_in

# The default model's shape (models/default/config.json); vocab ~ 5,000 Han units + pieces.
DEFAULT = dict(vocab_size=5200, output_size=192, attention_heads=4, linear_units=768, num_blocks=10,
               cnn_module_kernel=15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--chunk", type=int, default=16, help="encoder frames per step (16 = 640 ms)")
    p.add_argument("--history-s", type=float, default=5.0, help="attention history each stream holds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--config", type=str, default="", help="JSON ModelConfig overrides")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: CPU autocast (native on AVX512-BF16/AMX CPUs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ModelConfig(**{**DEFAULT, **(json.loads(args.config) if args.config else {})})
    model = CTCModel(cfg).eval()
    if args.precision == "bf16":  # weights stored in bf16 once, as the Recognizer does
        model = matmul_weights_in(model, torch.bfloat16)
    window, _ = chunk_window(cfg, args.chunk)
    frame_s = cfg.subsampling_rate * 0.01
    history = int(args.history_s / frame_s)
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters, d={cfg.output_size}, blocks={cfg.num_blocks}, "
          f"chunk {args.chunk} frames = {args.chunk * frame_s * 1000:.0f} ms, history {history} frames, "
          f"threads {torch.get_num_threads()}")
    print(f"{'batch':>6} {'ms/step':>9} {'ms/stream':>10} {'audio s / compute s':>20}")
    rows = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    print(f"precision {args.precision}")
    with torch.inference_mode(), autocast:
        for b in args.batches:
            # Streams at different offsets: each holds a different amount of history.
            states = []
            for i in range(b):
                h = max(1, history - (i % 8) * args.chunk // 2)
                st = EncoderState.initial(cfg, 1)
                dk2 = 2 * cfg.output_size // cfg.attention_heads
                states.append(EncoderState(
                    att_cache=torch.randn(cfg.num_blocks, 1, cfg.attention_heads, h, dk2),
                    att_len=torch.tensor([h]), cnn_cache=torch.randn_like(st.cnn_cache), offset=torch.tensor([h])))
            xs = torch.randn(b, window, cfg.input_dim)
            lens = torch.full((b,), window)
            times = []
            for r in range(args.repeats + 1):
                t0 = time.perf_counter()
                state = EncoderState.stack(states)
                _, _, new = model.forward_chunk(xs, lens, state, -1)
                new.unstack()
                times.append(time.perf_counter() - t0)
            step = sorted(times[1:])[len(times[1:]) // 2]  # median, first call is warm-up
            rtx = b * args.chunk * frame_s / step
            rows.append({"batch": b, "ms_per_step": step * 1000, "audio_s_per_compute_s": rtx})
            print(f"{b:>6} {step * 1000:>9.1f} {step * 1000 / b:>10.2f} {rtx:>20.1f}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
