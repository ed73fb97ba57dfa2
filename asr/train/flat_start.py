"""Flat-start frame targets: a dense signal that gets character CTC off its blank plateau.

A CTC model with thousands of output classes starts by learning the class frequencies and
emitting blank everywhere; it leaves that plateau only once the encoder has found where
each unit sits in time, which on a small corpus and 2 CPU cores takes longer than a
training session (docs/models.md). HMM systems solve the same cold start with a flat
start: spread the transcript evenly over the audio and train on that guess.

Here the guess is made per utterance from its own filterbank energies: frames well above
the utterance's noise floor are speech, the transcript's units are spread evenly over
the speech frames (a Mandarin character is one syllable, so syllables take roughly equal
time), and everything else is blank. Cross-entropy on these frame labels trains the
encoder and output layer densely from the first update. The labels are also a valid CTC
path (a unit repeated over its frames, blank in pauses), so the two losses agree; the
trainer fades the frame loss out while CTC takes over and refines the alignment.
"""

from __future__ import annotations

import torch

from ..model.layers import subsampled_lengths

__all__ = ["speech_frames", "uniform_targets", "IGNORE"]

IGNORE = -100  # frame label that the loss skips


def speech_frames(feats: torch.Tensor, level: float = 0.4) -> torch.Tensor:
    """(T, F) log-mel filterbank -> (T,) bool: frames whose mean log energy lies above the
    `level` point between the utterance's quiet floor (5th percentile) and its loud
    frames (95th percentile). Relative to the utterance, so gain and noise floor do not matter."""
    if feats.size(0) == 0:
        return torch.zeros(0, dtype=torch.bool)
    e = feats.float().mean(dim=1)
    lo, hi = torch.quantile(e, 0.05), torch.quantile(e, 0.95)
    return e > lo + level * (hi - lo)


def uniform_targets(speech: torch.Tensor, units: list[int], input_layer: str = "conv2d") -> torch.Tensor:
    """Frame labels at the encoder's rate for one utterance.

    `speech` is the (T,) mask of `speech_frames` at the filterbank rate; the result has
    `subsampled_lengths(T)` entries: blank (0) where there is no speech, the units spread
    evenly over the speech frames in order, or all IGNORE when there are fewer speech
    frames than units (the guess would be meaningless)."""
    t_in = speech.size(0)
    t_out = int(subsampled_lengths(torch.tensor([t_in]), input_layer)[0])
    out = torch.zeros(t_out, dtype=torch.long)
    if t_out == 0 or not units:  # nothing to label, or nothing said: all blank
        return out
    rate = t_in / t_out
    centre = ((torch.arange(t_out) + 0.5) * rate).long().clamp(max=t_in - 1)  # fbank frame at each output frame
    voiced = speech[centre]
    n_voiced = int(voiced.sum())
    if n_voiced < len(units):
        return out.fill_(IGNORE)
    rank = torch.cumsum(voiced.long(), 0) - 1
    which = (rank[voiced] * len(units)) // n_voiced
    out[voiced] = torch.tensor(units, dtype=torch.long)[which]
    return out
