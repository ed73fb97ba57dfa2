"""Import a WeNet U2/U2++ Conformer experiment folder as a tingxie model directory.

A WeNet bundle holds `final.pt` (or `avg_N.pt`: a plain `state_dict`), `train.yaml`,
`global_cmvn` and `units.txt` (`words.txt` in older bundles). Both `train.yaml` layouts
are read: WeNet <= 2.2 (top-level `input_dim`, `cmvn_file`, `is_json_cmvn`) and >= 3.0
(`tokenizer_conf`, `cmvn_conf`, `ctc_conf`). The checkpoint's tensors are whitelisted:
every key must be a tensor of the model the yaml describes, or one of the known unused
extras (the `pe` tables of v3 checkpoints, the pre-2022 `concat_linear` layers, BatchNorm's
`num_batches_tracked`); anything else, a missing tensor or a wrong shape is a
`WenetImportError` naming it.

Entry point: `import_wenet(src, dst)`; `tingxie import-wenet SRC DST` calls it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ..checkpoint import ModelDirError, load_model_dir, load_state_checked, save_model_dir, sha256
from ..config import ChunkConfig, ConfigError, DecoderConfig, FeatureConfig, ModelConfig
from ..model.conformer import CTCModel
from ..model.decoder import AttentionDecoder, build_decoder
from ..tokens import TokenizerError, read_units, write_units

__all__ = ["WenetImportError", "WenetConfig", "ImportReport", "import_wenet", "read_train_config", "load_cmvn_file"]

CMVN_KEYS = ("encoder.global_cmvn.mean", "encoder.global_cmvn.istd")

# encoder_conf / decoder_conf keys that do not change inference (dropout, training-time
# chunking, memory savers, attention kernels).
_ENCODER_IGNORED = {
    "dropout_rate", "positional_dropout_rate", "attention_dropout_rate", "use_dynamic_chunk",
    "use_dynamic_left_chunk", "static_chunk_size", "gradient_checkpointing", "use_sdpa", "global_cmvn",
}
_DECODER_IGNORED = {
    "dropout_rate", "positional_dropout_rate", "self_attention_dropout_rate", "src_attention_dropout_rate",
    "gradient_checkpointing", "use_sdpa", "tie_word_embedding",
}
# Keys that tingxie supports only at one value (WeNet's default, used by every published
# U2++ Conformer): anything else is refused rather than run wrongly.
_ENCODER_FIXED = {
    "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn", "activation_type": "swish",
    "normalize_before": True, "concat_after": False, "query_bias": True, "key_bias": True, "value_bias": True,
    "conv_bias": True, "final_norm": True, "conv_inner_factor": 2, "layer_norm_type": "layer_norm",
    "mlp_type": "position_wise_feed_forward", "mlp_bias": True, "n_kv_head": None, "head_dim": None,
}
_DECODER_FIXED = {
    "input_layer": "embed", "use_output_layer": True, "src_attention": True, "activation_type": "relu",
    "concat_after": False, "query_bias": True, "key_bias": True, "value_bias": True, "src_query_bias": True,
    "src_key_bias": True, "src_value_bias": True, "layer_norm_type": "layer_norm",
    "mlp_type": "position_wise_feed_forward", "mlp_bias": True, "n_kv_head": None, "head_dim": None,
}
# WeNet's constructor defaults, used where train.yaml leaves a key out.
_ENCODER_DEFAULTS = {
    "output_size": 256, "attention_heads": 4, "linear_units": 2048, "num_blocks": 6, "input_layer": "conv2d",
    "macaron_style": True, "use_cnn_module": True, "cnn_module_kernel": 15, "causal": False,
    "cnn_module_norm": "batch_norm", "norm_eps": 1e-5,
}
_DECODER_DEFAULTS = {
    "attention_heads": 4, "linear_units": 2048, "num_blocks": 6, "r_num_blocks": 0, "normalize_before": True,
    "norm_eps": 1e-5,
}

# Known unused tensors: accepted and dropped, each only with the shape it must have.
_PE = re.compile(r"^(encoder\.embed\.pos_enc|decoder\.(left_decoder\.|right_decoder\.)?embed\.1)\.pe$")
_ENC_CONCAT = re.compile(r"^encoder\.encoders\.\d+\.concat_linear\.(weight|bias)$")
_DEC_CONCAT = re.compile(r"^decoder\.(left_decoder\.|right_decoder\.)?decoders\.\d+\.concat_linear[12]\.(weight|bias)$")


class WenetImportError(ModelDirError):
    """The WeNet bundle is incomplete, inconsistent or uses an unsupported architecture."""


@dataclass(frozen=True)
class WenetConfig:
    """What train.yaml says, in tingxie's terms."""

    layout: str  # "v2" (WeNet <= 2.2) or "v3" (>= 3.0)
    model: ModelConfig
    features: FeatureConfig
    decoder: DecoderConfig | None
    cmvn_file: str | None  # training-time path from the yaml (None: no CMVN configured)
    is_json_cmvn: bool
    units_file: str | None  # tokenizer_conf.symbol_table_path (v3)
    bpe_file: str | None
    ctc_weight: float
    reverse_weight: float


@dataclass
class ImportReport:
    dst: Path
    checkpoint: Path
    layout: str
    cmvn_source: str  # "checkpoint", "file <name>" or "none"
    has_decoder: bool
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- train.yaml


def read_train_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise WenetImportError(f"{path}: cannot read train.yaml ({e})") from e
    if not isinstance(cfg, dict):
        raise WenetImportError(f"{path}: not a YAML mapping")
    return cfg


def _section(cfg: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    value = cfg.get(name) or {}
    if not isinstance(value, dict):
        raise WenetImportError(f"{source}: {name} must be a mapping")
    return dict(value)


def _check_conf(conf: Mapping[str, Any], known: set[str], fixed: Mapping[str, Any], where: str) -> None:
    for key, value in conf.items():
        if key in fixed:
            if value != fixed[key]:
                raise WenetImportError(f"{where}.{key} = {value!r} is not supported (only {fixed[key]!r})")
        elif key not in known:
            raise WenetImportError(f"{where}.{key} = {value!r} is not a setting tingxie knows; refusing to guess")


def parse_train_config(
    cfg: Mapping[str, Any], source: str = "train.yaml", norm_eps: float | None = None, with_decoder: bool = True
) -> WenetConfig:
    """Translate a WeNet train.yaml (either layout) into tingxie configurations.

    norm_eps overrides the LayerNorm eps of encoder and decoder (WeNet trained with 1e-12
    before 2022-01-11 and has run every checkpoint with 1e-5 since; default: the yaml's
    `norm_eps`, else 1e-5). with_decoder=False leaves the attention decoder out.
    """
    layout = "v3" if any(k in cfg for k in ("tokenizer_conf", "cmvn_conf", "ctc_conf", "tokenizer", "cmvn")) else "v2"
    encoder = cfg.get("encoder", "conformer")
    if encoder != "conformer":
        raise WenetImportError(f"{source}: encoder {encoder!r} is not supported (only conformer)")
    model_type = cfg.get("model", "asr_model")
    if model_type != "asr_model":
        raise WenetImportError(f"{source}: model {model_type!r} is not supported (only asr_model)")
    if layout == "v3":
        blank = _section(cfg, "ctc_conf", source).get("ctc_blank_id", 0)
        if blank != 0:
            raise WenetImportError(f"{source}: ctc_conf.ctc_blank_id is {blank}; tingxie needs <blank> at 0")

    econf = _section(cfg, "encoder_conf", source)
    _check_conf(econf, set(_ENCODER_DEFAULTS) | _ENCODER_IGNORED, _ENCODER_FIXED, f"{source}: encoder_conf")
    e = {**_ENCODER_DEFAULTS, **{k: v for k, v in econf.items() if k in _ENCODER_DEFAULTS}}

    dataset_conf = _section(cfg, "dataset_conf", source)
    fbank_conf = _section(dataset_conf, "fbank_conf", source)
    feats_type = dataset_conf.get("feats_type", "fbank")
    if feats_type != "fbank" or ("mfcc_conf" in dataset_conf and "fbank_conf" not in dataset_conf):
        raise WenetImportError(f"{source}: only fbank features are supported (feats_type {feats_type!r})")
    rate = _section(dataset_conf, "resample_conf", source).get("resample_rate", 16000)
    mel = int(fbank_conf.get("num_mel_bins", 80))
    input_dim = int(cfg.get("input_dim", mel))
    if input_dim != mel:
        raise WenetImportError(f"{source}: input_dim {input_dim} differs from fbank_conf.num_mel_bins {mel}")

    vocab = cfg.get("output_dim", cfg.get("vocab_size"))
    if vocab is None:
        raise WenetImportError(f"{source}: no output_dim (vocabulary size)")
    vocab = int(vocab)
    special = _section(_section(cfg, "tokenizer_conf", source), "special_tokens", source)
    sos = int(special.get("<sos>", vocab - 1))
    eos = int(special.get("<eos>", vocab - 1))

    try:
        model = ModelConfig(
            vocab_size=vocab,
            input_dim=input_dim,
            output_size=int(e["output_size"]),
            attention_heads=int(e["attention_heads"]),
            linear_units=int(e["linear_units"]),
            num_blocks=int(e["num_blocks"]),
            cnn_module_kernel=int(e["cnn_module_kernel"]),
            input_layer=str(e["input_layer"]),
            causal=bool(e["causal"]),
            cnn_module_norm=str(e["cnn_module_norm"]),
            macaron_style=bool(e["macaron_style"]),
            use_cnn_module=bool(e["use_cnn_module"]),
            norm_eps=float(e["norm_eps"] if norm_eps is None else norm_eps),
            dropout_rate=0.0,
            attention_dropout_rate=0.0,
        )
        features = FeatureConfig(
            sample_rate=int(rate),
            num_mel_bins=mel,
            frame_length_ms=float(fbank_conf.get("frame_length", 25)),
            frame_shift_ms=float(fbank_conf.get("frame_shift", 10)),
            # WeNet decodes with kaldi.fbank at dither 0 and nothing else: digitally silent
            # frames are log(float eps), so tingxie's noise floor stays off.
            dither=0.0,
            noise_floor=0.0,
        )
    except ConfigError as err:
        raise WenetImportError(f"{source}: {err}") from err

    decoder = None
    if with_decoder:
        kind = cfg.get("decoder", "bitransformer")
        if kind not in ("bitransformer", "transformer"):
            raise WenetImportError(
                f"{source}: decoder {kind!r} is not supported (bitransformer or transformer); "
                "import with --ctc-only to leave it out"
            )
        dconf = _section(cfg, "decoder_conf", source)
        _check_conf(dconf, set(_DECODER_DEFAULTS) | _DECODER_IGNORED, _DECODER_FIXED, f"{source}: decoder_conf")
        d = {**_DECODER_DEFAULTS, **{k: v for k, v in dconf.items() if k in _DECODER_DEFAULTS}}
        try:
            decoder = DecoderConfig(
                vocab_size=vocab,
                d_model=model.output_size,
                sos=sos,
                eos=eos,
                kind=kind,
                attention_heads=int(d["attention_heads"]),
                linear_units=int(d["linear_units"]),
                num_blocks=int(d["num_blocks"]),
                r_num_blocks=int(d["r_num_blocks"]) if kind == "bitransformer" else 0,
                normalize_before=bool(d["normalize_before"]),
                norm_eps=float(d["norm_eps"] if norm_eps is None else norm_eps),
            )
        except ConfigError as err:
            raise WenetImportError(f"{source}: decoder_conf: {err}") from err

    if layout == "v3":
        cmvn_conf = _section(cfg, "cmvn_conf", source)
        cmvn_file = cmvn_conf.get("cmvn_file") if cfg.get("cmvn") == "global_cmvn" else None
        is_json = bool(cmvn_conf.get("is_json_cmvn", True))
    else:
        cmvn_file, is_json = cfg.get("cmvn_file"), bool(cfg.get("is_json_cmvn", True))
    tok = _section(cfg, "tokenizer_conf", source)
    model_conf = _section(cfg, "model_conf", source)
    return WenetConfig(
        layout=layout,
        model=model,
        features=features,
        decoder=decoder,
        cmvn_file=cmvn_file,
        is_json_cmvn=is_json,
        units_file=tok.get("symbol_table_path"),
        bpe_file=tok.get("bpe_path"),
        ctc_weight=float(model_conf.get("ctc_weight", 0.5)),
        reverse_weight=float(model_conf.get("reverse_weight", 0.0)),
    )


# ---------------------------------------------------------------- CMVN


def _stats_to_mean_istd(sums: list[float], squares: list[float], count: float) -> tuple[torch.Tensor, torch.Tensor]:
    mean, istd = [], []
    if len(sums) != len(squares):
        raise ValueError(f"{len(sums)} sums but {len(squares)} sums of squares")
    for s, q in zip(sums, squares):
        m = s / count
        var = max(q / count - m * m, 1.0e-20)
        mean.append(m)
        istd.append(1.0 / math.sqrt(var))
    return torch.tensor(mean, dtype=torch.float64).float(), torch.tensor(istd, dtype=torch.float64).float()


def load_cmvn_file(path: str | Path, is_json: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, istd) float32 from WeNet's JSON stats or a Kaldi text stats matrix."""
    path = Path(path)
    try:
        if is_json:
            stats = json.loads(path.read_text())
            return _stats_to_mean_istd(stats["mean_stat"], stats["var_stat"], float(stats["frame_num"]))
        raw = path.read_bytes()
        if raw[:2] == b"\0B":
            raise WenetImportError(
                f"{path}: binary Kaldi CMVN is not supported; convert it with copy-matrix --binary=false"
            )
        tokens = raw.decode("utf-8").split()
        # [ sum_1 .. sum_D count
        #   sq_1 .. sq_D 0 ]
        if len(tokens) < 6 or tokens[0] != "[" or tokens[-1] != "]" or (len(tokens) - 4) % 2:
            raise ValueError("expected a 2 x (dim + 1) Kaldi text matrix")
        dim = (len(tokens) - 4) // 2
        values = [float(t) for t in tokens[1:-1]]
        return _stats_to_mean_istd(values[:dim], values[dim + 1 : 2 * dim + 1], values[dim])
    except WenetImportError:
        raise
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        kind = "JSON" if is_json else "Kaldi text"
        raise WenetImportError(f"{path}: not a {kind} CMVN stats file ({e})") from e


# ---------------------------------------------------------------- bundle files


def _find(src: Path, names: list[str | None]) -> Path | None:
    """The first of `names` (yaml paths are reduced to their file name) inside src."""
    for name in names:
        if name and (src / Path(name).name).is_file():
            return src / Path(name).name
    return None


def find_checkpoint(src: Path, checkpoint: str | Path | None = None) -> Path:
    if checkpoint is not None:
        path = Path(checkpoint)
        path = src / path if (src / path).is_file() else path
        if not path.is_file():
            raise WenetImportError(f"checkpoint {checkpoint} not found")
        return path
    if (src / "final.pt").is_file():
        return src / "final.pt"
    avg = sorted(src.glob("avg_*.pt"))
    if len(avg) == 1:
        return avg[0]
    if avg:
        names = [p.name for p in avg]
        raise WenetImportError(f"{src}: several averaged checkpoints {names}; choose one with --checkpoint")
    raise WenetImportError(f"{src}: no final.pt or avg_N.pt")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure is reported the same way
        raise WenetImportError(f"{path}: cannot load as a PyTorch state_dict ({e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WenetImportError(f"{path}: not a plain state_dict of tensors (WeNet saves model.state_dict())")
    return {str(k): v for k, v in state.items()}


# ---------------------------------------------------------------- weights


def split_state_dict(
    state: Mapping[str, torch.Tensor], model: CTCModel, decoder: AttentionDecoder | None, source: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """Check every checkpoint tensor against the model the yaml describes.

    Returns (encoder + CTC weights with CMVN buffers if present, decoder weights with the
    `decoder.` prefix removed, ignored keys). Raises WenetImportError naming unexpected,
    missing and mis-shaped tensors.
    """
    d = model.cfg.output_size
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if decoder is not None:
        expected.update({f"decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()})
    ignorable: dict[str, tuple[int, ...] | None] = {}
    for key, value in state.items():
        if key in expected:
            continue
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked") and key[: -len("num_batches_tracked")] + "running_mean" in expected:
            ignorable[key] = None
        elif _PE.match(key) and len(shape) == 3 and shape[0] == 1 and shape[2] == d:
            ignorable[key] = None
        elif _ENC_CONCAT.match(key) or _DEC_CONCAT.match(key):
            want = (d, 2 * d) if key.endswith("weight") else (d,)
            if shape != want:
                raise WenetImportError(f"{source}: {key} has shape {shape}, expected {want}")
            ignorable[key] = None
    unexpected = sorted(k for k in state if k not in expected and k not in ignorable)
    if decoder is None:  # --ctc-only: the decoder is left out on purpose
        unexpected = [k for k in unexpected if not k.startswith("decoder.")]
    missing = sorted(k for k in expected if k not in state and k not in CMVN_KEYS)
    problems = []
    if unexpected:
        problems.append(f"unexpected tensors {_short(unexpected)}")
    if missing:
        problems.append(f"missing tensors {_short(missing)}")
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            problems.append(f"{key} has shape {tuple(state[key].shape)}, train.yaml implies {shape}")
    if problems:
        raise WenetImportError(f"{source}: " + "; ".join(problems[:6]) + (" ..." if len(problems) > 6 else ""))
    enc = {k: v.float() for k, v in state.items() if k in expected and not k.startswith("decoder.")}
    dec = {k[len("decoder."):]: v.float() for k, v in state.items() if k in expected and k.startswith("decoder.")}
    ignored = sorted(set(ignorable) | ({k for k in state if k.startswith("decoder.")} if decoder is None else set()))
    return enc, dec, ignored


def _short(keys: list[str]) -> str:
    return str(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


# ---------------------------------------------------------------- import


def import_wenet(
    src: str | Path,
    dst: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: str | Path | None = None,
    name: str | None = None,
    chunk: ChunkConfig = ChunkConfig(),
    norm_eps: float | None = None,
    ctc_only: bool = False,
    overwrite: bool = False,
) -> ImportReport:
    """Convert the WeNet experiment folder `src` into the tingxie model directory `dst`.

    src may also be the checkpoint file itself (its folder is the bundle). checkpoint /
    config choose other files than final.pt (or the only avg_N.pt) and train.yaml.
    The written directory is loaded back once before this returns.
    """
    src = Path(src)
    if src.is_file():
        checkpoint, src = checkpoint or src, src.parent
    if not src.is_dir():
        raise WenetImportError(f"{src}: not a WeNet experiment folder")
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise WenetImportError(f"{dst} exists and is not empty (use --force to replace it)")
    ckpt_path = find_checkpoint(src, checkpoint)
    yaml_path = Path(config) if config is not None else src / "train.yaml"
    if not yaml_path.is_file():
        raise WenetImportError(f"{yaml_path}: not found (WeNet bundles ship train.yaml)")
    wcfg = parse_train_config(read_train_config(yaml_path), str(yaml_path), norm_eps, with_decoder=not ctc_only)
    notes: list[str] = []

    units_path = _find(src, ["units.txt", "words.txt", wcfg.units_file])
    if units_path is None:
        raise WenetImportError(f"{src}: no units.txt or words.txt")
    try:
        units = read_units(units_path)
    except TokenizerError as e:
        raise WenetImportError(str(e)) from e
    vocab = wcfg.model.vocab_size
    if len(units) != vocab:
        raise WenetImportError(f"{units_path}: {len(units)} units, but {yaml_path.name} has output_dim {vocab}")
    if wcfg.decoder is not None:
        sos_unit = units[wcfg.decoder.sos]
        if sos_unit not in ("<sos/eos>", "<sos>", "<eos>"):
            notes.append(f"sos/eos id {wcfg.decoder.sos} is unit {sos_unit!r}, not <sos/eos> (kept, as WeNet does)")

    state = load_checkpoint(ckpt_path)
    model = CTCModel(wcfg.model)
    decoder = build_decoder(wcfg.decoder) if wcfg.decoder is not None else None
    enc, dec, ignored = split_state_dict(state, model, decoder, str(ckpt_path))

    # CMVN: the checkpoint's buffers win; else the stats file named by the yaml.
    idim = wcfg.model.input_dim
    cmvn_path = _find(src, [wcfg.cmvn_file, "global_cmvn"]) if wcfg.cmvn_file else None
    if CMVN_KEYS[0] in enc and CMVN_KEYS[1] in enc:
        cmvn_source = "checkpoint"
        if cmvn_path is not None:
            try:
                fmean, fistd = load_cmvn_file(cmvn_path, wcfg.is_json_cmvn)
                if not (torch.allclose(fmean, enc[CMVN_KEYS[0]], rtol=1e-4, atol=1e-4)
                        and torch.allclose(fistd, enc[CMVN_KEYS[1]], rtol=1e-4, atol=1e-4)):
                    notes.append(f"{cmvn_path.name} differs from the checkpoint's CMVN; the checkpoint's is used")
            except WenetImportError as e:
                notes.append(f"{e}; the checkpoint's CMVN is used")
        elif wcfg.cmvn_file is None:
            notes.append("train.yaml configures no CMVN but the checkpoint has it; the checkpoint's is used")
    elif CMVN_KEYS[0] in enc or CMVN_KEYS[1] in enc:
        raise WenetImportError(f"{ckpt_path}: has only one of {list(CMVN_KEYS)}")
    elif cmvn_path is not None:
        cmvn_source = f"file {cmvn_path.name}"
        enc[CMVN_KEYS[0]], enc[CMVN_KEYS[1]] = load_cmvn_file(cmvn_path, wcfg.is_json_cmvn)
    elif wcfg.cmvn_file is not None:
        raise WenetImportError(
            f"train.yaml names CMVN file {wcfg.cmvn_file!r}, but neither {src} nor the checkpoint holds the statistics"
        )
    else:
        cmvn_source = "none"
        enc[CMVN_KEYS[0]], enc[CMVN_KEYS[1]] = torch.zeros(idim), torch.ones(idim)
        notes.append("no CMVN in the checkpoint or train.yaml: features are used unnormalised, as WeNet does")
    for key in CMVN_KEYS:
        if tuple(enc[key].shape) != (idim,):
            raise WenetImportError(f"CMVN {key} has shape {tuple(enc[key].shape)}, input_dim is {idim}")

    load_state_checked(model, enc, str(ckpt_path))
    if decoder is not None:
        load_state_checked(decoder, dec, str(ckpt_path))
    model.eval()

    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        write_units(units, stage / "units.txt")
        bpe = _find(src, [wcfg.bpe_file, "bpe.model"]) if wcfg.bpe_file else None
        if bpe is not None:
            shutil.copyfile(bpe, stage / "bpe.model")
        elif wcfg.bpe_file:
            notes.append(f"train.yaml names bpe model {wcfg.bpe_file!r}, which is not in the bundle")
        source_info = {
            "format": "wenet",
            "layout": wcfg.layout,
            "checkpoint": ckpt_path.name,
            "checkpoint_sha256": sha256(ckpt_path),
            "train_config": yaml_path.name,
            "units": units_path.name,
            "cmvn": cmvn_source,
            "ignored_keys": ignored,
        }
        extra = {
            "source": source_info,
            "rescoring": {"ctc_weight": wcfg.ctc_weight, "reverse_weight": wcfg.reverse_weight,
                          "note": "model_conf training weights from train.yaml"},
        }
        folder = src.resolve().name
        name = name or (folder if folder.lower().startswith("wenet") else f"wenet-{folder}")
        save_model_dir(stage, model, stage, name, wcfg.features, chunk, extra, decoder=decoder)
        (stage / "README.md").write_text(_model_card(name, src, source_info, wcfg, notes), encoding="utf-8")
        load_model_dir(stage)  # everything written loads back
        _make_readable(stage)
        if dst.exists():
            shutil.rmtree(dst)
        stage.rename(dst)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return ImportReport(dst, ckpt_path, wcfg.layout, cmvn_source, decoder is not None, ignored, notes)


def _make_readable(path: Path) -> None:
    """The staging folder and some writers create owner-only files; give the model the
    permissions the umask allows, like any other directory the user creates."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for f in path.iterdir():
        f.chmod(0o666 & ~umask)


def _model_card(name: str, src: Path, info: Mapping[str, Any], wcfg: WenetConfig, notes: list[str]) -> str:
    m, dec = wcfg.model, wcfg.decoder
    decoder = f"{dec.kind} ({dec.num_blocks}+{dec.r_num_blocks} blocks)" if dec else "not imported"
    lines = [
        f"# {name}",
        "",
        f"Imported from the WeNet experiment folder `{src.resolve().name}` with `tingxie import-wenet`.",
        "",
        f"- checkpoint: `{info['checkpoint']}` (sha256 `{info['checkpoint_sha256']}`)",
        f"- train.yaml layout: {'WeNet >= 3.0' if wcfg.layout == 'v3' else 'WeNet <= 2.2'}",
        f"- encoder: Conformer, {m.num_blocks} blocks, d {m.output_size}, {m.attention_heads} heads, "
        f"FFN {m.linear_units}, kernel {m.cnn_module_kernel} ({'causal' if m.causal else 'non-causal'}, "
        f"{m.cnn_module_norm}), {m.input_layer} subsampling, vocabulary {m.vocab_size}",
        f"- attention decoder: {decoder}",
        f"- CMVN: {info['cmvn']}",
        f"- training ctc_weight {wcfg.ctc_weight}, reverse_weight {wcfg.reverse_weight}",
    ]
    if info["ignored_keys"]:
        n = len(info["ignored_keys"])
        lines.append(f"- unused checkpoint tensors dropped: {n} (`pe` tables, `concat_linear`, ...)")
    lines += [f"- note: {n}" for n in notes]
    lines += ["", "See docs/models.md for the published accuracy and how to serve it.", ""]
    return "\n".join(lines)
