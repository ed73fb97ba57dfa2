import json
import shutil

import pytest
import torch

from asr.checkpoint import ModelDirError, load_model_dir, save_model_dir
from asr.tokens import write_units

from .conftest import random_model, units


def copy_dir(src, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    return dst


def test_round_trip_preserves_outputs(random_model_dir):
    bundle = load_model_dir(random_model_dir)
    ref = random_model()
    feats = 10 + 3 * torch.randn(1, 90, 80)
    with torch.no_grad():
        a, _ = bundle.model(feats, torch.tensor([90]))
        b, _ = ref(feats, torch.tensor([90]))
    assert torch.equal(a, b)
    assert bundle.name == "random-test" and bundle.chunk.chunk_size == 4
    files = json.loads((random_model_dir / "config.json").read_text())["files"]
    assert set(files) == {"model.safetensors", "cmvn.json", "units.txt"}


def test_half_precision_weights_load_as_float32_with_the_same_outputs(tmp_path):
    ref = random_model()
    write_units(units(), tmp_path / "units.txt")
    full = save_model_dir(tmp_path / "full", ref, tmp_path, "m")
    half = save_model_dir(tmp_path / "half", ref, tmp_path, "m", weights_dtype=torch.float16)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.55 * size(full)
    bundle = load_model_dir(half)
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
    feats = 10 + 3 * torch.randn(1, 90, 80)
    with torch.no_grad():
        a, _ = bundle.model(feats, torch.tensor([90]))
        b, _ = ref(feats, torch.tensor([90]))
    assert torch.allclose(a, b, atol=0.02) and torch.equal(a.argmax(-1), b.argmax(-1))


def test_checksum_mismatch_is_named(random_model_dir, tmp_path):
    d = copy_dir(random_model_dir, tmp_path)
    (d / "units.txt").write_text((d / "units.txt").read_text().replace("的", "地", 1))
    with pytest.raises(ModelDirError, match="checksum mismatch for units.txt"):
        load_model_dir(d)


def test_vocab_mismatch(random_model_dir, tmp_path):
    d = copy_dir(random_model_dir, tmp_path)
    write_units(units() + ["多"], d / "units.txt")
    with pytest.raises(ModelDirError, match="units but the model's vocab_size"):
        load_model_dir(d, verify=False)


def test_missing_and_unknown_config(random_model_dir, tmp_path):
    d = copy_dir(random_model_dir, tmp_path)
    (d / "cmvn.json").unlink()
    with pytest.raises(ModelDirError, match="cmvn.json is listed in config.json but missing"):
        load_model_dir(d)
    d2 = tmp_path / "m2"
    shutil.copytree(random_model_dir, d2)
    cfg = json.loads((d2 / "config.json").read_text())
    cfg["model"]["output_sise"] = 3
    (d2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match="unknown keys"):
        load_model_dir(d2)
    with pytest.raises(ModelDirError, match="no config.json"):
        load_model_dir(tmp_path)


def test_shape_mismatch_names_the_tensor(random_model_dir, tmp_path):
    d = copy_dir(random_model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["linear_units"] = 48
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match=r"feed_forward.*w_1.weight has shape \(64, 32\)"):
        load_model_dir(d)


def test_extra_or_missing_tensors_are_errors(tmp_path):
    write_units(units(), tmp_path / "units.txt")
    model = random_model(num_blocks=3)
    save_model_dir(tmp_path, model, tmp_path, "x")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model"]["num_blocks"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match=r"unexpected tensors \['encoder.encoders.2"):
        load_model_dir(tmp_path)
    cfg["model"]["num_blocks"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelDirError, match=r"missing tensors \['encoder.encoders.3"):
        load_model_dir(tmp_path)
