"""CTC training loop: dynamic chunks, AdamW with warm-up, bf16 autocast, resumable checkpoints.

One model serves streaming and full context: each batch is trained either with full
context or with a random chunk size (and sometimes limited left context), as in WeNet's
dynamic-chunk training. Checkpoints (model, optimiser, schedule, position in the epoch)
are written every epoch and every `save_every_minutes`, so a run cut short resumes where
it stopped; the exported model averages the last epochs' weights.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..checkpoint import load_model_dir, save_model_dir
from ..config import ChunkConfig, ConfigError, FeatureConfig, ModelConfig, expand_env, from_dict
from ..data.normalize import normalize_text
from ..decoding import GreedyDecoder
from ..metrics import ErrorCounts
from ..model.conformer import CTCModel
from ..recognizer import resolve_device as resolve
from ..tokens import Tokenizer, train_units
from .augment import AugmentConfig, Augmenter, spec_augment
from .data import Batch, UtteranceDataset, collate, duration_batches, read_manifest
from .flat_start import IGNORE, uniform_targets
from .pinyin_aux import PinyinUnits

__all__ = ["TrainConfig", "train", "load_train_config"]


@dataclass(frozen=True)
class TrainConfig:
    exp_dir: str
    train_manifest: str | list[str]
    dev_manifest: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields except vocab_size
    tokenizer_dir: str | None = None  # reuse a unit table; default: build one in exp_dir
    normalize_text: bool = True  # spoken-form transcripts (numbers as Han characters, no punctuation)
    # JSONL(.gz) files whose "text" fields define the unit table (entries with a "split"
    # other than "train" are ignored); default: the training manifests. Lets the unit
    # table cover a corpus plan before all of its audio exists.
    tokenizer_texts: list[str] | None = None
    max_han_units: int = 6000
    bpe_vocab: int = 300
    epochs: int = 10
    batch_seconds: float = 200.0
    lr: float = 1e-3
    # cosine (to min_lr_ratio at the last epoch) | noam (inverse sqrt, open-ended) | cosine_time (to
    # min_lr_ratio when max_minutes run out: for a fixed time budget, e.g. a lent GPU)
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    warmup_steps: int = 1000
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    dynamic_chunk: bool = True
    sortagrad_epochs: int = 0  # epochs whose batches go shortest first instead of shuffled
    full_context_prob: float = 0.5
    max_chunk: int = 25
    limited_left_prob: float = 0.25
    bf16: bool = True
    augment: bool = False
    spec_augment: bool = False
    num_workers: int = 0
    seed: int = 1
    cmvn_utterances: int = 500
    average_last: int = 3
    keep_checkpoints: int = 5
    save_every_minutes: float = 20.0
    max_minutes: float | None = None  # stop (after saving) when this much time has passed
    init_from: str | None = None  # start from these model weights (fine-tuning)
    device: str = "auto"  # auto (cuda when present), cpu, cuda[:N]
    # Weight of an auxiliary CTC loss on toneless pinyin syllables (asr/train/pinyin_aux.py;
    # training only): 0 turns it off.
    aux_pinyin_weight: float = 0.0
    # Flat start (asr/train/flat_start.py): frame cross-entropy on transcripts spread evenly
    # over each utterance's speech frames, for both heads, weighted flat_start_weight at
    # step 0 and fading linearly to nothing at flat_start_steps. 0 steps turns it off.
    flat_start_steps: int = 0
    flat_start_weight: float = 1.0
    name: str = "tingxie"
    export_dtype: str = "float32"  # weights of the exported model directory: float32 | float16 (half the size)
    log_interval: int = 50
    progress: bool = True
    streaming_chunk: int = 16


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Recipe YAML -> TrainConfig. `${VAR}` in strings expands from the environment
    (e.g. `${TINGXIE_CORPUS}`); relative paths stay relative to the working directory."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    data.update(overrides or {})
    cfg = from_dict(TrainConfig, expand_env(data))
    if cfg.schedule not in ("cosine", "noam", "cosine_time"):
        raise ConfigError("schedule must be cosine, noam or cosine_time")
    if cfg.schedule == "cosine_time" and not cfg.max_minutes:
        raise ConfigError("schedule cosine_time needs max_minutes")
    if cfg.export_dtype not in ("float32", "float16"):
        raise ConfigError("export_dtype must be float32 or float16")
    return cfg


def _texts_of(paths: list[str], normalize: bool):
    norm = normalize_text if normalize else (lambda t: t)
    for p in paths:
        opener = gzip.open if p.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    if d.get("split", "train") == "train":
                        yield norm(d["text"])


def _lr_factor(step: int, warmup: int, total: int, min_ratio: float, schedule: str = "cosine",
               time_progress: float = 0.0) -> float:
    """Learning-rate multiplier. `time_progress` (elapsed / budget) drives cosine_time, whose
    warm-up counts the steps of this run (`step` is then the run's own step count)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "noam":
        return max(min_ratio, math.sqrt(warmup / (step + 1)))
    if schedule == "cosine_time":
        progress = min(1.0, time_progress)
    else:
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_device(name: str) -> torch.device:
    """The recognizer's device rule, its refusal reported as a configuration error."""
    try:
        return resolve(name)
    except RuntimeError as e:
        raise ConfigError(f"device {name}: CUDA is not available here ({e})") from e


def _sample_chunk(cfg: TrainConfig, rng: random.Random) -> tuple[int, int]:
    if not cfg.dynamic_chunk or rng.random() < cfg.full_context_prob:
        return -1, -1
    chunk = rng.randint(1, cfg.max_chunk)
    left = rng.randint(1, 8) if rng.random() < cfg.limited_left_prob else -1
    return chunk, left


def compute_cmvn(dataset: UtteranceDataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = list(range(len(dataset)))
    random.Random(seed).shuffle(idx)
    total, sq, frames = 0.0, 0.0, 0
    aug = dataset.wave_aug, dataset.feat_aug
    dataset.wave_aug = dataset.feat_aug = None
    try:
        for i in idx[:n]:
            f = dataset[i][0]
            f = f.double()
            total = total + f.sum(0)
            sq = sq + (f * f).sum(0)
            frames += f.size(0)
    finally:
        dataset.wave_aug, dataset.feat_aug = aug
    mean = total / max(frames, 1)
    var = (sq / max(frames, 1) - mean * mean).clamp(min=1e-20)
    return mean.float(), (1.0 / var.sqrt()).float()


class Trainer:
    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log = log
        self.exp = Path(cfg.exp_dir)
        self.exp.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        manifests = [cfg.train_manifest] if isinstance(cfg.train_manifest, str) else list(cfg.train_manifest)
        self.train_utts = [u for m in manifests for u in read_manifest(m, cfg.normalize_text)]
        self.dev_utts = read_manifest(cfg.dev_manifest, cfg.normalize_text) if cfg.dev_manifest else []
        tok_dir = Path(cfg.tokenizer_dir) if cfg.tokenizer_dir else self.exp / "tokenizer"
        if not (tok_dir / "units.txt").exists():
            texts = _texts_of(cfg.tokenizer_texts, cfg.normalize_text) if cfg.tokenizer_texts else (
                u.text for u in self.train_utts)
            train_units(texts, tok_dir, cfg.max_han_units, cfg.bpe_vocab)
        self.tok_dir = tok_dir
        self.tokenizer = Tokenizer.from_dir(tok_dir)
        self.model_cfg = from_dict(ModelConfig, {**cfg.model, "vocab_size": len(self.tokenizer)})
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = CTCModel(self.model_cfg).to(self.device)
        wave_aug = feat_aug = None
        if cfg.augment:
            aug = Augmenter(AugmentConfig())
            wave_aug = lambda w, rng: aug(w, rng)  # noqa: E731
        if cfg.spec_augment:
            feat_aug = spec_augment
        self.aux_head: torch.nn.Linear | None = None
        aux_encode = None
        if cfg.aux_pinyin_weight > 0:
            pinyin = PinyinUnits.load_or_build(self.exp / "aux_pinyin_units.txt", (u.text for u in self.train_utts))
            self.aux_head = torch.nn.Linear(self.model_cfg.output_size, len(pinyin)).to(self.device)
            aux_encode = pinyin.encode
        self.train_set = UtteranceDataset(self.train_utts, self.tokenizer, FeatureConfig(), wave_aug, feat_aug, cfg.seed,
                                          aux_encode)
        self.batches_per_epoch = len(duration_batches(self.train_utts, cfg.batch_seconds, 0))
        self.total_steps = self.batches_per_epoch * cfg.epochs
        params = list(self.model.parameters()) + (list(self.aux_head.parameters()) if self.aux_head else [])
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        if not self._resume():
            self._init_weights()

    # ---------------------------------------------------------------- state

    def _init_weights(self) -> None:
        if self.cfg.init_from:
            src = load_model_dir(self.cfg.init_from).model
            if src.cfg != self.model_cfg:
                raise ConfigError("init_from model has a different configuration or unit table")
            self.model.load_state_dict(src.state_dict())
            self.log(f"initialised from {self.cfg.init_from}")
            return
        mean, istd = compute_cmvn(self.train_set, self.cfg.cmvn_utterances, self.cfg.seed)
        self.model.encoder.global_cmvn.mean.copy_(mean)
        self.model.encoder.global_cmvn.istd.copy_(istd)

    def _ckpt_path(self, epoch: int, batch: int) -> Path:
        return self.exp / f"ckpt_e{epoch:03d}_b{batch:06d}.pt"

    def save(self, final_of_epoch: bool) -> Path:
        path = self._ckpt_path(self.epoch, self.batch_in_epoch)
        torch.save(
            {
                "model": self.model.state_dict(),
                "optim": self.opt.state_dict(),
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "step": self.step,
                "epoch_done": final_of_epoch,
                "model_config": self.model_cfg.to_dict(),
                **({"aux_head": self.aux_head.state_dict()} if self.aux_head is not None else {}),
            },
            path,
        )
        (self.exp / "last.json").write_text(json.dumps({"checkpoint": path.name}) + "\n")
        # Keep the newest mid-epoch checkpoint only, and the last `keep_checkpoints` epoch ends.
        ckpts = sorted(self.exp.glob("ckpt_e*.pt"))
        ends = [p for p in ckpts if p.name.endswith("_b999999.pt")]
        mids = [p for p in ckpts if p not in ends and p != path]
        for p in mids + ends[: -self.cfg.keep_checkpoints]:
            p.unlink()
        return path

    def _resume(self) -> bool:
        last = self.exp / "last.json"
        if not last.exists():
            return False
        path = self.exp / json.loads(last.read_text())["checkpoint"]
        ck = torch.load(path, map_location=self.device, weights_only=True)
        if ck["model_config"] != self.model_cfg.to_dict():
            raise ConfigError(f"{path}: model configuration differs from the recipe; use a new exp_dir")
        self.model.load_state_dict(ck["model"])
        if self.aux_head is not None and "aux_head" in ck:
            self.aux_head.load_state_dict(ck["aux_head"])
        if (self.aux_head is not None) == ("aux_head" in ck):
            self.opt.load_state_dict(ck["optim"])
        else:  # the auxiliary head was switched on or off: its parameters change the optimiser's
            self.log("auxiliary pinyin head switched on or off: optimiser state starts afresh")
        self.step = ck["step"]
        if ck["epoch_done"]:
            self.epoch, self.batch_in_epoch = ck["epoch"] + 1, 0
        else:
            self.epoch, self.batch_in_epoch = ck["epoch"], ck["batch_in_epoch"]
        self.log(f"resumed from {path.name}: epoch {self.epoch}, batch {self.batch_in_epoch}, step {self.step}")
        return True

    # ---------------------------------------------------------------- loop

    def _write_log(self, record: dict[str, Any]) -> None:
        with open(self.exp / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _stop_on_signal(self) -> None:
        """SIGTERM/SIGINT: finish the current step, save, export, exit cleanly."""
        self._stop_requested = False
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, _frame):
            self._stop_requested = True
            self.log(f"signal {signum}: saving after this step")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def train(self) -> Path:
        cfg = self.cfg
        self._stop_on_signal()
        started = self._run_started = time.monotonic()
        self._run_first_step = self.step
        last_save = started
        rng = random.Random(cfg.seed * 1000 + self.step)
        while self.epoch < cfg.epochs:
            batches = duration_batches(self.train_utts, cfg.batch_seconds, cfg.seed * 7919 + self.epoch,
                                       shuffle=self.epoch >= cfg.sortagrad_epochs)
            self.train_set.epoch = self.epoch
            self.train_set.speech_mask = self.step < cfg.flat_start_steps  # masks only while the flat start lasts
            todo = batches[self.batch_in_epoch :]
            loader = torch.utils.data.DataLoader(
                self.train_set,
                batch_sampler=todo,
                collate_fn=collate,
                num_workers=cfg.num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=False,
                worker_init_fn=_ignore_stop_signals,
            )
            bar = _progress(len(batches), self.batch_in_epoch, f"epoch {self.epoch}", cfg.progress)
            self.model.train()
            loss_sum, n_batches, audio_s, t0 = 0.0, 0, 0.0, time.monotonic()
            for batch in loader:
                feat_lens = batch.feat_lens
                loss, n_frames = self._train_step(batch, rng) if len(feat_lens) else (0.0, 0)
                loss_sum += loss
                n_batches += 1
                audio_s += float(feat_lens.sum()) / 100.0
                self.batch_in_epoch += 1
                self.step += 1
                bar(f"loss {loss:.3f} lr {self.opt.param_groups[0]['lr']:.2e} {audio_s / (time.monotonic() - t0):.0f}x")
                if self.step % cfg.log_interval == 0:
                    self._write_log({"step": self.step, "epoch": self.epoch, "loss": round(loss, 4),
                                     "lr": self.opt.param_groups[0]["lr"], "speed_x": round(audio_s / (time.monotonic() - t0), 1)})
                now = time.monotonic()
                if now - last_save > cfg.save_every_minutes * 60:
                    self.save(False)
                    last_save = now
                out_of_time = cfg.max_minutes is not None and now - started > cfg.max_minutes * 60
                if out_of_time or self._stop_requested:
                    self.save(False)
                    self.log(f"stopping at epoch {self.epoch} batch {self.batch_in_epoch}")
                    return self.export()
            record: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "train_loss": round(loss_sum / max(n_batches, 1), 4)}
            if self.dev_utts:
                record.update(self.evaluate())
            self._write_log(record)
            self.log(json.dumps(record))
            self.batch_in_epoch = 999999  # marks an epoch-end checkpoint name
            self.save(True)
            self.epoch += 1
            self.batch_in_epoch = 0
        return self.export()

    def _flat_start_weight(self) -> float:
        cfg = self.cfg
        if self.step >= cfg.flat_start_steps:
            return 0.0
        return cfg.flat_start_weight * (1.0 - self.step / cfg.flat_start_steps)

    def _train_step(self, batch: Batch, rng: random.Random) -> tuple[float, int]:
        """One update on a collated batch."""
        cfg = self.cfg
        if cfg.schedule == "cosine_time":
            elapsed = time.monotonic() - self._run_started
            factor = _lr_factor(self.step - self._run_first_step, cfg.warmup_steps, 0, cfg.min_lr_ratio, cfg.schedule,
                                elapsed / (cfg.max_minutes * 60))
        else:
            factor = _lr_factor(self.step, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio, cfg.schedule)
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * factor
        chunk, left = _sample_chunk(cfg, rng)
        batch = _to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            enc, logp, lens = self.model.forward_with_encoder(batch.feats, batch.feat_lens, chunk, left)
            aux_logp = None
            if self.aux_head is not None and batch.aux is not None:
                aux_logp = torch.log_softmax(self.aux_head(enc).float(), dim=-1)
        ok = batch.target_lens <= lens  # CTC cannot align more tokens than frames
        if not bool(ok.any()):
            return 0.0, 0
        char_loss = loss = _ctc(logp, lens, batch.targets, batch.target_lens, ok)
        flat = self._flat_start_weight() if batch.speech is not None else 0.0
        if flat > 0:
            loss = loss + flat * _frame_ce(logp, batch.speech, batch.feat_lens, batch.targets, batch.target_lens,
                                           self.model_cfg.input_layer)
        if aux_logp is not None:
            aux = _ctc(aux_logp, lens, batch.aux, batch.aux_lens, ok & (batch.aux_lens <= lens))
            if flat > 0:
                aux = aux + flat * _frame_ce(aux_logp, batch.speech, batch.feat_lens, batch.aux, batch.aux_lens,
                                             self.model_cfg.input_layer)
            w = cfg.aux_pinyin_weight
            loss = (1 - w) * loss + w * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        return float(char_loss.detach()), int(lens.sum())  # logged: the character CTC loss alone

    @torch.inference_mode()
    def evaluate(self, model: CTCModel | None = None) -> dict[str, float]:
        """Dev CER with greedy search, full context and streaming chunks."""
        model = model or self.model
        model.to(self.device).eval()
        ds = UtteranceDataset(self.dev_utts, self.tokenizer, FeatureConfig())
        out = {}
        for name, chunk in (("dev_cer_full", -1), (f"dev_cer_chunk{self.cfg.streaming_chunk}", self.cfg.streaming_chunk)):
            counts = ErrorCounts()
            for idx in duration_batches(self.dev_utts, self.cfg.batch_seconds, 0):
                items = [(i, ds[i]) for i in idx]
                idx = [i for i, it in items if it is not None]
                if not idx:
                    continue
                b = collate([it for _, it in items])
                logp, olens = model(b.feats.to(self.device), b.feat_lens.to(self.device), chunk, -1)
                logp, olens = logp.float().cpu(), olens.cpu()
                for k, i in enumerate(idx):
                    dec = GreedyDecoder()
                    dec.advance(logp[k, : olens[k]])
                    counts.add(self.dev_utts[i].text, self.tokenizer.decode(dec.best().tokens))
            out[name] = round(counts.cer, 4)
        model.train()
        return out

    def _averaged(self, paths: list[Path]) -> CTCModel:
        model = CTCModel(self.model_cfg)
        model.load_state_dict(_average(paths))
        return model

    def export(self) -> Path:
        """Write the model directory from the newest checkpoints.

        Candidates are the newest k checkpoints (k = 1 .. average_last; epoch ends and the
        newest mid-epoch one, in training order) with their weights averaged. With a dev
        set the candidate with the lowest dev CER wins (full context and streaming, mean):
        averaging helps once training has settled and hurts while the model still changes
        fast, and only the dev set can tell which holds. Without one, the last
        `average_last` are averaged."""
        ckpts = sorted(self.exp.glob("ckpt_e*.pt"))  # names sort in training order
        choices = [ckpts[-k:] for k in range(1, min(self.cfg.average_last, len(ckpts)) + 1)]
        chosen: list[Path] = []
        scores: dict[str, dict[str, float]] = {}
        if not choices:
            model = self.model
        elif not self.dev_utts or len(choices) == 1:
            chosen = choices[-1]
            model = self._averaged(chosen)
        else:
            best = math.inf
            for group in choices:
                candidate = self._averaged(group)
                cer = self.evaluate(candidate)
                scores[f"average of {len(group)}"] = cer
                self.log(f"export candidate: average of the last {len(group)} checkpoints: {json.dumps(cer)}")
                if sum(cer.values()) / len(cer) < best:
                    best, chosen, model = sum(cer.values()) / len(cer), group, candidate
        out = self.exp / "model"
        save_model_dir(
            out,
            model.cpu().eval(),
            self.tok_dir,
            self.cfg.name,
            FeatureConfig(),
            ChunkConfig(self.cfg.streaming_chunk, -1),
            {"averaged_checkpoints": [p.name for p in chosen], "export_dev_cer": scores, "train_config": asdict(self.cfg)},
            weights_dtype=getattr(torch, self.cfg.export_dtype),
        )
        self.log(f"exported {out} (averaged {len(chosen)} checkpoints: {', '.join(p.name for p in chosen)})")
        return out


def _ctc(logp: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor, target_lens: torch.Tensor,
         ok: torch.Tensor) -> torch.Tensor:
    """CTC loss summed over the utterances selected by `ok`, divided by their number."""
    return torch.nn.functional.ctc_loss(
        logp[ok].float().transpose(0, 1),
        targets[ok].clamp(min=0),
        lens[ok],
        target_lens[ok],
        blank=0,
        reduction="sum",
        zero_infinity=True,
    ) / max(int(ok.sum()), 1)


def _frame_ce(logp: torch.Tensor, speech: torch.Tensor, feat_lens: torch.Tensor, targets: torch.Tensor,
              target_lens: torch.Tensor, input_layer: str) -> torch.Tensor:
    """Flat-start cross-entropy (asr/train/flat_start.py), summed over each utterance's
    frames and divided by the number of utterances, like `_ctc`."""
    labels = torch.full(logp.shape[:2], IGNORE, dtype=torch.long)
    for k in range(logp.size(0)):
        lab = uniform_targets(speech[k, : feat_lens[k]], targets[k, : target_lens[k]].tolist(), input_layer)
        n = min(lab.numel(), labels.size(1))
        labels[k, :n] = lab[:n]
    ce = torch.nn.functional.nll_loss(logp.float().flatten(0, 1), labels.to(logp.device).flatten(), ignore_index=IGNORE,
                                      reduction="sum")
    return ce / max(logp.size(0), 1)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return Batch(*(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in batch))


def _average(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the checkpoints' model weights (integer buffers: the last's)."""
    total: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for p in paths:
        last = torch.load(p, map_location="cpu", weights_only=True)["model"]
        for k, v in last.items():
            if v.is_floating_point():
                total[k] = total.get(k, 0) + v.double()
    return {k: (total[k] / len(paths)).float() if k in total else v for k, v in last.items()}


def _ignore_stop_signals(_worker_id: int) -> None:
    """Data workers leave SIGTERM/SIGINT to the main process, which saves and stops them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _progress(total: int, start: int, desc: str, enabled: bool) -> Callable[[str], None]:
    if not enabled:
        return lambda _msg: None
    bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, leave=False)

    def update(msg: str) -> None:
        bar.set_postfix_str(msg, refresh=False)
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return update


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) and export; returns the exported model directory."""
    np.random.seed(cfg.seed)
    return Trainer(cfg, log).train()
