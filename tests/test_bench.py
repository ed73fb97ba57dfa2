"""`tingxie bench`: the capacity model, and the command on a small model."""

from __future__ import annotations

import re

from tingxie.bench import LOAD, Capacity
from tingxie.cli import main


def test_capacity_fits_each_thread_within_its_load():
    # 10 ms per stream and step, 1 ms per stream on the loop, 640 ms chunks
    cap = Capacity(0.64, {8: 0.08, 16: 0.16, 32: 0.32}, 0.001, 0.01, shared_core=False)
    n = cap.streams(full_pass=False)
    assert cap.model_time(n) <= LOAD * 0.64 < cap.model_time(n + 1)
    assert n == 44
    # full final passes: each stream adds final_s * chunk_s of model time per period
    full = cap.streams(full_pass=True)
    assert full < n and cap.model_time(full) + full * 0.01 * 0.64 <= LOAD * 0.64
    # one core: model and loop share it
    shared = Capacity(0.64, {8: 0.08, 16: 0.16, 32: 0.32}, 0.001, 0.01, shared_core=True).streams(False)
    assert shared == 40  # 40 * (10 + 1) ms <= 448 ms < 41 * 11 ms
    # the loop thread can be the limit
    assert Capacity(0.64, {8: 0.008}, 0.02, 0.0, shared_core=False).streams(False) == 22


def test_bench_command_prints_the_settings_to_use(random_model_dir, capsys):
    assert main(["bench", "--model", str(random_model_dir), "--device", "cpu", "--max-seconds", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "cores" in out.splitlines()[0]
    steps = {int(m[1]): float(m[2]) / 1000 for m in re.finditer(r"^\s+(\d+)\s+([\d.]+)\s+[\d.]+$", out, re.M)}
    assert 8 in steps
    chosen = re.search(r"^precision chosen: (\w+)$", out, re.M)[1]
    probe = dict(re.findall(r"(fp32|bf16) (\d+) ms", out.split("\n")[2]))
    if probe:  # both were timed: the faster is chosen
        assert chosen == min(probe, key=lambda p: int(probe[p]))
    loop = float(re.search(r"event loop: ([\d.]+) ms", out)[1]) / 1000
    final = float(re.search(r"final pass: ([\d.]+) ms", out)[1]) / 1000
    streams = int(re.search(r"capacity at \d+% load: (\d+) streams", out)[1])
    recommended = re.search(r"^recommended: tingxie serve --max-sessions (\d+) --precision (\w+)$", out, re.M)
    assert int(recommended[1]) == max(1, streams) and recommended[2] == chosen
    # the recommendation is what the printed figures give, up to their rounding (a few
    # percent when a tiny model's per-stream figures print with two decimals)
    chunk_s = float(re.search(r"one step: (\d+) ms", out)[1]) / 1000
    again = Capacity(chunk_s, steps, loop, final, shared_core=False).streams(False)
    assert abs(again - streams) <= max(2, streams // 20)
