"""Attention rescoring of Whisper-CTC finals by Whisper's own decoder.

The CTC prefix-beam search (with the n-gram LM) proposes an n-best list; Whisper's
pretrained decoder, cross-attending to the same encoder output, scores each hypothesis
teacher-forced after the prompt <|startoftranscript|><|zh|><|transcribe|><|notimestamps|>,
and the list is re-ranked as WeNet's attention rescoring ranks it:

    score = decoder log-prob (hypothesis + <|endoftext|>) + ctc_weight * (CTC + LM score)

The decoder's vocabulary is pruned to the Whisper tokens that tingxie's units and the
LM's n-grams can produce (about 2,300 of 51,865), so its output layer is cheap; its
softmax is normalised over that set. A hypothesis whose byte-level BPE needs a token
outside it spells that token as its single-byte tokens, which are always kept.
Whisper's BPE is its own `tokenizer.json`, read with Hugging Face `tokenizers`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from ..decoding import Hypothesis
from .model import WhisperDecoder, WhisperDims

__all__ = ["RescoreConfig", "WhisperRescorer", "PrefixTree", "PROMPT", "EOT", "byte_level_tokenizer", "prune_decoder",
           "kept_vocabulary", "save_rescorer", "load_rescorer_weights"]

EOT = 50257  # <|endoftext|>
# <|startoftranscript|> <|zh|> <|transcribe|> <|notimestamps|> of the multilingual vocabulary
PROMPT = (50258, 50260, 50359, 50363)
VOCAB_IDS = "vocab_ids"  # the tensor in decoder.safetensors: pruned index -> Whisper token id


@dataclass(frozen=True)
class RescoreConfig:
    """The `rescoring` section of a Whisper-CTC model's config.json."""

    decoder: str = "decoder.safetensors"
    tokenizer: str = "whisper-tokenizer.json"
    ctc_weight: float = 2.0  # weight of the CTC + LM score against the decoder's log-prob
    nbest: int = 10  # hypotheses rescored per final
    prompt: tuple[int, ...] = PROMPT


def byte_level_tokenizer(path: str | Path):
    """Whisper's byte-level BPE (a Hugging Face `tokenizer.json`)."""
    return Tokenizer.from_file(str(path))


def kept_vocabulary(bpe, texts: Iterable[str], prompt: Sequence[int] = PROMPT) -> list[int]:
    """Sorted Whisper token ids a pruned decoder keeps: the prompt, <|endoftext|>, the 256
    single-byte tokens and every token of the BPE of `texts`."""
    keep = set(prompt) | {EOT}
    keep |= {i for tok, i in bpe.get_vocab().items() if len(tok) == 1 and i < EOT}
    batch = []
    for t in texts:
        batch.append(t)
        if len(batch) == 4096:
            keep.update(i for e in bpe.encode_batch(batch) for i in e.ids)
            batch = []
    keep.update(i for e in bpe.encode_batch(batch) for i in e.ids)
    return sorted(keep)


def prune_decoder(decoder: WhisperDecoder, keep: Sequence[int]) -> WhisperDecoder:
    """A copy of `decoder` whose vocabulary is `keep` (Whisper ids, in that order)."""
    dims = dataclasses.replace(decoder.dims, vocab_size=len(keep))
    out = WhisperDecoder(dims)
    state = dict(decoder.state_dict())
    state["embeddings.weight"] = state["embeddings.weight"][torch.tensor(list(keep))]
    out.load_state_dict(state)
    return out.eval()


def save_rescorer(path: str | Path, decoder: WhisperDecoder, keep: Sequence[int],
                  dtype: torch.dtype = torch.float16) -> None:
    """decoder.safetensors: the pruned decoder's weights (float16, as Whisper publishes
    them) and `vocab_ids`."""
    state = {k: v.detach().cpu().to(dtype).contiguous() for k, v in decoder.state_dict().items()}
    state[VOCAB_IDS] = torch.tensor(list(keep), dtype=torch.int32)
    save_file(state, str(path))


def load_rescorer_weights(path: str | Path, dims: WhisperDims) -> tuple[WhisperDecoder, list[int]]:
    state = load_file(str(path))
    keep = [int(i) for i in state.pop(VOCAB_IDS)]
    decoder = WhisperDecoder(dataclasses.replace(dims, vocab_size=len(keep)))
    decoder.load_state_dict({k: v.float() for k, v in state.items()})
    return decoder.eval(), keep


class PrefixTree:
    """Token sequences as a prefix tree flattened in creation order (a parent before its
    children): each node's token, depth and parent, and each sequence's path of nodes."""

    def __init__(self, seqs: Sequence[Sequence[int]]) -> None:
        self.tokens: list[int] = []
        self.depths: list[int] = []
        self.parents: list[int] = []
        self.paths: list[list[int]] = []
        children: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        for seq in seqs:
            node, path = -1, []
            for tok in seq:
                nxt = children.get((node, tok))
                if nxt is None:
                    nxt = children[(node, tok)] = len(self.tokens)
                    self.tokens.append(tok)
                    self.depths.append(len(path))
                    self.parents.append(node)
                node = nxt
                path.append(node)
            self.paths.append(path)

    def mask(self) -> torch.Tensor:
        """(nodes, nodes) bool: what each node attends to, its ancestors and itself."""
        n = len(self.tokens)
        mask = torch.zeros(n, n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                mask[i] = mask[parent]
            mask[i, i] = True
        return mask


class WhisperRescorer:
    """Scores hypotheses (text) against one utterance's encoder output; re-ranks n-best lists."""

    def __init__(self, decoder: WhisperDecoder, keep: Sequence[int], bpe, cfg: RescoreConfig) -> None:
        self.decoder = decoder
        self.cfg = cfg
        self.bpe = bpe
        self.index = {tok: i for i, tok in enumerate(keep)}  # Whisper id -> pruned index
        self._bytes = {tok: i for tok, i in bpe.get_vocab().items() if len(tok) == 1 and i < EOT}
        missing = [t for t in (*cfg.prompt, EOT) if t not in self.index]
        if missing:
            raise ValueError(f"the pruned decoder vocabulary lacks the prompt tokens {missing}")
        self.prompt = [self.index[t] for t in cfg.prompt]
        self.eot = self.index[EOT]

    def with_decoder(self, decoder: torch.nn.Module) -> "WhisperRescorer":
        """The same rescorer over another copy of the decoder (e.g. cast or quantised)."""
        out = copy.copy(self)
        out.decoder = decoder
        return out

    def token_ids(self, text: str) -> list[int]:
        """Pruned-vocabulary ids of `text`'s BPE (tokens outside it spelled as bytes)."""
        out = []
        for tok in self.bpe.encode(text).ids:
            if tok in self.index:
                out.append(self.index[tok])
            else:
                out += [self.index[self._bytes[ch]] for ch in self.bpe.id_to_token(tok)]
        return out

    @torch.inference_mode()
    def scores(self, encoder_out: torch.Tensor, texts: Sequence[str]) -> list[float]:
        """Decoder log-prob of each text (then <|endoftext|>) given encoder_out (T, d).

        The texts' token sequences run as one prefix tree: an n-best list differs in a few
        units, so shared prefixes (the prompt, and usually much more) run once; on the
        real eval set the tree of a 10-best list holds 46% of its tokens."""
        if not texts:
            return []
        seqs = [self.prompt + self.token_ids(t) + [self.eot] for t in texts]
        if max(map(len, seqs)) > self.decoder.dims.max_target_positions:
            return [0.0] * len(texts)  # beyond Whisper's 448 positions: keep CTC's ranking
        tree = PrefixTree(seqs)
        dev = encoder_out.device
        logp = self.decoder(torch.tensor([tree.tokens], device=dev), encoder_out[None],
                            positions=torch.tensor(tree.depths, device=dev),
                            self_mask=tree.mask().to(dev)[None, None]).float().cpu()[0]
        p = len(self.prompt)
        out = []
        for path, seq in zip(tree.paths, seqs):
            # a token's log-prob is read at its parent: the node that predicts it
            rows = torch.tensor(path[p - 1 : -1])
            out.append(float(logp[rows, torch.tensor(seq[p:])].sum()))
        return out

    def rescore(self, nbest: Sequence[Hypothesis], texts: Sequence[str], encoder_out: torch.Tensor) -> list[Hypothesis]:
        """The first `nbest` hypotheses re-ranked (texts: their decoded text); each keeps
        its CTC frames and confidences and takes the combined score."""
        hyps = list(nbest)[: self.cfg.nbest]
        if len(hyps) < 2 or encoder_out.size(0) == 0:
            return hyps
        att = self.scores(encoder_out, list(texts)[: len(hyps)])
        w = self.cfg.ctc_weight
        scored = [dataclasses.replace(h, score=a + w * h.score) for h, a in zip(hyps, att)]
        return sorted(scored, key=lambda h: -h.score)  # stable: equal scores keep CTC's order
