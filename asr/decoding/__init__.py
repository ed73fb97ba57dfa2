"""CTC decoding: incremental greedy and prefix beam search."""

from .ctc import GreedyDecoder, Hypothesis, PrefixBeamDecoder, make_decoder

__all__ = ["GreedyDecoder", "Hypothesis", "PrefixBeamDecoder", "make_decoder"]
