"""Attention rescoring of a CTC n-best list, as WeNet computes it.

For each hypothesis y (unit ids, no sos/eos) and the utterance's encoder output:

    att   = sum_j logp_L2R[j, y_j] + logp_L2R[|y|, eos]
    att_R = sum_j logp_R2L[j, rev(y)_j] + logp_R2L[|y|, eos]          (bidirectional)
    att   = (1 - reverse_weight) * att + reverse_weight * att_R      (if reverse_weight > 0)
    score = att + ctc_weight * ctc_prefix_score

The best hypothesis is the first one with the highest score (WeNet keeps the first of
equal scores); `rescore` returns the whole list ordered that way.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from ..model.decoder import AttentionDecoder
from .ctc import Hypothesis

__all__ = ["attention_scores", "rescore"]


@torch.inference_mode()
def attention_scores(
    decoder: AttentionDecoder,
    encoder_out: torch.Tensor,
    hyps: Sequence[Sequence[int]],
    reverse_weight: float = 0.0,
) -> list[float]:
    """Decoder score of each hypothesis given encoder_out (T, d) of the whole utterance
    (the `att` term above, right-to-left part included when reverse_weight > 0)."""
    if not hyps:
        return []
    eos = decoder.cfg.eos
    logp, r_logp = decoder.score_hypotheses(encoder_out, hyps, reverse_weight)
    logp, r_logp = logp.double().cpu(), None if r_logp is None else r_logp.double().cpu()
    scores = []
    for i, hyp in enumerate(hyps):
        n = len(hyp)
        ids = torch.tensor(list(hyp) + [eos], dtype=torch.long)
        rows = torch.arange(n + 1)
        score = float(logp[i, rows, ids].sum())
        if r_logp is not None:
            r_ids = torch.tensor(list(reversed(list(hyp))) + [eos], dtype=torch.long)
            r_score = float(r_logp[i, rows, r_ids].sum())
            score = (1.0 - reverse_weight) * score + reverse_weight * r_score
        scores.append(score)
    return scores


def rescore(
    decoder: AttentionDecoder,
    nbest: Sequence[Hypothesis],
    encoder_out: torch.Tensor,
    ctc_weight: float = 0.5,
    reverse_weight: float = 0.0,
) -> list[Hypothesis]:
    """The n-best list re-ranked by attention rescoring; each hypothesis keeps its CTC
    frames and confidences and gets the combined score. Unchanged when the utterance
    has no encoder frames (nothing for the decoder to attend to)."""
    if not nbest or encoder_out.size(0) == 0:
        return list(nbest)
    att = attention_scores(decoder, encoder_out, [h.tokens for h in nbest], reverse_weight)
    scored = [dataclasses.replace(h, score=a + ctc_weight * h.score) for h, a in zip(nbest, att)]
    # sorted() is stable: among equal scores the earlier (better CTC) hypothesis wins.
    return sorted(scored, key=lambda h: -h.score)
