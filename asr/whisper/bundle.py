"""Whisper-CTC model directories (config.json "kind": "whisper-ctc").

  config.json        format marker, kind, Whisper dimensions, head configuration, the
                     streaming first-pass model (a sibling model directory), LM section,
                     SHA-256 of every other file
  model.safetensors  encoder.* (Whisper's, unchanged) and head.* (the CTC head)
  units.txt, bpe.model  the units (as for every tingxie model)
  lm.arpa.gz         unit n-gram LM (optional)
  decoder.safetensors, whisper-tokenizer.json
                     Whisper's decoder (vocabulary pruned) and BPE, rescoring finals
                     (optional; config.json's `rescoring` section, `asr.whisper.rescore`)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import (BPE, CONFIG, FORMAT, FORMAT_VERSION, LM, UNITS, WEIGHTS, ModelDirError, _lm_section,
                          load_state_checked, load_tokenizer, read_config, sha256, verify_files)
from ..config import ConfigError, from_dict
from ..tokens import Tokenizer
from .ctc import HeadConfig, WhisperCTC
from .model import WhisperDims
from .rescore import RescoreConfig, WhisperRescorer, byte_level_tokenizer, load_rescorer_weights

__all__ = ["KIND", "WhisperBundle", "save_whisper_dir", "load_whisper_dir", "is_whisper_dir"]

KIND = "whisper-ctc"


@dataclass
class WhisperBundle:
    model: WhisperCTC
    tokenizer: Tokenizer
    name: str
    path: Path
    first_pass: Path | None  # streaming model directory for partials and endpoints
    extra: dict[str, Any]
    lm: dict[str, Any] | None = None
    rescorer: WhisperRescorer | None = None  # Whisper's decoder rescoring finals


def is_whisper_dir(path: str | Path) -> bool:
    try:
        return json.loads((Path(path) / CONFIG).read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def save_whisper_dir(
    out: str | Path, model: WhisperCTC, tokenizer_dir: str | Path, name: str, first_pass: str | None,
    extra: dict[str, Any] | None = None, weights_dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a Whisper-CTC model directory. Whisper's weights are float16 as published, so
    float16 storage loses nothing for the encoder; the head is stored the same way."""
    out, tokenizer_dir = Path(out), Path(tokenizer_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [UNITS] + ([BPE] if (tokenizer_dir / BPE).exists() else [])
    for f in files:
        if tokenizer_dir.resolve() != out.resolve():
            (out / f).write_bytes((tokenizer_dir / f).read_bytes())
    state = {k: v.detach().cpu().to(weights_dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    files.append(WEIGHTS)
    old = json.loads((out / CONFIG).read_text()) if (out / CONFIG).exists() else {}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "name": name,
        "whisper": asdict(model.dims),
        "head": asdict(model.head.cfg),
        "first_pass": first_pass,
        "files": {f: sha256(out / f) for f in sorted(files)},
        "extra": extra or {},
    }
    if "lm" in old and (out / LM).exists():  # keep an LM added earlier
        config["lm"], config["files"][LM] = old["lm"], sha256(out / LM)
    (out / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return out


def load_whisper_dir(path: str | Path, verify: bool = True) -> WhisperBundle:
    path = Path(path)
    config = read_config(path, model_keys=False)
    if config.get("kind") != KIND:
        raise ModelDirError(f"{path}: not a {KIND} model directory")
    verify_files(path, config, verify)
    try:
        dims = from_dict(WhisperDims, config["whisper"])
        head = from_dict(HeadConfig, config["head"])
    except (KeyError, ConfigError, TypeError) as e:
        raise ModelDirError(f"{path / CONFIG}: {e}") from e
    tokenizer = load_tokenizer(path, head.vocab_size, "the head's")
    model = WhisperCTC(head, dims)
    weights = {k: v.float() for k, v in load_file(str(path / WEIGHTS)).items()}
    load_state_checked(model, weights, str(path / WEIGHTS))
    first = config.get("first_pass")
    first_path = (path / first).resolve() if first else None
    return WhisperBundle(model.eval(), tokenizer, config["name"], path, first_path, config.get("extra", {}),
                         _lm_section(path, config), _rescorer(path, config, dims))


def _rescorer(path: Path, config: dict[str, Any], dims: WhisperDims) -> WhisperRescorer | None:
    section = config.get("rescoring")
    if section is None:
        return None
    try:
        cfg = RescoreConfig(decoder=str(section["decoder"]), tokenizer=str(section["tokenizer"]),
                            ctc_weight=float(section["ctc_weight"]), nbest=int(section["nbest"]),
                            prompt=tuple(int(t) for t in section["prompt"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"{path / CONFIG}: bad rescoring section ({e})") from e
    for f in (cfg.decoder, cfg.tokenizer):
        if f not in config["files"]:
            raise ModelDirError(f"{path}: {CONFIG} has a rescoring section but does not list {f}")
    try:
        decoder, keep = load_rescorer_weights(path / cfg.decoder, dims)
        return WhisperRescorer(decoder, keep, byte_level_tokenizer(path / cfg.tokenizer), cfg)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ModelDirError(f"{path}: cannot load the rescorer ({e})") from e
