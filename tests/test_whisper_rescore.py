"""Whisper's decoder as the attention rescorer of Whisper-CTC finals: the pruned
vocabulary, byte fallback, scores on real speech, reduced precisions, the model
directory, the recognizer's use of it, and the engine shedding it under load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.audio import read_audio
from asr.checkpoint import ModelDirError
from asr.config import DecodingConfig
from asr.data.normalize import normalize_text
from asr.metrics import cer
from asr.recognizer import Recognizer
from asr.whisper.bundle import is_whisper_dir, load_whisper_dir
from asr.whisper.convert import load_decoder, load_encoder, tokenizer_json
from asr.whisper.features import log_mel
from asr.whisper.recognizer import WhisperRecognizer
from asr.whisper.rescore import (EOT, PROMPT, PrefixTree, RescoreConfig, WhisperRescorer, byte_level_tokenizer,
                                 kept_vocabulary, prune_decoder)
from server.batcher import MAX_BUSY_FOR_LATE_PASSES, MAX_BUSY_FOR_RESCORING, Batcher
from server.session import FinalRequest

from .conftest import SHARED

REAL = SHARED / "data" / "real_zh" / "eval"
DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.fixture(scope="module")
def shipped():
    if not is_whisper_dir(DEFAULT) or not (DEFAULT / "decoder.safetensors").exists():
        pytest.skip("models/default ships no Whisper rescorer")
    return load_whisper_dir(DEFAULT)


def _real(n: int) -> list[tuple[np.ndarray, str]]:
    if not (REAL / "manifest.jsonl").exists():
        pytest.skip(f"needs the real eval set ({REAL})")
    out = []
    for line in (REAL / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:n]:
        d = json.loads(line)
        x, sr = read_audio(REAL / d["audio"])
        assert sr == 16000
        out.append((x[0], normalize_text(d["text"])))
    return out


def test_pruned_decoder_keeps_the_full_decoders_scores(ct2):
    """On the kept tokens the pruned decoder's log-probs are the full decoder's, up to one
    normalising constant per position (its softmax runs over the kept set only)."""
    bpe = byte_level_tokenizer(tokenizer_json())
    keep = kept_vocabulary(bpe, ["我要查询话费", "明天下午三点"])
    assert set(PROMPT) | {EOT} <= set(keep) and len(keep) < 400
    full = load_decoder(ct2)
    small = prune_decoder(full, keep)
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        enc = load_encoder(ct2)(log_mel((rng.standard_normal(32000) * 0.05).astype(np.float32))[None])
        ids = list(PROMPT) + bpe.encode("我要查询话费").ids
        a = full(torch.tensor([ids]), enc)[0][:, keep]
        b = small(torch.tensor([[keep.index(i) for i in ids]]), enc)[0]
    shift = a - b
    assert (shift - shift[:, :1]).abs().max() < 1e-4
    assert (shift <= 1e-6).all()  # the full softmax spreads mass over more tokens


def test_prefix_tree_scores_equal_one_row_per_hypothesis(ct2):
    """Hypotheses run as one prefix tree (shared prefixes once) score what each gets in a
    row of its own, teacher-forced with the causal mask."""
    bpe = byte_level_tokenizer(tokenizer_json())
    texts = ["我要查询话费", "我要查询话费吗", "我要查一下话费", "你要查询话费", "我"]
    keep = kept_vocabulary(bpe, texts)
    rescorer = WhisperRescorer(prune_decoder(load_decoder(ct2), keep), keep, bpe, RescoreConfig())
    tree = PrefixTree([[1, 2, 3], [1, 2, 4], [1, 5], [1, 2, 3, 6]])
    assert tree.tokens == [1, 2, 3, 4, 5, 6] and tree.parents == [-1, 0, 1, 1, 0, 2]
    assert tree.depths == [0, 1, 2, 2, 1, 3] and tree.paths[3] == [0, 1, 2, 5]
    assert tree.mask()[5].tolist() == [True, True, True, False, False, True]
    rng = np.random.default_rng(1)
    with torch.inference_mode():
        enc = load_encoder(ct2)(log_mel((rng.standard_normal(48000) * 0.05).astype(np.float32))[None])[0]
        got = rescorer.scores(enc, texts)
        for text, score in zip(texts, got):
            seq = rescorer.prompt + rescorer.token_ids(text) + [rescorer.eot]
            logp = rescorer.decoder(torch.tensor([seq[:-1]]), enc[None])[0]
            p = len(rescorer.prompt)
            assert score == pytest.approx(float(logp[torch.arange(p - 1, len(seq) - 1), torch.tensor(seq[p:])].sum()),
                                          abs=1e-3)


def test_unkept_tokens_are_spelled_as_bytes(ct2):
    bpe = byte_level_tokenizer(tokenizer_json())
    keep = kept_vocabulary(bpe, ["话费"])
    rescorer = WhisperRescorer(prune_decoder(load_decoder(ct2), keep), keep, bpe, RescoreConfig())
    for text in ("明天下午三点", "话费 iPhone 15"):
        ids = rescorer.token_ids(text)
        assert bpe.decode([keep[i] for i in ids]) == text
    assert len(rescorer.token_ids("明天")) > len(bpe.encode("明天").ids)  # bytes, not merged tokens


def test_decoder_prefers_the_reference_on_real_speech(shipped):
    """Whisper's decoder scores each real utterance's reference above the same sentence
    with one character replaced by a homophone-free other one, for nearly all of them."""
    rec = WhisperRecognizer(shipped, torch.device("cpu"), DecodingConfig(), "fp32")
    wins = 0
    clips = _real(12)
    for x, ref in clips:
        enc, _ = rec.encode([log_mel(x)])[0]
        k = len(ref) // 2
        wrong = ref[:k] + ("的" if ref[k] != "的" else "了") + ref[k + 1:]
        good, bad = rec.rescorer.scores(enc, [ref, wrong])
        wins += good > bad
    assert wins >= len(clips) - 1


def test_rescoring_lowers_cer_on_real_speech(shipped):
    """The shipped rescorer (on by default) against the same search without it, on real
    eval clips: fewer errors, and results say how they were made."""
    clips = _real(30)
    refs = [t for _, t in clips]
    on = WhisperRecognizer(shipped, torch.device("cpu"), DecodingConfig(), "bf16", native_bf16=True)
    off = WhisperRecognizer(shipped, torch.device("cpu"), DecodingConfig(rescoring=False), "bf16", native_bf16=True)
    assert on.rescorer is not None and off.rescorer is None
    res_on = on.transcribe_many([x for x, _ in clips])
    res_off = off.transcribe_many([x for x, _ in clips])
    assert res_on[0].options["decoding"] == "attention_rescoring"
    assert res_off[0].options["decoding"] == "prefix_beam"
    assert cer(refs, [r.text for r in res_on]) < cer(refs, [r.text for r in res_off])
    assert [on.transcribe(x).text for x, _ in clips[:3]] == [r.text for r in res_on[:3]]  # batched == single


@pytest.mark.parametrize("precision, max_dscore, max_cer_loss", [("bf16", 1.5, 0.01), ("int8", 6.0, 0.02)])
def test_reduced_precision_decoder_scores_match_fp32(shipped, precision, max_dscore, max_cer_loss):
    """Decoder scores at bf16 / int8, relative to the first hypothesis', stay within
    `max_dscore` nats of fp32's (measured on these clips: at most 0.96 for bf16, 4.1 for
    int8, whose encoder output differs too), and the hypotheses the combined score picks
    (as served) lose at most `max_cer_loss` of CER against fp32's picks: near-ties between
    one-character variants may flip either way. (On 60 real clips int8 rescoring took CER
    from 28.4% to 26.3%, bf16 from 26.9% to 25.2%.)"""
    ref = WhisperRecognizer(shipped, torch.device("cpu"), DecodingConfig(), "fp32")
    low = WhisperRecognizer(shipped, torch.device("cpu"), DecodingConfig(), precision)
    clips = _real(8)
    picks: dict[str, list[str]] = {"ref": [], "low": []}
    for x, _ in clips:
        mel = log_mel(x)
        (enc, logp), (enc_low, _) = ref.encode([mel])[0], low.encode([mel])[0]
        hyps = ref.nbest(logp)[:5]
        texts = [ref.tokenizer.decode(h.tokens) for h in hyps]
        ctc = np.array([h.score for h in hyps]) * ref.rescorer.cfg.ctc_weight
        a = np.array(ref.rescorer.scores(enc, texts))
        with low._cast():
            b = np.array(low.rescorer.scores(enc_low, texts))
        # what ranks hypotheses: their scores relative to the first one's
        assert np.abs((a - a[0]) - (b - b[0])).max() < max_dscore
        picks["ref"].append(texts[int((a + ctc).argmax())])
        picks["low"].append(texts[int((b + ctc).argmax())])
    refs = [t for _, t in clips]
    assert cer(refs, picks["low"]) - cer(refs, picks["ref"]) <= max_cer_loss


def test_rescoring_can_be_turned_off_and_a_broken_section_is_refused(shipped, tmp_path):
    with pytest.raises(ValueError, match="ships no decoder"):
        bare = load_whisper_dir(DEFAULT)
        bare.rescorer = None
        WhisperRecognizer(bare, torch.device("cpu"), DecodingConfig(rescoring=True), "fp32")
    model = tmp_path / "model"
    shutil.copytree(DEFAULT, model, ignore=shutil.ignore_patterns("lm.*"))
    config = json.loads((model / "config.json").read_text())
    config.pop("lm", None)
    for k in [k for k in config["files"] if k.startswith("lm.")]:
        del config["files"][k]
    del config["files"]["whisper-tokenizer.json"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="does not list whisper-tokenizer.json"):
        load_whisper_dir(model)


async def test_busy_engine_sheds_rescoring_before_the_full_pass():
    """final_pass auto with a rescoring model: a busy worker runs the full pass without
    its rescoring ("unrescored", counted), a quiet one runs the whole of it."""
    if not is_whisper_dir(DEFAULT) or not (DEFAULT / "decoder.safetensors").exists():
        pytest.skip("models/default ships no Whisper rescorer")
    rec = Recognizer.from_dir(DEFAULT, device="cpu")
    assert rec.rescores_full_passes
    audio, _ = _real(1)[0]
    full, plain = rec.transcribe(audio), rec.transcribe(audio, rescoring=False)
    assert full.options["decoding"] == "attention_rescoring" and plain.options["decoding"] == "prefix_beam"
    busy_levels = ((0.5, "full", full), ((MAX_BUSY_FOR_RESCORING + MAX_BUSY_FOR_LATE_PASSES) / 2, "unrescored", plain))
    for busy, label, want in busy_levels:
        engine = Batcher(rec, max_wait_ms=1, final_pass_max_wait_ms=60_000)
        await engine.start()
        try:
            engine.step_fraction = lambda now: 0.1
            engine.busy_fraction = lambda now, window=None, v=busy: v
            stream = rec.stream()
            stream.accept(audio)
            req = FinalRequest(0, stream, audio, 16000, 0.0, True)
            got = await engine.submit(req)
        finally:
            await engine.close()
        assert req.produced_by == label and got.options["decoding"] == want.options["decoding"]
        assert got.text == want.text and engine.passes_skipped == 0
