"""CTC decoding: incremental greedy and prefix beam search."""

from .context import ContextGraph
from .ctc import GreedyDecoder, Hypothesis
from .prefix_beam import PrefixBeamDecoder

__all__ = ["ContextGraph", "GreedyDecoder", "Hypothesis", "PrefixBeamDecoder", "make_decoder"]


def make_decoder(method: str, beam_size: int = 10, blank: int = 0, blank_penalty: float = 0.0, lm=None,
                 lm_weight: float = 0.0, lm_bonus: float = 0.0, context: ContextGraph | None = None):
    """A CTC search; hotwords (`context`) need the prefix beam search, greedy gives way to it."""
    if method == "greedy" and context is None:
        return GreedyDecoder(blank, blank_penalty)
    if method in ("prefix_beam", "greedy"):
        return PrefixBeamDecoder(beam_size, blank, blank_penalty, lm, lm_weight, lm_bonus, context)
    raise ValueError(f"unknown decoding method {method!r}")
