"""CTC decoding: incremental greedy and prefix beam search."""

from .ctc import GreedyDecoder, Hypothesis
from .prefix_beam import PrefixBeamDecoder

__all__ = ["GreedyDecoder", "Hypothesis", "PrefixBeamDecoder", "make_decoder"]


def make_decoder(method: str, beam_size: int = 10, blank: int = 0, blank_penalty: float = 0.0, lm=None,
                 lm_weight: float = 0.0, lm_bonus: float = 0.0):
    if method == "greedy":
        return GreedyDecoder(blank, blank_penalty)
    if method == "prefix_beam":
        return PrefixBeamDecoder(beam_size, blank, blank_penalty, lm, lm_weight, lm_bonus)
    raise ValueError(f"unknown decoding method {method!r}")
