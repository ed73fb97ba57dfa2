"""WeNet import: numeric parity with WeNet on the tiny fixture, both train.yaml layouts,
key whitelisting, CMVN sources, sos/eos placement, other architectures, rescoring."""

from __future__ import annotations

import json
import math
import shutil
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
import yaml
from websockets.asyncio.client import connect

from asr.checkpoint import ModelDirError, load_model_dir, save_model_dir
from asr.config import ChunkConfig, DecoderConfig, DecodingConfig
from asr.decoding import make_decoder
from asr.features import StreamingFbank, fbank
from asr.importers.wenet import WenetImportError, import_wenet, load_cmvn_file
from asr.model.decoder import build_decoder
from asr.recognizer import Recognizer
from server.app import App
from server.settings import Settings
from tingxie import cli

from .conftest import random_model, speech_like, units

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wenet-tiny"
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "final.pt").exists(),
    reason=f"WeNet reference fixture not found at {FIXTURE} (it lives in the project workspace, not in the repo)",
)
ATOL = 1e-4
RESCORE = DecodingConfig("prefix_beam", rescoring=True, ctc_weight=0.3, reverse_weight=0.3)  # as the reference
STREAM_REFS = {
    "full": (None, -1, "ref_logp_full.npy"),
    "stream_chunk4_left-1": (4, -1, "ref_logp_stream_chunk4_left-1.npy"),
    "stream_chunk4_left2": (4, 2, "ref_logp_stream_chunk4_left2.npy"),
}


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is faster than two fighting over a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURE / "reference_meta.json").read_text())


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return read_wav(FIXTURE / "input.wav")


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    if not (FIXTURE / "final.pt").exists():
        pytest.skip(f"WeNet reference fixture not found at {FIXTURE}")
    dst = tmp_path_factory.mktemp("wenet") / "tiny"
    assert cli.main(["import-wenet", str(FIXTURE), str(dst), "--chunk-size", "4"]) == 0
    return dst


@pytest.fixture(scope="module")
def rec(imported) -> Recognizer:
    return Recognizer.from_dir(imported, "cpu", RESCORE)


def bundle_copy(tmp: Path, state: dict | None = None, yaml_name: str = "train.yaml", edit=None) -> Path:
    """The fixture bundle in tmp, optionally with another state dict or an edited yaml."""
    src = tmp / "bundle"
    src.mkdir()
    for f in ("units.txt", "global_cmvn"):
        shutil.copy(FIXTURE / f, src / f)
    cfg = yaml.safe_load((FIXTURE / yaml_name).read_text())
    if edit is not None:
        edit(cfg)
    (src / "train.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    if state is None:
        shutil.copy(FIXTURE / "final.pt", src / "final.pt")
    else:
        torch.save(state, src / "final.pt")
    return src


def fixture_state() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE / "final.pt", map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- parity with WeNet


@needs_fixture
@pytest.mark.parametrize("mode", list(STREAM_REFS))
def test_ctc_logprobs_match_wenet(rec, audio, mode):
    chunk, left, ref_file = STREAM_REFS[mode]
    logp = rec.ctc_logprobs(audio, 16000, chunk, left).numpy()
    ref = np.load(FIXTURE / ref_file)
    assert logp.shape == ref.shape
    assert np.abs(logp - ref).max() <= ATOL


@needs_fixture
@pytest.mark.parametrize("mode", ["full", "stream_chunk4_left-1"])
def test_decoding_matches_wenet(rec, audio, meta, mode):
    ref = meta["decode"][mode]
    chunk, left, _ = STREAM_REFS[mode]
    enc, logp = rec.encode(audio, 16000, chunk, left)
    greedy = make_decoder("greedy")
    greedy.advance(logp)
    assert list(greedy.best().tokens) == ref["ctc_greedy_search"]
    beam = make_decoder("prefix_beam", 10)
    beam.advance(logp)
    nbest = beam.nbest()
    assert [list(h.tokens) for h in nbest] == ref["ctc_prefix_beam_search_nbest"]
    assert np.allclose([h.score for h in nbest], ref["ctc_prefix_beam_search_nbest_scores"], atol=ATOL)
    best = rec.rescore(nbest, enc)[0]
    assert list(best.tokens) == ref["attention_rescoring"]
    assert abs(best.score - ref["attention_rescoring_score"]) <= ATOL


def with_digital_silence(audio: np.ndarray) -> np.ndarray:
    """The fixture's audio with exact zeros before, inside and after it (padded clips,
    telephony gaps, TTS prompts)."""
    z = np.zeros
    half = audio.size // 2
    return np.concatenate([z(8000, np.int16), audio[:half], z(11111, np.int16), audio[half:], z(9600, np.int16)])


def wenet_fbank(audio: np.ndarray) -> torch.Tensor:
    """Features as WeNet computes them: torchaudio's normalised waveform scaled back by
    1 << 15, then kaldi.fbank with the yaml's settings, dither 0 and energy_floor 0."""
    waveform = torch.from_numpy(audio.astype(np.float32) / 32768.0)[None] * (1 << 15)
    return kaldi.fbank(waveform, num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0,
                       energy_floor=0.0, sample_frequency=16000)


@needs_fixture
def test_imported_features_are_wenets_bit_for_bit_on_digital_silence(rec, audio):
    x = with_digital_silence(audio)
    ref = wenet_fbank(x)
    assert (ref == math.log(torch.finfo(torch.float32).eps)).all(dim=1).sum() > 100  # silent frames at the floor
    assert rec.features.noise_floor == 0.0
    assert torch.equal(fbank(torch.from_numpy(x), rec.features), ref)
    stream = StreamingFbank(rec.features)
    pieces = [stream.accept(torch.from_numpy(x[i : i + 777])) for i in range(0, x.size, 777)]
    assert torch.equal(torch.cat(pieces), ref)


@needs_fixture
@pytest.mark.parametrize("mode", list(STREAM_REFS))
def test_logprobs_on_digital_silence_are_those_of_wenets_features(rec, audio, mode):
    """From the waveform, the imported model gives exactly what it gives on WeNet's own
    fbank (on which it matches WeNet's log-probs: test_ctc_logprobs_match_wenet)."""
    chunk, left, _ = STREAM_REFS[mode]
    x = with_digital_silence(audio)
    expect = rec._logprobs(wenet_fbank(x), chunk, left)
    assert torch.equal(rec.ctc_logprobs(x, 16000, chunk, left), expect)
    # A noise floor (tingxie's own models) would move those frames far from WeNet's.
    floored = rec._logprobs(fbank(torch.from_numpy(x), replace(rec.features, noise_floor=1.0)), chunk, left)
    assert (floored - expect).abs().max() > 0.1


@needs_fixture
def test_transcribe_and_stream_finals_are_rescored_like_wenet(imported, audio, meta):
    full = Recognizer.from_dir(imported, "cpu", RESCORE).transcribe(audio, 16000)
    assert [t.id for t in full.tokens] == meta["decode"]["full"]["attention_rescoring"]
    assert abs(full.nbest[0][1] - meta["decode"]["full"]["attention_rescoring_score"]) <= ATOL
    assert full.options["decoding"] == "attention_rescoring"

    streamed = Recognizer.from_dir(imported, "cpu", RESCORE, ChunkConfig(4, -1))
    s = streamed.stream(16000)
    for i in range(0, audio.size, 1234):  # odd piece sizes: same encoder output as one piece
        s.accept(audio[i : i + 1234])
    final = s.finalize()
    ref = meta["decode"]["stream_chunk4_left-1"]
    assert [t.id for t in final.tokens] == ref["attention_rescoring"]
    assert abs(final.nbest[0][1] - ref["attention_rescoring_score"]) <= ATOL

    # Rescoring off (per stream / per call): plain CTC results.
    plain = streamed.stream(16000, rescoring=False)
    plain.accept(audio)
    assert [t.id for t in plain.finalize().tokens] == ref["ctc_prefix_beam_search"]
    whole = streamed.transcribe(audio, 16000, rescoring=False)
    assert [t.id for t in whole.tokens] == meta["decode"]["full"]["ctc_prefix_beam_search"]
    greedy = Recognizer.from_dir(imported, "cpu", DecodingConfig("greedy"), ChunkConfig(4, -1))
    g = greedy.stream(16000)
    g.accept(audio)
    assert [t.id for t in g.finalize().tokens] == ref["ctc_greedy_search"]
    assert greedy.transcribe(audio, 16000).text == meta["decode"]["full"]["ctc_greedy_text"]
    with pytest.raises(ValueError, match="keep its encoder output"):
        streamed.rescore(plain)


@needs_fixture
def test_transcribe_command_rescores(imported, capsys):
    wav = FIXTURE / "input.wav"
    expect = Recognizer.from_dir(imported, "cpu", DecodingConfig("prefix_beam", rescoring=True)).transcribe(
        read_wav(wav), 16000
    )
    rc = cli.main(["transcribe", "--model", str(imported), "--rescoring", "--decoding", "prefix_beam", "--json", "--precision", "fp32",
                   "--no-progress", "--threads", "1", "--punctuation", "off", "--itn", "off", str(wav)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["options"]["decoding"] == "attention_rescoring"
    assert out["text"] == expect.text and expect.text


@needs_fixture
def test_both_yaml_layouts_give_identical_models(imported, tmp_path, audio):
    dst = tmp_path / "v2"
    assert cli.main(["import-wenet", str(FIXTURE), str(dst), "--config", str(FIXTURE / "train_v2_style.yaml"),
                     "--chunk-size", "4"]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (imported, dst))
    assert a["extra"]["source"]["layout"] == "v3" and b["extra"]["source"]["layout"] == "v2"
    for key in ("model", "features", "streaming", "decoder"):
        assert a[key] == b[key]
    for f in ("model.safetensors", "decoder.safetensors", "cmvn.json", "units.txt"):
        assert (imported / f).read_bytes() == (dst / f).read_bytes(), f
    r1, r2 = (Recognizer.from_dir(d, "cpu", RESCORE) for d in (imported, dst))
    assert torch.equal(r1.ctc_logprobs(audio), r2.ctc_logprobs(audio))
    assert r1.transcribe(audio).nbest == r2.transcribe(audio).nbest


# ---------------------------------------------------------------- key whitelist, CMVN, sos/eos


@needs_fixture
@pytest.mark.parametrize(
    "change,message",
    [
        ("extra", "unexpected tensors ['encoder.encoders.0.self_attn.linear_extra.weight']"),
        ("missing", "missing tensors ['encoder.encoders.1.conv_module.depthwise_conv.weight']"),
        ("shape", "decoder.left_decoder.output_layer.bias has shape (49,)"),
        ("missing_decoder", "missing tensors ['decoder.right_decoder.after_norm.bias'"),
    ],
)
def test_corrupt_checkpoints_are_named(tmp_path, change, message):
    state = fixture_state()
    if change == "extra":
        state["encoder.encoders.0.self_attn.linear_extra.weight"] = torch.zeros(64, 64)
    elif change == "missing":
        del state["encoder.encoders.1.conv_module.depthwise_conv.weight"]
    elif change == "shape":
        state["decoder.left_decoder.output_layer.bias"] = torch.zeros(49)
    else:
        for k in [k for k in state if k.startswith("decoder.right_decoder.")]:
            del state[k]
    with pytest.raises(WenetImportError) as err:
        import_wenet(bundle_copy(tmp_path, state), tmp_path / "out")
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()
    # The CLI reports it as an error, not a traceback.
    assert cli.main(["import-wenet", str(tmp_path / "bundle"), str(tmp_path / "out")]) == 2


@needs_fixture
def test_pe_buffers_and_concat_linear_are_accepted_and_ignored(tmp_path, imported):
    state = fixture_state()
    d = 64
    pe = torch.zeros(1, 5000, d)
    state["encoder.embed.pos_enc.pe"] = pe
    state["decoder.left_decoder.embed.1.pe"] = pe
    state["decoder.right_decoder.embed.1.pe"] = pe
    for n in range(2):
        state[f"encoder.encoders.{n}.concat_linear.weight"] = torch.randn(d, 2 * d)
        state[f"encoder.encoders.{n}.concat_linear.bias"] = torch.randn(d)
    for side in ("left", "right"):
        for j in (1, 2):
            state[f"decoder.{side}_decoder.decoders.0.concat_linear{j}.weight"] = torch.randn(d, 2 * d)
            state[f"decoder.{side}_decoder.decoders.0.concat_linear{j}.bias"] = torch.randn(d)
    report = import_wenet(bundle_copy(tmp_path, state), tmp_path / "out")
    assert len(report.ignored_keys) == 3 + 4 + 8
    for f in ("model.safetensors", "decoder.safetensors", "cmvn.json"):
        assert (imported / f).read_bytes() == (tmp_path / "out" / f).read_bytes()
    # A concat_linear of the wrong shape is not silently dropped.
    state["encoder.encoders.0.concat_linear.bias"] = torch.zeros(3)
    shutil.rmtree(tmp_path / "bundle")
    with pytest.raises(WenetImportError, match=r"concat_linear.bias has shape \(3,\)"):
        import_wenet(bundle_copy(tmp_path, state), tmp_path / "out2")


@needs_fixture
@pytest.mark.parametrize("kind", ["json", "kaldi"])
def test_cmvn_from_stats_file_when_the_checkpoint_has_none(tmp_path, imported, kind):
    state = fixture_state()
    del state["encoder.global_cmvn.mean"], state["encoder.global_cmvn.istd"]

    def edit(cfg):
        if kind == "kaldi":
            cfg["cmvn_file"], cfg["is_json_cmvn"] = "data/train/cmvn.ark", False

    src = bundle_copy(tmp_path, state, "train_v2_style.yaml", edit)
    if kind == "kaldi":
        stats = json.loads((FIXTURE / "global_cmvn").read_text())
        row1 = " ".join(repr(x) for x in stats["mean_stat"]) + f" {stats['frame_num']!r}"
        row2 = " ".join(repr(x) for x in stats["var_stat"]) + " 0"
        (src / "cmvn.ark").write_text(f" [\n  {row1}\n  {row2} ]\n")
    report = import_wenet(src, tmp_path / "out")
    assert report.cmvn_source == ("file global_cmvn" if kind == "json" else "file cmvn.ark")
    assert json.loads((tmp_path / "out" / "cmvn.json").read_text()) == json.loads((imported / "cmvn.json").read_text())


@needs_fixture
def test_checkpoint_cmvn_wins_and_missing_stats_are_an_error(tmp_path, imported):
    src = bundle_copy(tmp_path)
    (src / "global_cmvn").write_text(json.dumps({"mean_stat": [0.0] * 80, "var_stat": [1.0] * 80, "frame_num": 1}))
    report = import_wenet(src, tmp_path / "out")
    assert report.cmvn_source == "checkpoint" and any("differs" in n for n in report.notes)
    assert (tmp_path / "out" / "cmvn.json").read_bytes() == (imported / "cmvn.json").read_bytes()

    state = fixture_state()
    del state["encoder.global_cmvn.mean"], state["encoder.global_cmvn.istd"]
    shutil.rmtree(src)
    src = bundle_copy(tmp_path, state)
    (src / "global_cmvn").unlink()
    with pytest.raises(WenetImportError, match="neither .* nor the checkpoint"):
        import_wenet(src, tmp_path / "out2")


@needs_fixture
def test_sos_eos_at_id_2_and_words_txt(tmp_path, rec, audio):
    """A dictionary with <sos/eos> at id 2 (new aishell recipes): the same model with its
    units renumbered gives the same text and scores."""
    old = [line.split()[0] for line in (FIXTURE / "units.txt").read_text(encoding="utf-8").splitlines()]
    assert old[-1] == "<sos/eos>"
    new = old[:2] + [old[-1]] + old[2:-1]
    perm = torch.tensor([old.index(u) for u in new])  # new id -> old id
    state = fixture_state()
    for k in list(state):
        if k.startswith("ctc.ctc_lo.") or k.endswith("output_layer.weight") or k.endswith("output_layer.bias") \
                or k.endswith("embed.0.weight"):
            state[k] = state[k][perm].clone()

    def edit(cfg):
        cfg["tokenizer_conf"]["special_tokens"].update({"<sos>": 2, "<eos>": 2})

    src = bundle_copy(tmp_path, state, edit=edit)
    (src / "units.txt").unlink()
    (src / "words.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(new)), encoding="utf-8")
    import_wenet(src, tmp_path / "out")
    other = Recognizer.from_dir(tmp_path / "out", "cpu", RESCORE)
    assert other.decoder.cfg.sos == other.decoder.cfg.eos == 2
    a, b = rec.transcribe(audio), other.transcribe(audio)
    assert a.text == b.text
    assert np.allclose([s for _, s in a.nbest], [s for _, s in b.nbest], atol=ATOL)


@needs_fixture
def test_ctc_only_import_and_existing_destination(tmp_path, audio, rec):
    out = tmp_path / "ctc"
    assert cli.main(["import-wenet", str(FIXTURE), str(out), "--ctc-only"]) == 0
    bundle = load_model_dir(out)
    assert bundle.decoder is None and not (out / "decoder.safetensors").exists()
    ctc_rec = Recognizer(bundle, "cpu")
    assert torch.equal(ctc_rec.ctc_logprobs(audio), rec.ctc_logprobs(audio))
    with pytest.raises(ValueError, match="needs an attention decoder"):
        ctc_rec.stream(16000, rescoring=True)
    with pytest.raises(WenetImportError, match="not empty"):
        import_wenet(FIXTURE, out)
    import_wenet(FIXTURE, out, overwrite=True)
    assert load_model_dir(out).decoder is not None


@needs_fixture
def test_decoder_file_is_checksummed(imported, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(imported, copy)
    data = bytearray((copy / "decoder.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "decoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="checksum mismatch for decoder.safetensors"):
        load_model_dir(copy)


# ---------------------------------------------------------------- other architectures


def wenet_state_dict(
    d: int, h: int, ff: int, blocks: int, kernel: int, vocab: int, input_layer: str, norm: str,
    decoder: str, dec_blocks: int, r_blocks: int, seed: int,
) -> dict[str, torch.Tensor]:
    """A random checkpoint written from the key table of the WeNet format guide."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=None):
        fan_in = shape[-1] if len(shape) == 2 else (math.prod(shape[1:]) if len(shape) > 1 else 1)
        return torch.randn(*shape, generator=g) * (scale if scale is not None else 1 / math.sqrt(fan_in))

    def ln(prefix):
        return {f"{prefix}.weight": 1 + rnd(d, scale=0.1), f"{prefix}.bias": rnd(d, scale=0.1)}

    def lin(prefix, out, inp, bias=True):
        return {f"{prefix}.weight": rnd(out, inp), **({f"{prefix}.bias": rnd(out, scale=0.1)} if bias else {})}

    def conv(prefix, *shape):  # weight (out, in, *kernel) and bias (out,)
        return {f"{prefix}.weight": rnd(*shape), f"{prefix}.bias": rnd(shape[0], scale=0.1)}

    f = (80 - 1) // 2
    s = {"encoder.global_cmvn.mean": 10 + rnd(80, scale=2.0),
         "encoder.global_cmvn.istd": 0.2 + 0.3 * torch.rand(80, generator=g)}
    s.update(conv("encoder.embed.conv.0", d, 1, 3, 3))
    if input_layer == "conv2d":
        s.update(conv("encoder.embed.conv.2", d, d, 3, 3))
        s.update(lin("encoder.embed.out.0", d, d * ((f - 1) // 2)))
    elif input_layer == "conv2d6":
        s.update(conv("encoder.embed.conv.2", d, d, 5, 5))
        s.update(lin("encoder.embed.linear", d, d * 12))
    else:
        s.update(conv("encoder.embed.conv.2", d, d, 3, 3))
        s.update(conv("encoder.embed.conv.4", d, d, 3, 3))
        s.update(lin("encoder.embed.linear", d, d * 9))
    for n in range(blocks):
        e = f"encoder.encoders.{n}"
        for p in "qkv":
            s.update(lin(f"{e}.self_attn.linear_{p}", d, d))
        s.update(lin(f"{e}.self_attn.linear_out", d, d))
        s.update(lin(f"{e}.self_attn.linear_pos", d, d, bias=False))
        s[f"{e}.self_attn.pos_bias_u"] = rnd(h, d // h, scale=0.2)
        s[f"{e}.self_attn.pos_bias_v"] = rnd(h, d // h, scale=0.2)
        for ffn in ("feed_forward", "feed_forward_macaron"):
            s.update(lin(f"{e}.{ffn}.w_1", ff, d))
            s.update(lin(f"{e}.{ffn}.w_2", d, ff))
        s.update(conv(f"{e}.conv_module.pointwise_conv1", 2 * d, d, 1))
        s.update(conv(f"{e}.conv_module.depthwise_conv", d, 1, kernel))
        s.update(ln(f"{e}.conv_module.norm"))
        if norm == "batch_norm":
            s[f"{e}.conv_module.norm.running_mean"] = rnd(d, scale=0.1)
            s[f"{e}.conv_module.norm.running_var"] = 0.5 + torch.rand(d, generator=g)
            s[f"{e}.conv_module.norm.num_batches_tracked"] = torch.tensor(1000)
        s.update(conv(f"{e}.conv_module.pointwise_conv2", d, d, 1))
        for nm in ("ff_macaron", "mha", "conv", "ff", "final"):
            s.update(ln(f"{e}.norm_{nm}"))
    s.update(ln("encoder.after_norm"))
    s.update(lin("ctc.ctc_lo", vocab, d))
    sides = {"bitransformer": [("decoder.left_decoder", dec_blocks), ("decoder.right_decoder", r_blocks)],
             "transformer": [("decoder", dec_blocks)]}[decoder]
    for prefix, nblocks in sides:
        s[f"{prefix}.embed.0.weight"] = rnd(vocab, d, scale=1.0)
        s.update(ln(f"{prefix}.after_norm"))
        s.update(lin(f"{prefix}.output_layer", vocab, d))
        for m in range(nblocks):
            p = f"{prefix}.decoders.{m}"
            for att in ("self_attn", "src_attn"):
                for q in ("q", "k", "v", "out"):
                    s.update(lin(f"{p}.{att}.linear_{q}", d, d))
            s.update(lin(f"{p}.feed_forward.w_1", ff, d))
            s.update(lin(f"{p}.feed_forward.w_2", d, ff))
            for j in (1, 2, 3):
                s.update(ln(f"{p}.norm{j}"))
    return s


@pytest.mark.parametrize(
    "input_layer,causal,kernel,norm,decoder",
    [
        ("conv2d6", True, 8, "layer_norm", "bitransformer"),
        ("conv2d8", True, 5, "layer_norm", "transformer"),
        ("conv2d", False, 7, "batch_norm", "bitransformer"),
        ("conv2d", True, 15, "batch_norm", "transformer"),
    ],
)
def test_other_architectures_import_and_run(tmp_path, input_layer, causal, kernel, norm, decoder):
    d, h, ff, vocab = 32, 4, 64, len(units())
    state = wenet_state_dict(d, h, ff, 2, kernel, vocab, input_layer, norm, decoder, 2, 1, seed=kernel)
    src = tmp_path / "exp"
    src.mkdir()
    (src / "units.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(units())), encoding="utf-8")
    cfg = {
        "input_dim": 80, "output_dim": vocab, "is_json_cmvn": True, "cmvn_file": "data/train/global_cmvn",
        "encoder": "conformer",
        "encoder_conf": {"output_size": d, "attention_heads": h, "linear_units": ff, "num_blocks": 2,
                         "cnn_module_kernel": kernel, "input_layer": input_layer, "causal": causal,
                         "cnn_module_norm": norm, "pos_enc_layer_type": "rel_pos",
                         "selfattention_layer_type": "rel_selfattn", "activation_type": "swish",
                         "normalize_before": True, "use_cnn_module": True, "dropout_rate": 0.1,
                         "use_dynamic_chunk": True},
        "decoder": decoder,
        "decoder_conf": {"attention_heads": h, "linear_units": ff, "num_blocks": 2, "dropout_rate": 0.1,
                         **({"r_num_blocks": 1} if decoder == "bitransformer" else {})},
        "model_conf": {"ctc_weight": 0.3, "reverse_weight": 0.3 if decoder == "bitransformer" else 0.0},
        "dataset_conf": {"fbank_conf": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25, "dither": 1.0}},
    }
    (src / "train.yaml").write_text(yaml.safe_dump(cfg))
    torch.save(state, src / "avg_5.pt")
    report = import_wenet(src, tmp_path / "model")
    assert report.checkpoint.name == "avg_5.pt" and report.cmvn_source == "checkpoint"
    assert report.ignored_keys == ([f"encoder.encoders.{n}.conv_module.norm.num_batches_tracked" for n in range(2)]
                                   if norm == "batch_norm" else [])
    bundle = load_model_dir(tmp_path / "model")
    assert bundle.model.cfg.input_layer == input_layer and bundle.model.cfg.causal == causal
    assert bundle.decoder is not None and bundle.decoder.cfg.kind == decoder
    got = {**bundle.model.state_dict(), **{f"decoder.{k}": v for k, v in bundle.decoder.state_dict().items()}}
    for k, v in state.items():
        if not k.endswith("num_batches_tracked"):  # training bookkeeping, dropped
            assert torch.equal(got[k], v), k

    dec = DecodingConfig("prefix_beam", rescoring=True, ctc_weight=0.3, reverse_weight=0.3)
    rec = Recognizer(bundle, "cpu", dec, ChunkConfig(4, -1))
    audio = speech_like(0.8, seed=kernel)
    enc, logp = rec.encode(audio, 16000, 4, -1)
    feats = rec._features(audio, 16000)
    with torch.no_grad():
        masked, _ = bundle.model(feats[None], torch.tensor([feats.size(0)]), 4, -1)
    if causal:  # streaming == chunk-masked forward (a non-causal convolution sees the next chunk when masked)
        assert (logp - masked[0]).abs().max() <= ATOL
    assert logp.shape == masked[0].shape and torch.isfinite(logp).all()
    s = rec.stream(16000)
    s.accept(audio)
    final = s.finalize()
    nbest = make_decoder("prefix_beam", 10)
    nbest.advance(logp)
    assert final.nbest[0][1] == pytest.approx(rec.rescore(nbest.nbest(), enc)[0].score, abs=ATOL)
    assert math.isfinite(final.nbest[0][1])


def test_unsupported_settings_are_refused(tmp_path):
    src = tmp_path / "exp"
    src.mkdir()
    (src / "units.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(units())), encoding="utf-8")
    torch.save({}, src / "final.pt")
    base = {"output_dim": len(units()), "encoder_conf": {"output_size": 32}}
    for edit, message in [
        ({"encoder": "transformer"}, "encoder 'transformer' is not supported"),
        ({"encoder_conf": {"pos_enc_layer_type": "abs_pos"}}, "pos_enc_layer_type = 'abs_pos' is not supported"),
        ({"encoder_conf": {"some_new_switch": 1}}, "some_new_switch = 1 is not a setting"),
        ({"decoder": "transducer"}, "--ctc-only"),
        ({"output_dim": 7}, "33 units, but train.yaml has output_dim 7"),
    ]:
        (src / "train.yaml").write_text(yaml.safe_dump({**base, **edit}))
        with pytest.raises(WenetImportError, match=message.replace("(", r"\(").replace(")", r"\)")):
            import_wenet(src, tmp_path / "out")


def test_decoder_round_trips_through_model_dir_and_old_dirs_load(tmp_path, random_model_dir):
    assert load_model_dir(random_model_dir).decoder is None
    model = random_model()
    cfg = DecoderConfig(vocab_size=model.cfg.vocab_size, d_model=model.cfg.output_size, sos=model.cfg.vocab_size - 1,
                        eos=model.cfg.vocab_size - 1, kind="transformer", linear_units=64, num_blocks=1)
    torch.manual_seed(0)
    decoder = build_decoder(cfg).eval()
    out = tmp_path / "m"
    out.mkdir()
    shutil.copy(random_model_dir / "units.txt", out / "units.txt")
    save_model_dir(out, model, out, "with-decoder", decoder=decoder)
    loaded = load_model_dir(out)
    assert loaded.decoder.cfg == cfg
    enc = torch.randn(9, model.cfg.output_size)
    a, _ = decoder.score_hypotheses(enc, [[3, 4], [5]])
    b, _ = loaded.decoder.score_hypotheses(enc, [[3, 4], [5]])
    assert torch.equal(a, b)
    save_model_dir(out, model, out, "without")  # re-saving without a decoder removes it
    assert load_model_dir(out).decoder is None and not (out / "decoder.safetensors").exists()


def test_load_cmvn_file_rejects_garbage(tmp_path):
    (tmp_path / "c").write_text("[ 1 2 ]")
    with pytest.raises(WenetImportError, match="Kaldi text CMVN"):
        load_cmvn_file(tmp_path / "c", is_json=False)
    with pytest.raises(WenetImportError, match="JSON CMVN"):
        load_cmvn_file(tmp_path / "c", is_json=True)


# ---------------------------------------------------------------- serving


@needs_fixture
async def test_imported_model_serves_like_transcribe(imported, audio):
    """The imported model behind the server on 127.0.0.1: the finals streamed over the
    native protocol (100 ms frames) equal `tingxie transcribe` on the same input."""
    plain = Recognizer.from_dir(imported, "cpu")
    expected = plain.transcribe(audio, 16000).text
    assert expected
    pcm = audio.astype("<i2").tobytes() if audio.dtype == np.int16 else np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    settings = Settings(model=str(imported), host="127.0.0.1", port=0, threads=1, shutdown_timeout_s=5.0, final_pass="full",
                        endpoint_silence_ms=60_000, no_speech_ms=60_000, max_utterance_ms=60_000)
    app = App(settings, plain)
    await app.start()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/v1/stream") as ws:
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
            await ws.send('{"type": "end"}')
            msgs = [json.loads(m) async for m in ws]
    finally:
        await app.shutdown()
    finals = [m for m in msgs if m["type"] == "final"]
    assert msgs[0]["type"] == "ready" and msgs[-1]["type"] == "done"
    assert "".join(f["raw_text"] for f in finals) == expected
    # display text (punctuation model, ITN) works with an imported model's units too
    assert all(f["text"][-1] in "。？！" for f in finals)
