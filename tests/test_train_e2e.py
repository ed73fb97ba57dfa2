"""The whole path learns: synthesise Mandarin with espeak-ng, train a tiny model (with a
resume in the middle), export it, and recognise the audio exactly, streaming and full."""

import json
import subprocess
import sys

import pytest
import torch

from asr.audio import read_audio
from asr.checkpoint import load_model_dir
from asr.config import ConfigError
from asr.recognizer import Recognizer
from asr.train.pinyin_aux import PinyinUnits
from asr.train.trainer import TrainConfig, _lr_factor, resolve_device, train

from .conftest import espeak, needs_espeak

SENTENCES = ["今天天气很好", "我想查询账户余额", "请帮我转人工服务", "谢谢再见"]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_corpus")
    with open(d / "train.jsonl", "w") as f:
        for i, text in enumerate(SENTENCES):
            wav = espeak(text, d / f"u{i}.wav")
            audio, rate = read_audio(wav)
            f.write(json.dumps({"audio": wav.name, "text": text, "duration": audio.shape[1] / rate}) + "\n")
    return d


@pytest.fixture(scope="module")
def trained_model(tiny_corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp")
    logs: list[str] = []
    base = dict(
        exp_dir=str(exp), train_manifest=str(tiny_corpus / "train.jsonl"),
        model=dict(output_size=64, attention_heads=4, linear_units=128, num_blocks=2, cnn_module_kernel=7,
                   dropout_rate=0.0),
        batch_seconds=100, lr=3e-3, min_lr_ratio=1.0, warmup_steps=20, bf16=False, progress=False,
        streaming_chunk=4, average_last=1, max_chunk=8, log_interval=10_000, name="tiny-test",
    )
    # Train in rounds, each resuming the last, until every utterance is recognised exactly;
    # at least two rounds, so that resuming is always exercised.
    for i, epochs in enumerate((50, 90, 130, 170, 210)):
        out = train(TrainConfig(epochs=epochs, **base), log=logs.append)
        if i and all(t == h for t, h in zip(SENTENCES, recognise_all(out, tiny_corpus))):
            break
    return out, logs, base


def recognise_all(model_dir, corpus, streaming=False):
    rec = Recognizer.from_dir(model_dir, device="cpu")
    out = []
    for i in range(len(SENTENCES)):
        audio, rate = read_audio(corpus / f"u{i}.wav")
        if streaming:
            s = rec.stream(rate)
            s.accept(audio[0])
            out.append(s.finalize().text)
        else:
            out.append(rec.transcribe(audio[0], rate).text)
    return out


@needs_espeak
def test_training_resumes_and_learns_exactly(trained_model, tiny_corpus):
    model_dir, logs, _ = trained_model
    assert any(line.startswith("resumed from ckpt_e049") for line in logs)
    assert recognise_all(model_dir, tiny_corpus) == SENTENCES
    assert recognise_all(model_dir, tiny_corpus, streaming=True) == SENTENCES


@needs_espeak
def test_cli_transcribe_and_eval_on_trained_model(trained_model, tiny_corpus):
    model_dir, _, _ = trained_model
    wavs = [str(tiny_corpus / f"u{i}.wav") for i in range(len(SENTENCES))]
    raw = ["--punctuation", "off", "--itn", "off"]  # the units as recognised, compared with the sentences
    out = subprocess.run([sys.executable, "-m", "tingxie", "transcribe", "--model", str(model_dir), *raw, *wavs],
                         capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == SENTENCES
    out = subprocess.run([sys.executable, "-m", "tingxie", "transcribe", "--json", "--model", str(model_dir), *raw, wavs[1]],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["text"] == SENTENCES[1]
    assert [t["text"] for t in result["tokens"]] == list(SENTENCES[1])
    assert all(t["start"] < t["end"] for t in result["tokens"])
    out = subprocess.run([sys.executable, "-m", "tingxie", "eval", "--model", str(model_dir), "--streaming",
                          "--chunk-ms", "160", "--manifest", str(tiny_corpus / "train.jsonl")],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["cer"] == 0.0


def test_cli_reports_bad_model_dir(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tingxie", "transcribe", "--model", str(tmp_path), "x.wav"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no config.json" in out.stderr


@needs_espeak
def test_export_picks_the_checkpoint_average_with_the_lowest_dev_cer(trained_model, tiny_corpus):
    """With a dev set, export scores the newest 1..average_last checkpoints averaged and
    keeps the best (here: the trained model against earlier, worse epoch ends)."""
    model_dir, _, base = trained_model
    logs: list[str] = []
    # epochs=1: the experiment is past it, so this run only resumes and exports.
    out = train(TrainConfig(**{**base, "epochs": 1, "average_last": 3,
                               "dev_manifest": str(tiny_corpus / "train.jsonl")}), log=logs.append)
    extra = json.loads((out / "config.json").read_text())["extra"]
    scores = {k: sum(v.values()) / len(v) for k, v in extra["export_dev_cer"].items()}
    assert sorted(scores) == ["average of 1", "average of 2", "average of 3"]
    chosen = f"average of {len(extra['averaged_checkpoints'])}"
    assert scores[chosen] == min(scores.values())
    assert any(line.startswith("exported") for line in logs)
    assert recognise_all(out, tiny_corpus) == SENTENCES


def test_pinyin_units_encode_han_syllables_and_skip_other_text(tmp_path):
    table = PinyinUnits.load_or_build(tmp_path / "units.txt", ["今天天气很好", "谢谢再见 ok"])
    assert table.units[:2] == ["<blank>", "<unk>"] and "tian" in table.units and "ok" not in table.units
    ids = table.encode("天气 abc 好")
    assert [table.units[i] for i in ids] == ["tian", "qi", "hao"]
    assert table.encode("中") == [1]  # a syllable the table has not seen
    again = PinyinUnits.load_or_build(tmp_path / "units.txt", ["完全不同的文本"])  # the saved table wins
    assert again.units == table.units


@needs_espeak
def test_auxiliary_pinyin_head_and_flat_start_train_resume_and_stay_out_of_the_model(tiny_corpus, tmp_path):
    base = dict(
        exp_dir=str(tmp_path / "exp"), train_manifest=str(tiny_corpus / "train.jsonl"),
        model=dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=1, cnn_module_kernel=3),
        batch_seconds=100, warmup_steps=2, bf16=False, progress=False, average_last=1, log_interval=1,
        aux_pinyin_weight=0.5, flat_start_steps=3, name="aux-test",
    )
    logs: list[str] = []
    train(TrainConfig(epochs=2, **base), log=logs.append)
    out = train(TrainConfig(epochs=3, **base), log=logs.append)
    assert any(line.startswith("resumed from") for line in logs)
    assert not any("optimiser state starts afresh" in line for line in logs)
    ckpt = torch.load(sorted((tmp_path / "exp").glob("ckpt_*.pt"))[-1], map_location="cpu", weights_only=True)
    n_syllables = len((tmp_path / "exp" / "aux_pinyin_units.txt").read_text().split())
    assert ckpt["aux_head"]["weight"].shape == (n_syllables, 32)
    bundle = load_model_dir(out)  # the exported model has no auxiliary head
    assert not any("aux" in k for k in bundle.model.state_dict())
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "exp" / "train_log.jsonl") if '"loss"' in line]
    assert len(losses) == 3 and all(x > 0 for x in losses)


def test_lr_schedules():
    assert _lr_factor(0, 4, 100, 0.1) == 0.25  # warm-up
    assert _lr_factor(4, 4, 100, 0.1) == pytest.approx(1.0)
    assert _lr_factor(100, 4, 100, 0.1) == pytest.approx(0.1)  # cosine by steps ends at the floor
    # cosine_time ignores the step total: the elapsed share of the time budget drives it
    assert _lr_factor(50, 4, 0, 0.1, "cosine_time", 0.0) == pytest.approx(1.0)
    assert _lr_factor(50, 4, 0, 0.1, "cosine_time", 0.5) == pytest.approx(0.55)
    assert _lr_factor(50, 4, 0, 0.1, "cosine_time", 1.7) == pytest.approx(0.1)


def test_cuda_device_is_refused_clearly_without_cuda(tmp_path):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


@needs_espeak
def test_time_budgeted_fine_tune_starts_from_a_model_and_anneals(trained_model, tiny_corpus, tmp_path):
    """The GPU recipe's mode (recipes/gpu): start from a model directory's weights and unit
    table, decay the learning rate over a fixed time budget, stop on time and export."""
    out, _, base = trained_model
    logs: list[str] = []
    cfg = TrainConfig(**{**base, "exp_dir": str(tmp_path / "ft"), "epochs": 100_000, "init_from": str(out),
                         "tokenizer_dir": str(out), "schedule": "cosine_time", "max_minutes": 0.1, "warmup_steps": 3,
                         "min_lr_ratio": 0.05, "log_interval": 1, "lr": 1e-3,
                         "device": "cuda" if torch.cuda.is_available() else "cpu"})
    ft = train(cfg, log=logs.append)
    assert any(line.startswith("initialised from") for line in logs)
    assert any(line.startswith("stopping at epoch") for line in logs)
    lrs = [json.loads(line)["lr"] for line in open(tmp_path / "ft" / "train_log.jsonl") if '"lr"' in line]
    assert len(lrs) > 10
    assert lrs[0] < lrs[2]  # warm-up
    assert lrs[-1] < 0.25 * max(lrs)  # annealed as the budget ran out
    assert recognise_all(ft, tiny_corpus) == SENTENCES
