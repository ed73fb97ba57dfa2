"""Training the CTC head of a Whisper-CTC model on cached encoder outputs.

The encoder is frozen, so each utterance's encoder output is computed once
(`cache_encoder_outputs`, resumable) and every epoch of head training reads the cache:
an epoch costs the head's arithmetic only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import read_audio
from ..features import resample
from ..metrics import ErrorCounts
from ..tokens import Tokenizer
from ..whisper.ctc import CTCHead, HeadConfig
from ..whisper.features import SAMPLE_RATE, log_mel
from ..whisper.model import WhisperEncoder
from .data import Utterance

log = logging.getLogger(__name__)

__all__ = ["EncoderCache", "cache_encoder_outputs", "HeadTrainConfig", "train_head", "greedy_cer"]


class EncoderCache:
    """Encoder outputs of one manifest: `frames.f16` (all frames, float16, concatenated)
    and `index.jsonl` (id, text, offset, frames per utterance)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.index = [json.loads(line) for line in (self.path / "index.jsonl").read_text().splitlines() if line]
        n = sum(u["frames"] for u in self.index)
        d = json.loads((self.path / "meta.json").read_text())["d_model"]
        self.frames = np.memmap(self.path / "frames.f16", np.float16, "r", shape=(n, d)) if n else np.zeros((0, d), np.float16)

    def __len__(self) -> int:
        return len(self.index)

    def get(self, i: int) -> torch.Tensor:
        u = self.index[i]
        return torch.from_numpy(np.asarray(self.frames[u["offset"] : u["offset"] + u["frames"]], np.float32))


def _load_16k(path: Path) -> np.ndarray:
    audio, rate = read_audio(path)
    x = audio.mean(axis=0) if audio.shape[0] > 1 else audio[0]
    return resample(torch.from_numpy(x), rate, SAMPLE_RATE).numpy() if rate != SAMPLE_RATE else x


@torch.inference_mode()
def cache_encoder_outputs(
    utts: Sequence[Utterance], out: str | Path, encoder: WhisperEncoder, max_seconds: float = 29.9,
    bf16: bool = False, transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
    layers: int | None = None,
) -> EncoderCache:
    """Encode every utterance (full context, one at a time) into `out`; resumes after the
    last utterance already written. Utterances over `max_seconds` are skipped. `bf16`
    encodes under bf16 autocast (twice as fast on CPUs with native bf16). `transform(k,
    samples)` changes the k-th utterance's 16 kHz samples first (e.g. a telephone channel).
    `layers`: cache the output of the first N layers instead (for a head with its own
    copy of the layers above them)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = next(encoder.parameters()).device
    meta = {"d_model": encoder.dims.d_model, "layers": layers or len(encoder.layers)}
    if (out / "meta.json").exists() and json.loads((out / "meta.json").read_text()).get("layers", meta["layers"]) != meta["layers"]:
        raise ValueError(f"{out} caches the output of another number of encoder layers")
    (out / "meta.json").write_text(json.dumps(meta))
    index_path, frames_path = out / "index.jsonl", out / "frames.f16"
    done = [json.loads(line) for line in index_path.read_text().splitlines() if line] if index_path.exists() else []
    offset = sum(u["frames"] for u in done)
    with open(frames_path, "ab") as ff:
        ff.truncate(offset * encoder.dims.d_model * 2)  # drop frames of an interrupted write
    seen = {u["id"] for u in done}
    t0, n0 = time.time(), len(done)
    with open(frames_path, "ab") as ff, open(index_path, "a") as fi:
        for k, u in enumerate(utts):
            if u.id in seen or u.duration > max_seconds:
                continue
            samples = _load_16k(u.audio)
            mel = log_mel(transform(k, samples) if transform is not None else samples).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                enc = encoder(mel[None], layers=layers)[0].to(torch.float16).cpu().numpy()
            ff.write(enc.tobytes())
            fi.write(json.dumps({"id": u.id, "text": u.text, "offset": offset, "frames": enc.shape[0]}, ensure_ascii=False) + "\n")
            offset += enc.shape[0]
            if (k + 1) % 200 == 0:
                ff.flush()
                fi.flush()
                log.info("cached %d/%d utterances (%.1f/s)", k + 1, len(utts), (k + 1 - n0) / (time.time() - t0))
    return EncoderCache(out)


@dataclass
class HeadTrainConfig:
    layers: int = 2
    dropout: float = 0.1
    lr: float = 1e-3
    warmup: int = 300
    epochs: int = 20
    max_frames: int = 20000  # encoder frames per batch (50 per second: 400 s)
    weight_decay: float = 0.01
    seed: int = 0
    bf16: bool = False
    time_mask: float = 0.05  # fraction of frames zeroed in up to 2 spans per utterance (SpecAugment on the cache)
    encoder_lr: float = 0.0  # learning rate of the head's copy of encoder layers (0: lr)


def _batches(lengths: Sequence[int], max_frames: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    out, cur, longest = [], [], 0
    for i in order:
        if cur and max(longest, lengths[i]) * (len(cur) + 1) > max_frames:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, lengths[i])
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def _time_mask(x: torch.Tensor, frac: float, rng: random.Random) -> torch.Tensor:
    t = x.size(0)
    for _ in range(2):
        w = int(rng.random() * frac * t)
        if w:
            s = rng.randrange(0, max(1, t - w))
            x[s : s + w] = 0
    return x


def greedy_cer(head: CTCHead, cache: EncoderCache, tokenizer: Tokenizer, limit: int | None = None,
               device: str | torch.device = "cpu") -> float:
    head.eval()
    counts = ErrorCounts()
    with torch.inference_mode():
        for i in range(len(cache) if limit is None else min(limit, len(cache))):
            logp = head(cache.get(i)[None].to(device))[0].cpu()
            ids = torch.unique_consecutive(logp.argmax(-1)).tolist()
            counts.add(cache.index[i]["text"], tokenizer.decode([t for t in ids if t != 0]))
    return counts.cer


def train_head(
    caches: Sequence[tuple[EncoderCache, int]],
    dev: Sequence[EncoderCache],
    tokenizer: Tokenizer,
    cfg: HeadTrainConfig,
    out_dir: str | Path,
    head: CTCHead | None = None,
    device: str | torch.device = "cpu",
) -> CTCHead:
    """Train a CTC head on cached encoder outputs; `caches` pairs each cache with how many
    times an epoch lists it (to weight real speech). Checkpoints after every epoch into
    `out_dir` (resumes from the last one); returns the head of the best dev CER."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = torch.device(device)
    head = (head or CTCHead(HeadConfig(len(tokenizer), cfg.layers, dropout=cfg.dropout))).to(device)
    items = [(c, i, c.index[i]["frames"]) for c, rep in caches for _ in range(rep) for i in range(len(c))]
    targets = {id(c): [tokenizer.encode(u["text"]) for u in c.index] for c, _ in caches}
    tuned = {id(p) for m in (head.encoder_layers, head.encoder_norm) if m is not None for p in m.parameters()}
    groups = [{"params": [p for p in head.parameters() if id(p) not in tuned], "scale": 1.0},
              {"params": [p for p in head.parameters() if id(p) in tuned], "scale": (cfg.encoder_lr or cfg.lr) / cfg.lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(_batches([n for _, _, n in items], cfg.max_frames, random.Random(0)))
    total = steps_per_epoch * cfg.epochs

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))))

    start, step, best = 0, 0, (float("inf"), None)
    last = out_dir / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False, map_location=device)
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["opt"])
        start, step, best = ck["epoch"] + 1, ck["step"], ck["best"]
        log.info("resumed after epoch %d", ck["epoch"])
    # bf16 where the CPU computes it natively: about twice as fast, loss in float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
    for epoch in range(start, cfg.epochs):
        rng = random.Random(cfg.seed * 1000 + epoch)
        head.train()
        t0, loss_sum, n_sum = time.time(), 0.0, 0
        for batch in _batches([n for _, _, n in items], cfg.max_frames, rng):
            xs = [_time_mask(items[j][0].get(items[j][1]), cfg.time_mask, rng) for j in batch]
            ys = [targets[id(items[j][0])][items[j][1]] for j in batch]
            lens = torch.tensor([x.size(0) for x in xs], device=device)
            x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True).to(device)
            with autocast:
                logp = head(x, lens)
            y = torch.tensor([t for s in ys for t in s])
            ylens = torch.tensor([len(s) for s in ys])
            out_lens = head.output_lengths(lens)
            loss = F.ctc_loss(logp.transpose(0, 1), y, out_lens, ylens, blank=0, reduction="sum", zero_infinity=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(step) * g["scale"]
            opt.zero_grad()
            (loss / len(batch)).backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            opt.step()
            step += 1
            loss_sum, n_sum = loss_sum + float(loss.detach()), n_sum + int(ylens.sum())
            if step % 50 == 0:
                log.info("step %d: loss/unit %.3f, lr %.2e, %.0f s", step, loss_sum / max(1, n_sum), lr_at(step),
                         time.time() - t0)
        cers = [greedy_cer(head, d, tokenizer, device=device) for d in dev]
        score = sum(cers) / max(1, len(cers))
        log.info("epoch %d: loss/unit %.3f, dev CER %s, %.0f s", epoch, loss_sum / max(1, n_sum),
                 " ".join(f"{c:.2%}" for c in cers), time.time() - t0)
        if score < best[0]:
            best = (score, epoch)
            torch.save(head.state_dict(), out_dir / "best.pt")
        torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "step": step, "best": best}, last)
    head.load_state_dict(torch.load(out_dir / "best.pt", map_location=device))
    return head.cpu()
