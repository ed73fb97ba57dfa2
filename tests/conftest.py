"""Shared fixtures: small random models, synthesised speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.checkpoint import save_model_dir
from asr.config import ChunkConfig, ModelConfig
from asr.model.conformer import CTCModel
from asr.tokens import write_units
from asr.whisper.convert import load_ct2

SHARED = Path(__file__).resolve().parents[2] / "shared"
HAN = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年"


def random_model(seed: int = 0, **overrides) -> CTCModel:
    """A small Conformer with non-trivial random weights (norms and biases perturbed so
    that a swapped or skipped parameter changes the output)."""
    torch.manual_seed(seed)
    kw = dict(vocab_size=len(HAN) + 3, output_size=32, attention_heads=4, linear_units=64, num_blocks=2,
              cnn_module_kernel=5, dropout_rate=0.0)
    kw.update(overrides)
    model = CTCModel(ModelConfig(**kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.encoder.global_cmvn.mean.normal_(10, 2)
        model.encoder.global_cmvn.istd.uniform_(0.2, 0.5)
        model.ctc.ctc_lo.weight.mul_(3)
    return model.eval()


def units() -> list[str]:
    return ["<blank>", "<unk>"] + list(HAN) + ["<sos/eos>"]


@pytest.fixture(scope="session")
def ct2():
    """Whisper base as CTranslate2 stores it, from the `whisper` extra's wheels."""
    try:
        return load_ct2()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("random_model")
    write_units(units(), d / "units.txt")
    save_model_dir(d, random_model(), d, "random-test", chunk=ChunkConfig(4, -1))
    return d


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Harmonic bursts with pauses: deterministic audio with speech-like fbank dynamics."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    sig = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 1.3 * t) > -0.2).astype(np.float64)
    return (0.2 * sig * env + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")


def espeak(text: str, path: Path, voice: str = "cmn-latn-pinyin", speed: int = 160) -> Path:
    subprocess.run([ESPEAK, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return path
