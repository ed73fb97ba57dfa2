"""Flat-start frame labels: speech found from filterbank energy, transcript spread evenly."""

import torch

from asr.audio import read_audio
from asr.config import FeatureConfig
from asr.features import fbank, resample
from asr.model.layers import subsampled_lengths
from asr.train.flat_start import IGNORE, speech_frames, uniform_targets

from .conftest import espeak, needs_espeak


def _feats(levels: list[float]) -> torch.Tensor:
    return torch.tensor(levels).unsqueeze(1).repeat(1, 80) + 0.01 * torch.randn(len(levels), 80)


def test_speech_frames_follow_energy_whatever_the_gain():
    levels = [2.0] * 30 + [12.0] * 50 + [2.0] * 10 + [11.0] * 40 + [2.0] * 30
    want = torch.tensor([v > 5 for v in levels])
    assert torch.equal(speech_frames(_feats(levels)), want)
    assert torch.equal(speech_frames(_feats([v - 7.0 for v in levels])), want)  # quieter recording, same mask


def test_units_are_spread_evenly_over_speech_and_pauses_are_blank():
    speech = torch.tensor([False] * 40 + [True] * 120 + [False] * 40 + [True] * 120 + [False] * 40)
    labels = uniform_targets(speech, [7, 8, 9, 10, 11, 12])
    assert labels.numel() == int(subsampled_lengths(torch.tensor([speech.numel()]), "conv2d")[0])
    assert labels[:8].tolist() == [0] * 8 and labels[-8:].tolist() == [0] * 8
    collapsed = [int(x) for i, x in enumerate(labels) if x != 0 and (i == 0 or labels[i - 1] != x)]
    assert collapsed == [7, 8, 9, 10, 11, 12]
    counts = torch.bincount(labels, minlength=13)[7:13]
    assert int(counts.max() - counts.min()) <= 1  # even shares of the 60 speech frames
    assert labels[41:48].eq(0).all()  # the pause between the two speech runs (fbank frames 160-200)


def test_too_little_speech_for_the_transcript_is_ignored():
    speech = torch.tensor([False] * 20 + [True] * 12 + [False] * 20)
    assert uniform_targets(speech, [5, 6, 7, 8]).eq(IGNORE).all()
    assert uniform_targets(speech, []).eq(0).all()  # nothing said: all blank


@needs_espeak
def test_labels_for_real_speech_keep_the_transcript_order(tmp_path):
    wav, rate = read_audio(espeak("请帮我转人工服务", tmp_path / "u.wav"))
    x = resample(torch.from_numpy(wav.mean(axis=0)), rate, 16000)
    feats = fbank(x.float(), FeatureConfig())
    speech = speech_frames(feats)
    assert 0.4 < float(speech.float().mean()) < 0.98  # speech found, and some quiet
    units = list(range(10, 18))
    labels = uniform_targets(speech, units)
    voiced = [int(x) for x in labels if x != 0]
    assert [u for i, u in enumerate(voiced) if i == 0 or voiced[i - 1] != u] == units  # in order, each in one run
