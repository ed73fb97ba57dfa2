"""Whisper-CTC: the CTranslate2 reader, Whisper's front end and encoder against their
references (faster-whisper's FeatureExtractor, CTranslate2's own encoder), the model
directory, and a tiny train-and-decode run of the CTC head."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.audio import read_audio
from asr.config import DecodingConfig
from asr.data.normalize import normalize_text
from asr.features import resample
from asr.metrics import cer
from asr.recognizer import Recognizer
from asr.tokens import Tokenizer, write_units
from asr.train.data import Utterance
from asr.train.whisper_head import HeadTrainConfig, cache_encoder_outputs, greedy_cer, train_head
from asr.whisper.bundle import is_whisper_dir, load_whisper_dir, save_whisper_dir
from asr.whisper.convert import load_encoder, tokenizer_json, wheel_parts
from asr.whisper.ct2 import CT2FormatError, read_ct2_model
from asr.whisper.ctc import CTCHead, HeadConfig, WhisperCTC
from asr.whisper.features import log_mel
from asr.whisper.model import WhisperDims
from asr.whisper.recognizer import MAX_SEGMENT_S, WhisperRecognizer, quiet_cuts, resolve_whisper_precision

from .conftest import SHARED, espeak, needs_espeak, speech_like

REAL = SHARED / "data" / "real_zh" / "eval"


def _real_clip(n: int = 0) -> np.ndarray:
    if not (REAL / "manifest.jsonl").exists():
        pytest.skip(f"{REAL} is not here (real speech for parity checks)")
    line = (REAL / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[n]
    audio, rate = read_audio(REAL / json.loads(line)["audio"])
    assert rate == 16000
    return audio[0]


def _signals() -> dict[str, np.ndarray]:
    s = speech_like(3.0, seed=1)
    silent = np.concatenate([np.zeros(8000, np.float32), s[:16000], np.zeros(4000, np.float32), s[16000:24000],
                             np.zeros(8000, np.float32)])
    return {"speech-like": s, "digital silence around and inside": silent, "short": s[:390], "empty": s[:0]}


# ---------------------------------------------------------------- CTranslate2 reader


def _ct2_bytes(version: int = 6, dtype: int = 4, values=(1.0, -2.0), truncate: int = 0) -> bytes:
    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    data = np.asarray(values, np.float16).tobytes()
    body = struct.pack("<I", version) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", 1)
    body += string("encoder/x") + bytes([1]) + struct.pack("<I", len(values)) + bytes([dtype])
    body += struct.pack("<I", len(data)) + data
    body += struct.pack("<I", 1) + string("a") + string("encoder/x")
    return body[: len(body) - truncate] if truncate else body


def test_ct2_reader_reads_variables_and_aliases(tmp_path):
    (tmp_path / "m.bin").write_bytes(_ct2_bytes())
    m = read_ct2_model(tmp_path / "m.bin")
    assert (m.spec, m.revision) == ("WhisperSpec", 3)
    assert m.variables["encoder/x"].tolist() == [1.0, -2.0]
    assert m.get("a").tolist() == [1.0, -2.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"version": 5}, "binary version 5"),
    ({"dtype": 9}, "unknown dtype"),
    ({"truncate": 9}, "truncated"),
])
def test_ct2_reader_rejects_what_it_cannot_read(tmp_path, kwargs, message):
    (tmp_path / "m.bin").write_bytes(_ct2_bytes(**kwargs))
    with pytest.raises(CT2FormatError, match=message):
        read_ct2_model(tmp_path / "m.bin")


# ---------------------------------------------------------------- front end


def test_log_mel_matches_faster_whisper():
    fe_mod = pytest.importorskip("faster_whisper.feature_extractor", reason="faster-whisper is a test extra")
    fe = fe_mod.FeatureExtractor()
    for name, x in _signals().items():
        ref = fe(x).T
        ours = log_mel(x).numpy()
        assert ours.shape == ref.shape, name
        np.testing.assert_allclose(ours, ref, atol=1e-4, err_msg=name)


def test_log_mel_matches_faster_whisper_on_real_speech():
    fe_mod = pytest.importorskip("faster_whisper.feature_extractor", reason="faster-whisper is a test extra")
    x = _real_clip()
    np.testing.assert_allclose(log_mel(x).numpy(), fe_mod.FeatureExtractor()(x).T, atol=1e-4)


# ---------------------------------------------------------------- encoder


def _ct2_dir(tmp_path, ct2_model) -> str:
    with open(tmp_path / "model.bin", "wb") as f:
        for p in wheel_parts():
            f.write(p.read_bytes())
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        (tmp_path / name).write_bytes((tokenizer_json().parent / name).read_bytes())
    return str(tmp_path)


def test_encoder_matches_ctranslate2(ct2, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is a test extra")
    ref_model = ctranslate2.models.Whisper(_ct2_dir(tmp_path, ct2), device="cpu", compute_type="float32")
    enc = load_encoder(ct2)
    inputs = [_signals()["digital silence around and inside"]]
    if (REAL / "manifest.jsonl").exists():  # real speech where ../shared is here
        inputs.append(_real_clip(0)[: 16000 * 6])
    for x in inputs:
        mel = log_mel(x)
        mel = mel[: mel.size(0) // 2 * 2]  # CTranslate2 wants an even frame count
        ref = np.array(ref_model.encode(ctranslate2.StorageView.from_array(mel.T[None].contiguous().numpy())))[0]
        with torch.inference_mode():
            ours = enc(mel[None])[0].numpy()
        assert ours.shape == ref.shape
        # float16 weights, float32 arithmetic on both sides: differences are accumulation order
        np.testing.assert_allclose(ours, ref, atol=2e-2 * np.abs(ref).max())
        assert np.abs(ours - ref).mean() < 1e-3


# ---------------------------------------------------------------- train, export, decode

TINY_TEXTS = ("打开空调", "我要查询话费", "明天下午三点")


@needs_espeak
@pytest.mark.parametrize("encoder_layers", [0, 1], ids=["frozen encoder", "own top encoder layer"])
def test_tiny_train_export_and_decode(ct2, tmp_path, random_model_dir, encoder_layers):
    """The whole chain on three espeak-ng sentences: cache Whisper's encoder outputs (or,
    for a head with its own copy of the top layer, the output below it), train a small
    CTC head until it has learnt them, write a model directory, load it as the final
    model of a two-pass recognizer and transcribe the audio through it."""
    chars = sorted({c for t in TINY_TEXTS for c in t})
    write_units(["<blank>", "<unk>"] + chars + ["<sos/eos>"], tmp_path / "units.txt")
    tok = Tokenizer.from_dir(tmp_path)
    utts = [Utterance(espeak(t, tmp_path / f"{i}.wav"), t, 2.0, f"u{i}") for i, t in enumerate(TINY_TEXTS)]
    encoder = load_encoder(ct2)
    below = len(encoder.layers) - encoder_layers if encoder_layers else None
    cache = cache_encoder_outputs(utts, tmp_path / "cache", encoder, layers=below)
    assert [u["id"] for u in cache_encoder_outputs(utts, tmp_path / "cache", encoder, layers=below).index] == [
        "u0", "u1", "u2"]
    with pytest.raises(ValueError, match="another number of encoder layers"):
        cache_encoder_outputs(utts, tmp_path / "cache", encoder, layers=2)

    cfg = HeadTrainConfig(layers=1, dropout=0.0, lr=3e-3, warmup=5, epochs=100, max_frames=4000, time_mask=0.0,
                          encoder_lr=5e-4)
    torch.manual_seed(0)
    head = CTCHead(HeadConfig(len(tok), 1, d_model=64, heads=2, ffn=128, dropout=0.0, encoder_layers=encoder_layers))
    head.copy_encoder_top(encoder)  # the copy starts as the pretrained top layer
    head = train_head([(cache, 1)], [cache], tok, cfg, tmp_path / "exp", head)
    assert greedy_cer(head, cache, tok) == 0.0

    model = WhisperCTC(head.cfg, encoder.dims)
    model.encoder.load_state_dict(encoder.state_dict())
    model.head.load_state_dict(head.state_dict())
    out = save_whisper_dir(tmp_path / "model", model, tmp_path, "tiny", first_pass=str(random_model_dir),
                           weights_dtype=torch.float32)
    assert load_whisper_dir(out).model.head.cfg.encoder_layers == encoder_layers
    rec = Recognizer.from_dir(out, "cpu", DecodingConfig(lm="none"), precision="fp32", final_precision="fp32")
    assert rec.final is not None and rec.name == "tiny"
    audios = [resample(torch.from_numpy(a[0]), rate, 16000).numpy() for a, rate in map(read_audio, (u.audio for u in utts))]
    hyps = [rec.transcribe(a).text for a in audios]
    assert cer(list(TINY_TEXTS), hyps) == 0.0
    assert [r.text for r in rec.transcribe_many(audios)] == hyps
    # a stream's final is the final model's pass over the utterance's audio
    audio, rate = audios[1], 16000
    s = rec.stream(rate)
    for piece in np.array_split(audio, 5):
        s.accept(piece)
    assert s.utterance_audio().size == audio.size
    first = s.end_utterance()
    assert first == rec.transcribe(audio, rate)
    # the next utterance keeps only the audio after the endpoint, and its times are stream times
    s.accept(audios[2])
    kept = s.utterance_audio()
    assert kept.size == audio.size + audios[2].size - round(s.utterance_start * rate)
    final = s.finalize()
    assert final.start >= s.utterance_start > 0
    assert final.tokens == tuple(
        dataclasses.replace(t, start=t.start + s.utterance_start, end=t.end + s.utterance_start)
        for t in rec.transcribe(kept, rate).tokens)


def test_head_with_its_own_top_encoder_layer():
    """A head with its own copy of the encoder's top layer reads the output below it: while
    the copy equals the pretrained layer, the model computes what the frozen-encoder head
    computes, padded batch rows included; once the copy is trained, the encoder output
    that Whisper's decoder reads stays the pretrained encoder's."""
    torch.manual_seed(0)
    dims = WhisperDims(d_model=64, heads=2, ffn=128, encoder_layers=3, max_source_positions=200)
    frozen = WhisperCTC(HeadConfig(20, 1, d_model=32, heads=2, ffn=64, dropout=0.0), dims).eval()
    own = WhisperCTC(HeadConfig(20, 1, d_model=32, heads=2, ffn=64, dropout=0.0, encoder_layers=1), dims).eval()
    own.encoder.load_state_dict(frozen.encoder.state_dict())
    missing, unexpected = own.head.load_state_dict(frozen.head.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("encoder_layers.", "encoder_norm.")) for k in missing)
    own.head.copy_encoder_top(frozen.encoder)
    mel = torch.randn(2, 150, 80)
    lens = torch.tensor([150, 97])  # 49 encoder frames: the last reads padding in both convolutions and the head
    mel[1, 97:] = 0  # padded as the recognizer pads
    with torch.inference_mode():
        enc0, lp0, n0 = frozen(mel, lens)
        enc1, lp1, n1 = own(mel, lens)
        assert n0.tolist() == n1.tolist() == [38, 25]
        torch.testing.assert_close(enc1, enc0)
        for i, n in enumerate(n0.tolist()):
            torch.testing.assert_close(lp1[i, :n], lp0[i, :n], atol=1e-5, rtol=1e-5)
        for model, lp in ((frozen, lp0), (own, lp1)):  # a padded row gives what it gives alone
            torch.testing.assert_close(model(mel[1:, :97], lens[1:])[1][0], lp[1, :25], atol=1e-5, rtol=1e-5)
        assert own(mel, lens, memory=False)[0] is None
        torch.testing.assert_close(own(mel, lens, memory=False)[1], lp1)
        for p in own.head.encoder_layers.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        enc2, lp2, _ = own(mel, lens)
    torch.testing.assert_close(enc2, enc0)
    assert (lp2[0] - lp0[0]).abs().max() > 1e-2


# ---------------------------------------------------------------- the shipped model

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.fixture(scope="module")
def shipped():
    if not is_whisper_dir(DEFAULT):
        pytest.skip("models/default is not a Whisper-CTC model")
    return load_whisper_dir(DEFAULT)


def _clips(n: int = 4) -> list[np.ndarray]:
    return [_real_clip(i) for i in range(n)]


@pytest.mark.parametrize("precision, max_dlogp, max_cer_loss", [("bf16", 0.02, 0.01), ("int8", 0.1, 0.03)])
def test_reduced_precisions_match_fp32(shipped, precision, max_dlogp, max_cer_loss):
    """bf16 and int8 (the CPU defaults with and without native bf16) against fp32 on real
    speech: per frame, the log-probability of fp32's best unit moves by at most
    `max_dlogp` on average, and greedy decoding loses at most `max_cer_loss` of CER
    against the references. (int8 changes ~10% of a greedy transcript's characters on
    real speech, where greedy CER is ~34%: different errors, barely more of them.)"""
    clips = _clips(12)  # skips without the real eval set
    lines = (REAL / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    truth = [normalize_text(json.loads(line)["text"]) for line in lines]
    dev = torch.device("cpu")
    ref = WhisperRecognizer(shipped, dev, DecodingConfig(lm="none"), "fp32")
    low = WhisperRecognizer(shipped, dev, DecodingConfig(lm="none"), precision)
    mels = [log_mel(x) for x in clips]
    for (_, a), (_, b) in zip(ref.encode(mels), low.encode(mels)):
        best = a.argmax(-1)[:, None]
        assert (a.gather(1, best) - b.gather(1, best)).abs().mean() < max_dlogp
    cers = [cer(truth, [r.text for r in rec.transcribe_many(clips)]) for rec in (ref, low)]
    assert cers[1] - cers[0] <= max_cer_loss


def test_auto_precision_follows_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_whisper_precision("auto", cpu, native_bf16=True) == "bf16"
    assert resolve_whisper_precision("auto", cpu, native_bf16=False) == "int8"
    assert resolve_whisper_precision("auto", torch.device("cuda"), native_bf16=False) == "fp16"
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        resolve_whisper_precision("fp16", cpu, native_bf16=True)


def test_batched_passes_equal_single_ones(shipped):
    """transcribe_many pads a batch and masks the padding: each result is transcribe's."""
    rec = WhisperRecognizer(shipped, torch.device("cpu"), DecodingConfig(lm="none"), "fp32")
    clips = _clips(3) + [_clips(1)[0][:8000]]
    one = [rec.transcribe(x) for x in clips]
    many = rec.transcribe_many(clips)
    assert [r.text for r in many] == [r.text for r in one]
    for a, b in zip(many, one):
        assert [t.start for t in a.tokens] == [t.start for t in b.tokens]


def test_long_audio_is_cut_at_quiet_moments(shipped):
    """Past the encoder's 30 s, audio is decoded in pieces cut where it is quietest."""
    clips = _clips(6)
    gap = np.zeros(8000, np.float32)
    long = np.concatenate([c for x in clips for c in (x, gap)])
    assert long.size / 16000 > MAX_SEGMENT_S
    cuts = quiet_cuts(long)
    assert len(cuts) >= 2 and cuts[0][0] == 0 and cuts[-1][1] == long.size
    assert all(b - a <= MAX_SEGMENT_S * 16000 for a, b in cuts)
    for a, _ in cuts[1:]:  # in a gap between clips: silence
        assert np.abs(long[a - 400 : a + 400]).max() == 0
    rec = WhisperRecognizer(shipped, torch.device("cpu"), DecodingConfig(lm="none"), "fp32")
    whole = rec.transcribe(long)
    pieces = [rec.transcribe(long[a:b]) for a, b in cuts]
    assert whole.text == "".join(p.text for p in pieces)
    assert whole.tokens[-1].start > 28.0
