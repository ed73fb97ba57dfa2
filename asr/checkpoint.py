"""Model directories: write and load, verifying every file before the model is built.

A model directory holds:
  config.json        format marker, ModelConfig, FeatureConfig, streaming defaults,
                     and the SHA-256 of every other file
  model.safetensors  weights (no pickle on load)
  cmvn.json          {"mean": [...], "istd": [...]} global CMVN over fbank dims
  units.txt          unit table, `<blank>` = 0
  bpe.model          sentencepiece model for Latin words (optional)
  decoder.safetensors attention decoder for rescoring (optional; its configuration is
                     the `decoder` section of config.json)
  lm.arpa.gz         n-gram LM over the units (optional; fusion settings in the `lm` section)
  lm.bin             the same LM's tables, memory-mapped at load (built by add_lm)
  README.md          model card (optional, not checksummed)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ChunkConfig, ConfigError, DecoderConfig, FeatureConfig, ModelConfig, from_dict
from .lm import NgramLM
from .model.conformer import CTCModel
from .model.decoder import AttentionDecoder, build_decoder
from .tokens import Tokenizer, TokenizerError, read_units

__all__ = ["ModelDirError", "ModelBundle", "save_model_dir", "load_model_dir", "read_config", "add_lm",
           "default_model_dir", "FORMAT", "FORMAT_VERSION"]

FORMAT, FORMAT_VERSION = "tingxie-model", 1
WEIGHTS, CONFIG, CMVN, UNITS, BPE = "model.safetensors", "config.json", "cmvn.json", "units.txt", "bpe.model"
DECODER = "decoder.safetensors"
LM, LM_BINARY = "lm.arpa.gz", "lm.bin"
_CMVN_KEYS = ("encoder.global_cmvn.mean", "encoder.global_cmvn.istd")


def default_model_dir() -> Path:
    """$TINGXIE_MODEL, else the repository's models/default."""
    env = os.environ.get("TINGXIE_MODEL")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models" / "default"


class ModelDirError(ValueError):
    """The model directory is incomplete, corrupt or inconsistent."""


@dataclass
class ModelBundle:
    model: CTCModel
    tokenizer: Tokenizer
    features: FeatureConfig
    chunk: ChunkConfig
    name: str
    path: Path
    extra: dict[str, Any]
    decoder: AttentionDecoder | None = None  # attention decoder for rescoring, if the model has one
    # The shipped n-gram LM: {"file": ARPA path, "binary": path or None, "source_sha256": the
    # ARPA's checksum, "weight": w, "bonus": b[, "beam": n]}
    lm: dict[str, Any] | None = None

    def streaming_chunk(self, chunk_ms: int = 0, history_ms: int = 0) -> ChunkConfig:
        """Streaming chunk and attention history given in milliseconds (0: the model's
        own), rounded to whole encoder frames and whole chunks."""
        frame_ms = self.model.cfg.subsampling_rate * self.features.frame_shift_ms
        size = max(1, round(chunk_ms / frame_ms)) if chunk_ms else self.chunk.chunk_size
        left = max(1, round(history_ms / (size * frame_ms))) if history_ms else self.chunk.left_chunks
        return ChunkConfig(size, left)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model_dir(
    out: str | Path,
    model: CTCModel,
    tokenizer_dir: str | Path,
    name: str,
    features: FeatureConfig = FeatureConfig(),
    chunk: ChunkConfig = ChunkConfig(),
    extra: dict[str, Any] | None = None,
    decoder: AttentionDecoder | None = None,
    weights_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a complete model directory. The tokenizer files are copied from tokenizer_dir
    (which may be `out` itself); CMVN is taken from the model's buffers. An attention
    decoder, if given, goes to decoder.safetensors with its config in config.json.

    `weights_dtype=torch.float16` stores floating-point weights at half the size (what the
    repository ships, to keep its history small); loading casts them back to float32."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = Path(tokenizer_dir)
    files = [UNITS] + ([BPE] if (tokenizer_dir / BPE).exists() else [])
    for f in files:
        if tokenizer_dir.resolve() != out.resolve():
            (out / f).write_bytes((tokenizer_dir / f).read_bytes())
    if not (tokenizer_dir / BPE).exists() and (out / BPE).exists():
        (out / BPE).unlink()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    mean, istd = (state.pop(k).float() for k in _CMVN_KEYS)
    # BatchNorm's step counter is training bookkeeping, not a weight.
    state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()
             if not k.endswith("num_batches_tracked")}
    save_file(state, str(out / WEIGHTS))
    (out / CMVN).write_text(json.dumps({"mean": mean.tolist(), "istd": istd.tolist()}) + "\n")
    files += [WEIGHTS, CMVN]
    if decoder is not None:
        dstate = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
        save_file(dstate, str(out / DECODER))
        files.append(DECODER)
    elif (out / DECODER).exists():
        (out / DECODER).unlink()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model": model.cfg.to_dict(),
        "features": asdict(features),
        "streaming": asdict(chunk),
        "files": {f: sha256(out / f) for f in sorted(files)},
        "extra": extra or {},
    }
    if decoder is not None:
        config["decoder"] = decoder.cfg.to_dict()
    (out / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return out


def read_config(path: Path, model_keys: bool = True) -> dict[str, Any]:
    """A model directory's config.json, its format checked (files are not verified);
    `model_keys`: also the Conformer-CTC sections (a Whisper-CTC directory has its own,
    checked by asr.whisper.bundle)."""
    cfg_path = path / CONFIG
    if not path.is_dir():
        raise ModelDirError(f"{path}: not a directory")
    if not cfg_path.exists():
        raise ModelDirError(f"{path}: no {CONFIG}; is this a tingxie model directory?")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{cfg_path}: not valid JSON ({e})") from e
    if config.get("format") != FORMAT:
        raise ModelDirError(f"{cfg_path}: format is {config.get('format')!r}, expected {FORMAT!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{cfg_path}: format_version {config.get('format_version')!r} is not supported")
    for key in ("name", "files") + (("model", "features", "streaming") if model_keys else ()):
        if key not in config:
            raise ModelDirError(f"{cfg_path}: missing key {key!r}")
    return config


def verify_files(path: Path, config: dict[str, Any], checksums: bool = True) -> None:
    """Every file config.json lists exists (and, with `checksums`, has its SHA-256)."""
    for fname, digest in config["files"].items():
        f = path / fname
        if not f.exists():
            raise ModelDirError(f"{path}: {fname} is listed in {CONFIG} but missing")
        if checksums and sha256(f) != digest:
            raise ModelDirError(f"{path}: checksum mismatch for {fname} (file changed or corrupt)")


def load_tokenizer(path: Path, vocab_size: int, what: str = "the model's") -> Tokenizer:
    """The directory's units, checked against the model's output size."""
    try:
        tokenizer = Tokenizer.from_dir(path)
    except TokenizerError as e:
        raise ModelDirError(f"{path}: {e}") from e
    if len(tokenizer) != vocab_size:
        raise ModelDirError(f"{path}: {UNITS} has {len(tokenizer)} units but {what} vocab_size is {vocab_size}")
    return tokenizer


def load_model_dir(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> ModelBundle:
    """Load and check a model directory; every inconsistency is a ModelDirError naming it."""
    path = Path(path)
    config = read_config(path)
    verify_files(path, config, verify)
    for required in (WEIGHTS, CMVN, UNITS):
        if required not in config["files"]:
            raise ModelDirError(f"{path}: {CONFIG} does not list {required}")
    try:
        mcfg = from_dict(ModelConfig, config["model"])
        fcfg = from_dict(FeatureConfig, config["features"])
        ccfg = from_dict(ChunkConfig, config["streaming"])
    except (ConfigError, TypeError) as e:
        raise ModelDirError(f"{path / CONFIG}: {e}") from e
    tokenizer = load_tokenizer(path, mcfg.vocab_size)
    if fcfg.num_mel_bins != mcfg.input_dim:
        raise ModelDirError(f"{path}: features have {fcfg.num_mel_bins} mel bins, model expects {mcfg.input_dim}")
    try:
        cmvn = json.loads((path / CMVN).read_text())
        mean, istd = torch.tensor(cmvn["mean"]), torch.tensor(cmvn["istd"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"{path / CMVN}: expected {{'mean': [...], 'istd': [...]}} ({e})") from e
    if mean.shape != (mcfg.input_dim,) or istd.shape != (mcfg.input_dim,):
        raise ModelDirError(f"{path / CMVN}: mean/istd must have {mcfg.input_dim} values")

    model = CTCModel(mcfg)
    weights = load_file(str(path / WEIGHTS))
    weights[_CMVN_KEYS[0]], weights[_CMVN_KEYS[1]] = mean, istd
    load_state_checked(model, weights, str(path / WEIGHTS))
    model.to(device).eval()
    decoder = _load_decoder(path, config, mcfg, device) if "decoder" in config else None
    return ModelBundle(model, tokenizer, fcfg, ccfg, config["name"], path, config.get("extra", {}), decoder,
                       _lm_section(path, config))


def _lm_section(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The model's n-gram LM (config key "lm": file, weight, bonus, optional beam), path resolved."""
    lm = config.get("lm")
    if lm is None:
        return None
    try:
        fname, weight, bonus = lm["file"], float(lm["weight"]), float(lm["bonus"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"{path / CONFIG}: the lm section needs file, weight and bonus ({e})") from e
    if fname not in config["files"]:
        raise ModelDirError(f"{path}: {CONFIG} has an lm section but does not list {fname}")
    beam = lm.get("beam")
    if beam is not None and (not isinstance(beam, int) or isinstance(beam, bool) or beam < 1):
        raise ModelDirError(f"{path / CONFIG}: the lm section's beam must be a positive integer, not {beam!r}")
    binary = lm.get("binary")
    if binary is not None and binary not in config["files"]:
        raise ModelDirError(f"{path}: {CONFIG} names the LM binary {binary} but does not list it")
    return {**lm, "file": path / fname, "binary": path / binary if binary else None,
            "source_sha256": config["files"][fname], "weight": weight, "bonus": bonus}


def add_lm(model_dir: str | Path, arpa: str | Path, weight: float, bonus: float, info: dict[str, Any] | None = None,
           beam: int | None = None) -> Path:
    """Put an ARPA(.gz) LM into a model directory as lm.arpa.gz, build its binary (lm.bin)
    for the model's units, and record both checksums, the fusion weights and the beam they
    were tuned with (None: the decoder's default) in config.json."""
    path = Path(model_dir)
    config = read_config(path, model_keys=False)
    arpa, dst = Path(arpa), path / LM
    if arpa.resolve() != dst.resolve():
        if arpa.suffix == ".gz":
            shutil.copyfile(arpa, dst)
        else:
            with open(arpa, "rb") as src, gzip.open(dst, "wb") as out:
                shutil.copyfileobj(src, out)
    digest = sha256(dst)
    units = read_units(path / UNITS)
    NgramLM.load(dst, units).write_binary(path / LM_BINARY, units, source_sha256=digest)
    config["files"][LM] = digest
    config["files"][LM_BINARY] = sha256(path / LM_BINARY)
    config["lm"] = {"file": LM, "binary": LM_BINARY, "weight": weight, "bonus": bonus,
                    **({"beam": beam} if beam else {}), **(info or {})}
    (path / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return dst


def _load_decoder(
    path: Path, config: dict[str, Any], mcfg: ModelConfig, device: str | torch.device
) -> AttentionDecoder:
    if DECODER not in config["files"]:
        raise ModelDirError(f"{path}: {CONFIG} has a decoder section but does not list {DECODER}")
    try:
        dcfg = from_dict(DecoderConfig, config["decoder"])
    except (ConfigError, TypeError) as e:
        raise ModelDirError(f"{path / CONFIG}: decoder: {e}") from e
    if dcfg.vocab_size != mcfg.vocab_size or dcfg.d_model != mcfg.output_size:
        raise ModelDirError(
            f"{path / CONFIG}: decoder (vocab {dcfg.vocab_size}, d_model {dcfg.d_model}) does not fit the "
            f"encoder (vocab {mcfg.vocab_size}, output_size {mcfg.output_size})"
        )
    decoder = build_decoder(dcfg)
    load_state_checked(decoder, load_file(str(path / DECODER)), str(path / DECODER))
    return decoder.to(device).eval()


def load_state_checked(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with every missing, unexpected or mis-shaped tensor named."""
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(model.state_dict()))
    if missing:
        raise ModelDirError(f"{source}: missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        raise ModelDirError(f"{source}: unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for k, v in expected.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise ModelDirError(f"{source}: {k} has shape {tuple(weights[k].shape)}, the config implies {tuple(v.shape)}")
    model.load_state_dict(weights, strict=False)
