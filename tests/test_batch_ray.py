"""The Ray Data mode on a local Ray instance (2 CPUs): the same outputs as local mode,
hotwords included."""

from __future__ import annotations

import json

import pytest

from asr.audio import write_wav
from tingxie.cli import main

from .batch_media import encode
from .conftest import HAN, speech_like
from .test_batch import talk

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'tingxie[cluster]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def close(a, b) -> None:
    """Equal documents; confidences may differ in the last digit (other batch padding)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            if k == "confidence":
                assert a[k] == pytest.approx(b[k], abs=2e-4)
            else:
                close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y)
    else:
        assert a == b


def test_ray_outputs_equal_local_outputs(local_ray, random_model_dir, tmp_path, capsys):
    data = tmp_path / "in"
    data.mkdir()
    write_wav(data / "long.wav", talk([4.0, 6.0, 24.0], seed=5), 16000)
    write_wav(data / "short.wav", speech_like(3.0, seed=6), 16000)
    encode(data / "tune", speech_like(2.0, seed=7), 16000, "mp3")
    (data / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 64)
    hotwords = tmp_path / "hotwords.txt"
    hotwords.write_text(f"{HAN[3:6]} 3\n{HAN[10:12]}\n", encoding="utf-8")  # units the random model has
    outs = {}
    for mode in ("plain", "local", "ray"):
        extra = ["--ray", "auto", "--ray-actors", "1"] if mode == "ray" else []
        extra += [] if mode == "plain" else ["--hotwords", str(hotwords)]
        # fp32: bf16 results depend on batch padding more than the comparison allows
        rc = main(["transcribe", "--model", str(random_model_dir), "--threads", "1", "--no-progress", "--vad", "energy",
                   "--precision", "fp32",
                   "-f", "json", "-o", str(tmp_path / mode), *extra, str(data)])
        err = capsys.readouterr().err
        assert rc == 1 and "broken.flac" in err and "files: 3 ok, 1 failed" in err, err
        outs[mode] = {p.name: json.loads(p.read_text()) for p in (tmp_path / mode).glob("*.json")}
    assert sorted(outs["local"]) == ["long.json", "short.json", "tune.json"]
    assert outs["ray"].keys() == outs["local"].keys()
    assert any(outs["plain"][n]["text"] != outs["local"][n]["text"] for n in outs["local"])  # the list matters
    for name in outs["local"]:
        close(outs["ray"][name], outs["local"][name])
    assert len(outs["ray"]["long.json"]["segments"]) >= 3
