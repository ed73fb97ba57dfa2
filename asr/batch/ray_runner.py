"""The batch pipeline on Ray Data (optional: `pip install 'tingxie[cluster]'`).

Same steps as the local mode, spread over a cluster:

1. `prepare` (decode, VAD, fbank) runs as CPU tasks, one input each, emitting one
   header row per input (duration, channels, error, number of segments) and one row
   per segment (fbank bytes).
2. A pool of actors, each holding one model (one GPU each where the cluster has them),
   recognises the rows in batches (`BatchEngine`: sorted by length, padded).
3. The driver gathers each input's rows, assembles its `Transcript` and hands back
   `Outcome`s in input order, which the caller writes exactly as in local mode.

The model directory is read on the driver and shipped through the object store, so
workers need no copy of it. Input paths must be readable on every node (a shared
filesystem or the same mount), and every node needs tingxie and its dependencies.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..config import ChunkConfig, ConfigError, DecodingConfig
from ..decoding.context import ContextGraph
from ..recognizer import Recognizer
from .engine import BatchEngine, EngineOptions
from .inputs import InputItem
from .pipeline import BatchOptions, Outcome, Prepared, assemble, prepare
from .results import Segment

__all__ = ["RayOptions", "run_ray"]


@dataclass(frozen=True)
class RayOptions:
    """address: 'auto' (join the cluster this machine belongs to), 'local' (start a
    Ray instance here), or a cluster address; ignored when Ray is already initialised.
    gpus: per actor (None: 1 where the cluster has GPUs, else 0)."""

    address: str = "auto"
    actors: int = 1
    gpus: float | None = None
    cpus: float = 1.0
    device: str = "auto"
    precision: str = "auto"  # on the actors' device (auto: bf16/fp16 on CUDA, fp32 on CPU)
    batch_rows: int = 256  # segments handed to an actor at a time (it sorts them by length)

    def __post_init__(self) -> None:
        if self.actors < 1 or self.cpus <= 0 or self.batch_rows < 1:
            raise ConfigError("--ray-actors, --ray-cpus and the batch size must be positive")
        if self.gpus is not None and self.gpus < 0:
            raise ConfigError("--ray-gpus must be >= 0")


def _ray():
    try:
        import ray  # noqa: PLC0415 (optional: the cluster extra)
        import ray.data  # noqa: PLC0415 (optional: the cluster extra)
    except ImportError as e:
        raise ConfigError("--ray needs Ray Data: pip install 'tingxie[cluster]' (or 'ray[data]')") from e
    return ray


def _connect(ray, address: str) -> None:
    if ray.is_initialized():
        return
    kw: dict[str, Any] = {"log_to_driver": False}
    if address == "local":
        ray.init(include_dashboard=False, **kw)
    else:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {e}") from e


def _model_files(path: Path) -> dict[str, bytes]:
    """The files of a model directory (those config.json lists, and config.json), keyed by
    their path under `model/`; a two-pass directory brings its first-pass model along at
    the relative place its config names."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    names = ["config.json", *config.get("files", {})]
    files = {f"model/{n}": (path / n).read_bytes() for n in names}
    first = config.get("first_pass")
    if first:
        files.update({f"model/{first}/{k[len('model/'):]}": v for k, v in _model_files(path / first).items()})
    return files


# ---------------------------------------------------------------- step 1: CPU tasks

NONE = -1.0  # a keep bound that is the segment's own (Arrow columns hold no None in a float column)


def _bound(v: float | None) -> float:
    return NONE if v is None else v


def _prepare_rows(row: dict[str, Any], options: BatchOptions, features: Any) -> list[dict[str, Any]]:
    item = InputItem(row["id"], row["path"], row["name"], row["error"] or None)
    p = prepare(item, options, features)
    header = {
        "k": row["k"], "seg": -1, "channel": -1, "start": 0.0, "end": 0.0, "keep_start": NONE, "keep_end": NONE,
        "duration": p.duration, "channels": p.channels, "n_segments": len(p.segments), "error": p.error or "",
        "frames": 0, "feats": b"",
    }
    out = [header]
    for j, s in enumerate(p.segments):
        feats = s.feats.numpy().astype(np.float32, copy=False)
        out.append({
            "k": row["k"], "seg": j, "channel": -1 if s.channel is None else s.channel, "start": s.start,
            "end": s.end, "keep_start": _bound(s.keep[0]), "keep_end": _bound(s.keep[1]), "duration": 0.0,
            "channels": 0, "n_segments": 0, "error": "", "frames": feats.shape[0], "feats": feats.tobytes(),
        })
    return out


# ---------------------------------------------------------------- step 2: actors


class _Recognize:
    """One model per actor; recognises the segment rows of each batch it is given."""

    def __init__(self, model: Any, device: str, precision: str, decoding: DecodingConfig, chunk: ChunkConfig,
                 engine: EngineOptions, threads: int, hotwords: ContextGraph | None = None) -> None:
        import ray  # noqa: PLC0415 (optional: the cluster extra)


        torch.set_num_threads(max(1, threads))
        files = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self._dir = tempfile.TemporaryDirectory(prefix="tingxie-model-")
        for name, data in files.items():
            target = Path(self._dir.name) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        rec = Recognizer.from_dir(Path(self._dir.name) / "model", device, decoding, chunk, precision=precision)
        self.engine = BatchEngine(rec, engine)
        self.hotwords = hotwords
        self.mel = rec.features.num_mel_bins

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seg_idx = [i for i, s in enumerate(batch["seg"]) if s >= 0]
        feats = [
            torch.from_numpy(np.frombuffer(batch["feats"][i], dtype=np.float32).reshape(-1, self.mel).copy())
            for i in seg_idx
        ]
        frame_s = self.engine.rec.features.frame_shift_ms / 1000
        starts = [float(batch["start"][i]) for i in seg_idx]
        results = self.engine.recognize(feats, starts, [s + f.size(0) * frame_s for s, f in zip(starts, feats)],
                                        [self.hotwords] * len(feats))
        out_text = np.array([""] * len(batch["seg"]), dtype=object)
        decode = self.engine.rec.tokenizer.decode
        for i, res in zip(seg_idx, results):
            ch = int(batch["channel"][i])
            kept = tuple(None if v == NONE else float(v) for v in (batch["keep_start"][i], batch["keep_end"][i]))
            start, end = float(batch["start"][i]), float(batch["end"][i])
            seg = Segment.from_result(res, start, end, None if ch < 0 else ch, kept, decode)  # type: ignore[arg-type]
            out_text[i] = json.dumps(seg.to_dict(exact=True), ensure_ascii=False)
        keep = {k: v for k, v in batch.items() if k != "feats"}
        keep["result"] = out_text
        return keep


# ---------------------------------------------------------------- driver


def run_ray(items: list[InputItem], recognizer: Recognizer, options: BatchOptions, ray_opts: RayOptions,
            hotwords: ContextGraph | None = None) -> Iterator[Outcome]:
    """Transcribe `items` on Ray; outcomes in input order (as `run_local`); hotwords: a
    context graph for every utterance (sent to each actor once)."""
    if not items:
        return
    ray = _ray()
    _connect(ray, ray_opts.address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the command line has its own
    gpus = ray_opts.gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    model_ref = ray.put(_model_files(Path(recognizer.model_path)))
    rows = [{"k": k, "id": it.id, "path": it.path, "name": it.name, "error": it.error or ""} for k, it in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 512)))
    ds = ds.flat_map(_prepare_rows, fn_kwargs={"options": options, "features": recognizer.full_pass_features}, num_cpus=1)
    ds = ds.map_batches(
        _Recognize,
        fn_constructor_kwargs=dict(
            model=model_ref, device=ray_opts.device if gpus > 0 else "cpu", precision=ray_opts.precision,
            decoding=recognizer.decoding,
            chunk=recognizer.chunk, engine=options.engine, threads=int(ray_opts.cpus), hotwords=hotwords,
        ),
        batch_size=ray_opts.batch_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ray_opts.actors),
        num_gpus=gpus,
        num_cpus=ray_opts.cpus,
    )
    record = options.record(recognizer)
    if gpus > 0:
        record["precision"] = ray_opts.precision
    headers: dict[int, dict[str, Any]] = {}
    segments: dict[int, list[Segment]] = {}
    ready: dict[int, Outcome] = {}
    next_k = 0
    for row in ds.iter_rows():
        k = int(row["k"])
        if row["seg"] < 0:
            headers[k] = row
        else:
            segments.setdefault(k, []).append(Segment.from_exact(json.loads(row["result"])))
        head = headers.get(k)
        if head is not None and len(segments.get(k, ())) == head["n_segments"]:
            ready[k] = _outcome(items[k], head, segments.pop(k, []), record)
            del headers[k]
        while next_k in ready:
            yield ready.pop(next_k)
            next_k += 1


def _outcome(item: InputItem, head: dict[str, Any], segs: list[Segment], record: dict[str, Any]) -> Outcome:
    if head["error"]:
        return Outcome(item, None, str(head["error"]))
    p = Prepared(item, float(head["duration"]), int(head["channels"]))
    return Outcome(item, assemble(p, segs, record))
