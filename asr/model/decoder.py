"""Attention decoders for rescoring CTC hypotheses: WeNet's `transformer` and
`bitransformer`, with WeNet's parameter names.

A `TransformerDecoder` is an autoregressive Transformer over unit ids (embedding scaled
by sqrt(d) plus absolute sinusoidal positions, pre-norm layers of masked self-attention,
attention over the encoder output and a ReLU feed-forward, then a final LayerNorm and
the output projection). A `BiTransformerDecoder` holds a left-to-right one
(`left_decoder`) and a right-to-left one (`right_decoder`) over the reversed hypothesis.

Both expose `score_hypotheses(encoder_out, hyps, reverse_weight)`, which is WeNet's
`forward_attention_decoder`: the hypotheses get `<sos>` in front and the log-softmax
over the vocabulary is returned for every position.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..config import DecoderConfig
from .layers import sinusoid

__all__ = ["TransformerDecoder", "BiTransformerDecoder", "UniTransformerDecoder", "AttentionDecoder", "build_decoder"]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with `linear_{q,k,v,out}` (WeNet's MultiHeadedAttention)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        """query (B, Lq, d), memory (B, Lk, d), mask (B, Lq|1, Lk) True = attend -> (B, Lq, d)."""
        b, lq, _ = query.shape
        q = self.linear_q(query).view(b, lq, self.h, self.dk).transpose(1, 2)
        k = self.linear_k(memory).view(b, -1, self.h, self.dk).transpose(1, 2)
        v = self.linear_v(memory).view(b, -1, self.h, self.dk).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.dk)  # (B, h, Lq, Lk)
        blocked = ~mask.unsqueeze(1)
        scores = scores.float().masked_fill(blocked, float("-inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0).to(v.dtype)
        out = (attn @ v).transpose(1, 2).reshape(b, lq, self.h * self.dk)
        return self.linear_out(out)


class ReluFeedForward(nn.Module):
    def __init__(self, d: int, units: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d, units)
        self.w_2 = nn.Linear(units, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class DecoderLayer(nn.Module):
    """Self-attention, source attention, feed-forward; residuals around each, LayerNorm
    before (normalize_before) or after each sub-block."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = MultiHeadAttention(d, cfg.attention_heads)
        self.src_attn = MultiHeadAttention(d, cfg.attention_heads)
        self.feed_forward = ReluFeedForward(d, cfg.linear_units)
        self.norm1 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.norm2 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.norm3 = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.pre = cfg.normalize_before

    def _sub(self, x: Tensor, norm: nn.LayerNorm, fn) -> Tensor:
        if self.pre:
            return x + fn(norm(x))
        return norm(x + fn(x))

    def forward(self, x: Tensor, tgt_mask: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        x = self._sub(x, self.norm1, lambda y: self.self_attn(y, y, tgt_mask))
        x = self._sub(x, self.norm2, lambda y: self.src_attn(y, memory, memory_mask))
        return self._sub(x, self.norm3, self.feed_forward)


class TransformerDecoder(nn.Module):
    """One-direction decoder: ys_in (B, L) unit ids -> logits (B, L, vocab)."""

    def __init__(self, cfg: DecoderConfig, num_blocks: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        # `embed.0` is the token embedding; WeNet's `embed.1` is the (parameter-free)
        # positional encoding, computed here by `sinusoid`.
        self.embed = nn.ModuleList([nn.Embedding(cfg.vocab_size, d)])
        n = cfg.num_blocks if num_blocks is None else num_blocks
        self.decoders = nn.ModuleList([DecoderLayer(cfg) for _ in range(n)])
        self.after_norm = nn.LayerNorm(d, eps=cfg.norm_eps) if cfg.normalize_before else None
        self.output_layer = nn.Linear(d, cfg.vocab_size)
        self.xscale = math.sqrt(d)

    def forward(self, memory: Tensor, memory_mask: Tensor, ys_in: Tensor, ys_lens: Tensor) -> Tensor:
        """memory (B, T, d) encoder output; memory_mask (B, 1, T) True = valid frame;
        ys_in (B, L) ids starting with <sos>, padded; ys_lens (B,) -> logits (B, L, vocab)."""
        length = ys_in.size(1)
        pos = torch.arange(length, device=ys_in.device)
        valid = pos[None, :] < ys_lens[:, None]  # (B, L) keys that exist
        causal = pos[None, :] <= pos[:, None]  # (L, L) key j <= query i
        tgt_mask = valid[:, None, :] & causal[None]
        x = self.embed[0](ys_in) * self.xscale + sinusoid(pos, self.cfg.d_model)
        for layer in self.decoders:
            x = layer(x, tgt_mask, memory, memory_mask)
        if self.after_norm is not None:
            x = self.after_norm(x)
        return self.output_layer(x)


def _with_sos(hyps: Sequence[Sequence[int]], sos: int, eos: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(N, 1 + max_len) ids: <sos> + hypothesis, padded with <eos> (as WeNet's add_sos_eos)."""
    longest = max((len(h) for h in hyps), default=0)
    ys = torch.full((len(hyps), longest + 1), eos, dtype=torch.long)
    ys[:, 0] = sos
    for i, h in enumerate(hyps):
        if len(h):
            ys[i, 1 : len(h) + 1] = torch.tensor(list(h), dtype=torch.long)
    lens = torch.tensor([len(h) + 1 for h in hyps], dtype=torch.long)
    return ys.to(device), lens.to(device)


class AttentionDecoder(nn.Module):
    """Common interface of the two decoder kinds."""

    cfg: DecoderConfig

    def score_hypotheses(
        self, encoder_out: Tensor, hyps: Sequence[Sequence[int]], reverse_weight: float = 0.0
    ) -> tuple[Tensor, Tensor | None]:
        """encoder_out (T, d) of one utterance; hyps: N unit-id sequences (no sos/eos).

        Returns log-probs (N, 1 + max_len, vocab) of the left-to-right decoder fed
        <sos> + hyp, and, when the decoder is bidirectional and reverse_weight > 0, those
        of the right-to-left decoder fed <sos> + reversed hyp (else None). Row j of
        hypothesis i predicts its token j (row len(hyp) predicts <eos>).
        """
        raise NotImplementedError


def _memory(encoder_out: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The utterance's encoder output repeated for n hypotheses, and its all-valid mask."""
    memory = encoder_out.unsqueeze(0).expand(n, -1, -1)
    mask = torch.ones(n, 1, encoder_out.size(0), dtype=torch.bool, device=encoder_out.device)
    return memory, mask


class BiTransformerDecoder(AttentionDecoder):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.left_decoder = TransformerDecoder(cfg, cfg.num_blocks)
        self.right_decoder = TransformerDecoder(cfg, cfg.r_num_blocks)

    def score_hypotheses(self, encoder_out, hyps, reverse_weight=0.0):
        cfg = self.cfg
        memory, mask = _memory(encoder_out, len(hyps))
        ys, lens = _with_sos(hyps, cfg.sos, cfg.eos, encoder_out.device)
        logp = torch.log_softmax(self.left_decoder(memory, mask, ys, lens).float(), dim=-1)
        if reverse_weight <= 0:
            return logp, None
        r_ys, _ = _with_sos([list(reversed(list(h))) for h in hyps], cfg.sos, cfg.eos, encoder_out.device)
        r_logp = torch.log_softmax(self.right_decoder(memory, mask, r_ys, lens).float(), dim=-1)
        return logp, r_logp


class UniTransformerDecoder(TransformerDecoder, AttentionDecoder):
    """WeNet's plain `transformer` decoder (left-to-right only; keys at top level)."""

    def score_hypotheses(self, encoder_out, hyps, reverse_weight=0.0):
        cfg = self.cfg
        memory, mask = _memory(encoder_out, len(hyps))
        ys, lens = _with_sos(hyps, cfg.sos, cfg.eos, encoder_out.device)
        return torch.log_softmax(self(memory, mask, ys, lens).float(), dim=-1), None


def build_decoder(cfg: DecoderConfig) -> AttentionDecoder:
    return BiTransformerDecoder(cfg) if cfg.bidirectional else UniTransformerDecoder(cfg)
