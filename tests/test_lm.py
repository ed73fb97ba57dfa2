"""Unit n-gram LM: Kneser-Ney estimation, ARPA round trip, shallow fusion in prefix beam
search, the model directory's LM and `tingxie lm`."""

from __future__ import annotations

import itertools
import json
import math
import mmap
import random
import shutil
import subprocess
import sys

from pathlib import Path

import pytest
import torch

from asr.checkpoint import ModelDirError, add_lm, load_model_dir
from asr.config import DecodingConfig
from asr.decoding import make_decoder
from asr.lm import EOS, LMError, NgramCounts, NgramLM, estimate, read_arpa, write_arpa
from asr.recognizer import Recognizer
from asr.whisper.bundle import is_whisper_dir, load_whisper_dir

from .conftest import HAN, speech_like, units

MODELS = Path(__file__).resolve().parents[1] / "models"

V = list("abcdefgh")


def mapped(array) -> bool:
    """Whether a numpy array is a view of a memory-mapped file."""
    base = array.base
    return isinstance(getattr(base, "obj", base), mmap.mmap)


def corpus(n: int = 300, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(V[:5]) for _ in range(rng.randint(1, 8))] for _ in range(n)]


@pytest.mark.parametrize("order,cutoffs", [(1, ()), (2, ()), (3, ()), (3, (1, 1, 2)), (4, (1, 2, 2, 3))])
def test_every_context_is_a_distribution(order, cutoffs):
    table = estimate(NgramCounts.from_sentences(corpus(), order), vocab=V, cutoffs=cutoffs)
    lm = NgramLM.from_table(table, V)
    contexts = [()] + [c for k in range(1, order) for c in itertools.product(range(5), repeat=k)]
    contexts += [(lm.bos,), (lm.bos, 0)][: order - 1 if order > 1 else 0]
    for ctx in contexts:
        state = ctx[-(order - 1):] if order > 1 else ()
        total = sum(math.exp(lm.score(state, u)[0]) for u in [*range(len(V)), lm.eos])
        assert abs(total - 1.0) < 1e-6, (ctx, total)
    # units the text never has still get probability (from the vocabulary), but little
    assert lm.score((), V.index("h"))[0] < lm.score((), V.index("a"))[0] - 2


def test_pruning_shrinks_the_model_and_backs_off():
    counts = NgramCounts.from_sentences(corpus(), 3)
    full = estimate(counts, vocab=V)
    pruned = estimate(counts, vocab=V, cutoffs=(1, 2, 3))
    assert len(pruned) < len(full)
    lm = NgramLM.from_table(pruned, V)
    gone = next(g for g in full if len(g) == 3 and g not in pruned and "<s>" not in g and EOS not in g)
    a, b, c = (V.index(u) for u in gone)
    bow = pruned[(gone[0], gone[1])][1] * math.log(10)
    lower = lm.score((b,), c)[0]
    assert lm.score((a, b), c)[0] == pytest.approx(bow + lower, abs=1e-5)


@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_arpa_round_trip(tmp_path, name):
    table = estimate(NgramCounts.from_sentences(corpus(), 3), vocab=V, cutoffs=(1, 1, 2))
    write_arpa(table, tmp_path / name)
    back = read_arpa(tmp_path / name)
    assert back.keys() == table.keys()
    assert all(abs(back[g][0] - table[g][0]) < 1e-4 and abs(back[g][1] - table[g][1]) < 1e-4 for g in table)
    text = (tmp_path / name).read_bytes()
    write_arpa(table, tmp_path / name)
    assert (tmp_path / name).read_bytes() == text  # deterministic, gzip included
    a, b = NgramLM.from_table(table, V), NgramLM.load(tmp_path / name, V)
    for sent in corpus(20, seed=5):
        ids = [V.index(u) for u in sent]
        assert a.sentence_logp(ids) == pytest.approx(b.sentence_logp(ids), abs=1e-3)


def test_bad_arpa_files_are_clear_errors(tmp_path):
    (tmp_path / "empty.arpa").write_text("\\data\\\n\\end\\\n")
    with pytest.raises(LMError, match="no n-grams"):
        NgramLM.load(tmp_path / "empty.arpa", V)
    (tmp_path / "junk.arpa.gz").write_bytes(b"not gzip at all")
    with pytest.raises(LMError, match="cannot read"):
        NgramLM.load(tmp_path / "junk.arpa.gz", V)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_binary_form_scores_exactly_as_the_arpa_file(tmp_path, order):
    table = estimate(NgramCounts.from_sentences(corpus(), order), vocab=V, cutoffs=(1, 1, 2, 2)[:order])
    write_arpa(table, tmp_path / "lm.arpa.gz")
    arpa = NgramLM.load(tmp_path / "lm.arpa.gz", V)
    arpa.write_binary(tmp_path / "lm.bin", V, source_sha256="ab" * 32)
    first = (tmp_path / "lm.bin").read_bytes()
    arpa.write_binary(tmp_path / "lm.bin", V, source_sha256="ab" * 32)
    assert (tmp_path / "lm.bin").read_bytes() == first  # deterministic, so its checksum is too
    for binary in (NgramLM.open_binary(tmp_path / "lm.bin", V, "ab" * 32), NgramLM.load(tmp_path / "lm.bin", V)):
        assert binary.order == order and binary.base == arpa.base
        assert mapped(binary._grams[1][0])  # mapped, not read
        states = [()] + [c for k in range(1, order) for c in itertools.product([*range(6), arpa.bos], repeat=k)]
        for state in states:
            assert binary.max_score(state) == arpa.max_score(state)
            for u in [*range(len(V)), arpa.eos]:
                assert binary.score(state, u) == arpa.score(state, u)


def test_binary_checks_its_source_units_and_integrity(tmp_path):
    table = estimate(NgramCounts.from_sentences(corpus(), 2), vocab=V)
    lm = NgramLM.from_table(table, V)
    lm.write_binary(tmp_path / "lm.bin", V, source_sha256="ab" * 32)
    with pytest.raises(LMError, match="another ARPA file"):
        NgramLM.open_binary(tmp_path / "lm.bin", V, source_sha256="cd" * 32)
    with pytest.raises(LMError, match="another unit table"):
        NgramLM.open_binary(tmp_path / "lm.bin", list("abcdefgx"))
    with pytest.raises(LMError, match="built for 8 units"):
        lm.write_binary(tmp_path / "other.bin", V[:5])
    data = (tmp_path / "lm.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) - 100])
    with pytest.raises(LMError, match="corrupt binary"):
        NgramLM.open_binary(tmp_path / "cut.bin", V)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(LMError, match="cannot map"):
        NgramLM.open_binary(tmp_path / "empty.bin", V)


def homophone_logprobs(n_units: int, x: int, y: int, first: int) -> torch.Tensor:
    """CTC posteriors for `first` then a unit the acoustics hear as x (0.55) or y (0.45)."""
    frames = []
    for probs in ({first: 0.9}, {0: 0.95}, {x: 0.5, y: 0.4}, {0: 0.95}):
        p = torch.full((n_units,), 1e-4)
        for u, v in probs.items():
            p[u] = v
        frames.append((p / p.sum()).log())
    return torch.stack(frames)


def test_lm_fusion_picks_the_homophone_the_text_supports():
    units_ = ["<blank>"] + V
    sents = [["a", "c"]] * 50 + [["b", "d"]] * 50  # after a comes c, never d
    lm = NgramLM.from_table(estimate(NgramCounts.from_sentences(sents, 2), vocab=units_[1:]), units_)
    lp = homophone_logprobs(len(units_), x=units_.index("d"), y=units_.index("c"), first=units_.index("a"))
    plain = make_decoder("prefix_beam", 4)
    plain.advance(lp)
    assert [units_[t] for t in plain.best().tokens] == ["a", "d"]
    fused = make_decoder("prefix_beam", 4, lm=lm, lm_weight=0.8, lm_bonus=1.0)
    fused.advance(lp[:2])
    fused.advance(lp[2:])  # chunk by chunk, as in streaming
    best = fused.best()
    assert [units_[t] for t in best.tokens] == ["a", "c"]
    assert best.frames == (0, 2)


def test_model_directory_lm_and_cli(tmp_path, random_model_dir):
    model = tmp_path / "model"
    shutil.copytree(random_model_dir, model)
    lines = ["".join(random.Random(i).choice(HAN[:8]) for _ in range(6)) for i in range(200)]
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "tingxie", "lm", "--model", str(model), "--text",
                          str(tmp_path / "text.txt"), "--order", "3", "--weight", "0.6", "--bonus", "1.5", "--beam", "7"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    bundle = load_model_dir(model)
    assert bundle.lm["weight"] == 0.6 and bundle.lm["bonus"] == 1.5 and bundle.lm["file"].name == "lm.arpa.gz"
    assert bundle.lm["binary"].name == "lm.bin"
    config = json.loads((model / "config.json").read_text())
    assert config["lm"]["sentences"] == 200 and "lm.bin" in config["files"]

    audio = speech_like(2.0)
    auto = Recognizer(bundle, "cpu", DecodingConfig(lm="auto"), precision="fp32")
    assert auto.lm is not None and auto.search_method == "prefix_beam"
    assert mapped(auto.lm._grams[1][0])  # the binary, not the ARPA file
    from_arpa = Recognizer(bundle, "cpu", DecodingConfig(lm=str(model / "lm.arpa.gz")), precision="fp32")
    assert not mapped(from_arpa.lm._grams[1][0])
    for name in ("lm.bin", "lm.arpa.gz"):  # --lm FILE takes either form
        other = Recognizer(bundle, "cpu", DecodingConfig(lm=str(model / name), lm_weight=0.6, lm_bonus=1.5,
                                                         beam_size=7), precision="fp32")
        assert other.transcribe(audio).nbest == auto.transcribe(audio).nbest
    assert auto.transcribe(audio).options == {"decoding": "prefix_beam", "chunk_size": auto.chunk.chunk_size,
                                              "beam_size": 7, "lm_weight": 0.6, "lm_bonus": 1.5}
    off = Recognizer(bundle, "cpu", DecodingConfig(lm="none"), precision="fp32")
    assert off.lm is None and off.transcribe(audio).options["decoding"] == "greedy"
    # the LM's tuned beam applies to its own fused search only; an explicit beam wins
    assert Recognizer(bundle, "cpu", DecodingConfig("prefix_beam", lm="none")).beam_size == 10
    assert Recognizer(bundle, "cpu", DecodingConfig(beam_size=3, lm="auto")).new_decoder().beam_size == 3
    # streams decode with the same fused search
    s = auto.stream()
    assert s._decoder.lm is auto.lm and s._decoder.lm_weight == 0.6 and s._decoder.beam_size == 7
    with pytest.raises(ValueError, match="not found"):
        Recognizer(bundle, "cpu", DecodingConfig(lm=str(tmp_path / "missing.arpa")))

    config = json.loads((model / "config.json").read_text())
    for bad in (0, 2.5, "20"):
        (model / "config.json").write_text(json.dumps({**config, "lm": {**config["lm"], "beam": bad}}))
        with pytest.raises(ModelDirError, match="beam must be a positive integer"):
            load_model_dir(model)
    (model / "config.json").write_text(json.dumps(config))

    # --arpa with the model's own file rebuilds the binary and keeps what is known about the LM
    (model / "lm.bin").unlink()
    out = subprocess.run([sys.executable, "-m", "tingxie", "lm", "--model", str(model), "--arpa",
                          str(model / "lm.arpa.gz")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads((model / "config.json").read_text()) == config

    # A binary built from another ARPA file is refused, though its own checksum is right.
    stale = tmp_path / "stale"
    shutil.copytree(model, stale)
    lines[0] = HAN[9] * 6
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert subprocess.run([sys.executable, "-m", "tingxie", "lm", "--model", str(stale), "--text",
                           str(tmp_path / "text.txt")], capture_output=True).returncode == 0
    shutil.copyfile(model / "lm.bin", stale / "lm.bin")
    stale_config = json.loads((stale / "config.json").read_text())
    stale_config["files"]["lm.bin"] = config["files"]["lm.bin"]
    (stale / "config.json").write_text(json.dumps(stale_config))
    with pytest.raises(ValueError, match="built from another ARPA file"):
        Recognizer(load_model_dir(stale), "cpu", DecodingConfig(lm="auto"))

    for name in ("lm.arpa.gz", "lm.bin"):
        saved = (model / name).read_bytes()
        (model / name).write_bytes(b"changed")
        with pytest.raises(ModelDirError, match=f"checksum mismatch for {name}"):
            load_model_dir(model)
        (model / name).write_bytes(saved)


def test_cli_lm_into_a_whisper_ctc_directory(tmp_path):
    """`tingxie lm` replaces a two-pass model's LM: the final passes use it, the first
    pass keeps its own."""
    if not is_whisper_dir(MODELS / "default"):
        pytest.skip("models/default is not a Whisper-CTC model")
    model = tmp_path / "default"
    model.mkdir()
    for f in (MODELS / "default").iterdir():  # weights linked; what `tingxie lm` writes, copied
        if f.name.startswith("lm.") or f.name == "config.json":
            shutil.copyfile(f, model / f.name)
        else:
            (model / f.name).symlink_to(f)
    (tmp_path / "small-streaming").symlink_to(MODELS / "small-streaming")
    (tmp_path / "text.txt").write_text("今天天气很好\n明天去银行办卡\n" * 20, encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "tingxie", "lm", "--model", str(model), "--text",
                          str(tmp_path / "text.txt"), "--weight", "0.9", "--bonus", "3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    bundle = load_whisper_dir(model)
    assert bundle.lm["weight"] == 0.9 and bundle.lm["sentences"] == 40
    rec = Recognizer.from_dir(model, "cpu")
    assert rec.final.lm is not rec.lm and rec.final.lm_weight == 0.9
    assert (MODELS / "default" / "lm.arpa.gz").read_bytes() != (model / "lm.arpa.gz").read_bytes()


def test_add_lm_needs_a_model_directory(tmp_path):
    table = estimate(NgramCounts.from_sentences([list(HAN[:3])], 2), vocab=units())
    write_arpa(table, tmp_path / "x.arpa")
    with pytest.raises(ModelDirError, match="config.json"):
        add_lm(tmp_path, tmp_path / "x.arpa", 0.5, 1.0)
