"""Conformer building blocks with WeNet's semantics and parameter names.

Parameter names match WeNet's `state_dict` keys (`embed.conv.0`, `self_attn.linear_q`,
`conv_module.pointwise_conv1`, ...) so that WeNet checkpoints map onto these modules
one to one. Every layer takes explicit caches and returns the new ones: nothing is
stored on the module between calls.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import ModelConfig


class Dropout(nn.Module):
    """Inverted dropout whose CPU masks are windows of a shared, pre-drawn pool of masks.

    torch samples CPU dropout masks serially: on 2 cores that was ~23% of a training step.
    A window at a random offset of a 8M-entry pool costs one multiply; windows of an i.i.d.
    pool regularise like fresh masks. The pool is redrawn every `REDRAW` uses. Offsets come
    from torch's generator, so runs stay reproducible under `torch.manual_seed`. Other
    devices (CUDA samples in parallel) and tensors larger than half the pool use torch's own.
    """

    POOL = 1 << 23
    REDRAW = 4096
    _pools: dict[tuple[float, torch.dtype], list] = {}  # (p, dtype) -> [pool, uses]

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def _pool(self, dtype: torch.dtype) -> Tensor:
        entry = Dropout._pools.get((self.p, dtype))
        if entry is None or entry[1] >= self.REDRAW:
            keep = torch.rand(self.POOL) >= self.p
            entry = [(keep.to(torch.float32) / (1.0 - self.p)).to(dtype), 0]
            Dropout._pools[(self.p, dtype)] = entry
        entry[1] += 1
        return entry[0]

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        if x.device.type != "cpu" or n > self.POOL // 2 or not x.is_floating_point():
            return nn.functional.dropout(x, self.p, True)
        pool = self._pool(x.dtype)
        start = int(torch.randint(0, self.POOL - n + 1, ()))
        return x * pool[start : start + n].view(x.shape)


class GlobalCMVN(nn.Module):
    """x -> (x - mean) * istd, with statistics stored as buffers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("istd", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.istd


def subsampled_lengths(lengths: Tensor, input_layer: str) -> Tensor:
    """Encoder frames produced from `lengths` fbank frames (never negative)."""
    if input_layer == "conv2d":
        out = torch.div(torch.div(lengths - 1, 2, rounding_mode="floor") - 1, 2, rounding_mode="floor")
    elif input_layer == "conv2d6":
        out = torch.div(torch.div(lengths - 1, 2, rounding_mode="floor") - 2, 3, rounding_mode="floor")
    else:  # conv2d8
        t = torch.div(lengths - 1, 2, rounding_mode="floor")
        t = torch.div(t - 1, 2, rounding_mode="floor")
        out = torch.div(t - 1, 2, rounding_mode="floor")
    return out.clamp(min=0)


class Conv2dSubsampling(nn.Module):
    """Conv2d front end: (B, T, idim) -> (B, T', d), T' ~ T / rate.

    The flatten after the convolutions is channel-major, as in WeNet.
    """

    def __init__(self, idim: int, d: int, input_layer: str) -> None:
        super().__init__()
        self.input_layer = input_layer
        f = (idim - 1) // 2
        if input_layer == "conv2d":
            self.conv = nn.Sequential(nn.Conv2d(1, d, 3, 2), nn.ReLU(True), nn.Conv2d(d, d, 3, 2), nn.ReLU(True))
            self.out = nn.Sequential(nn.Linear(d * ((f - 1) // 2), d))
        elif input_layer == "conv2d6":
            self.conv = nn.Sequential(nn.Conv2d(1, d, 3, 2), nn.ReLU(True), nn.Conv2d(d, d, 5, 3), nn.ReLU(True))
            self.linear = nn.Linear(d * ((f - 2) // 3), d)
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(1, d, 3, 2), nn.ReLU(True), nn.Conv2d(d, d, 3, 2), nn.ReLU(True), nn.Conv2d(d, d, 3, 2), nn.ReLU(True)
            )
            self.linear = nn.Linear(d * (((f - 1) // 2 - 1) // 2), d)

    def forward(self, x: Tensor) -> Tensor:
        # Channels-last input: oneDNN convolves it as it is, where the default layout is
        # reordered around every call (the front end ran 1.2-1.5x faster at batch 32).
        x = self.conv(x.unsqueeze(1).to(memory_format=torch.channels_last))  # (B, d, T', F')
        b, c, t, f = x.shape
        x = x.transpose(1, 2).reshape(b, t, c * f)
        return self.out(x) if self.input_layer == "conv2d" else self.linear(x)


def sinusoid(positions: Tensor, d: int) -> Tensor:
    """WeNet's positional table evaluated at integer `positions` (any shape) -> (..., d).

    Computed in float32 exactly as the table is built (position * div_term, then sin/cos),
    so any position, also beyond the table's 5000 rows, gives WeNet's value.
    """
    div_term = torch.exp(torch.arange(0, d, 2, dtype=torch.float32, device=positions.device) * -(math.log(10000.0) / d))
    angles = positions.to(torch.float32).unsqueeze(-1) * div_term
    pe = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)
    return pe.flatten(-2)


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with WeNet's relative-position terms (no rel_shift).

    score = ((q + u) k^T + (q + v) p^T) / sqrt(dk), where p = linear_pos(PE(key positions)).
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)
        self.linear_pos = nn.Linear(d, d, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.dk))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.dk)

    def project_positions(self, pos_emb: Tensor) -> Tensor:
        """(B|1, K, d) positional embeddings -> p (B|1, h, K, dk)."""
        return self._heads(self.linear_pos(pos_emb)).transpose(1, 2)

    def forward(
        self, x: Tensor, mask: Tensor | None, pos_emb: Tensor | None, kv_cache: Tensor | None, p: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, t, d); mask (B, t|1, K) True = attend, or None when every key may be
        attended; pos_emb (B|1, K, d), or p = `project_positions(pos_emb)` already made;
        kv_cache (B, h, C, 2*dk) or None, with K = C + t. Returns (out, new kv (B, h, K, 2*dk))."""
        b, t, _ = x.shape
        q = self._heads(self.linear_q(x))  # (B, t, h, dk)
        k = self._heads(self.linear_k(x)).transpose(1, 2)
        v = self._heads(self.linear_v(x)).transpose(1, 2)
        if kv_cache is not None and kv_cache.size(2) > 0:
            ck, cv = kv_cache.split(self.dk, dim=-1)
            k = torch.cat([ck, k], dim=2)
            v = torch.cat([cv, v], dim=2)
        new_kv = torch.cat([k, v], dim=-1)
        if p is None:
            p = self.project_positions(pos_emb)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        scores = (q_u @ k.transpose(-2, -1) + q_v @ p.transpose(-2, -1)) / math.sqrt(self.dk)
        if mask is None:
            attn = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        else:
            blocked = ~mask.unsqueeze(1)  # (B, 1, t|1, K)
            scores = scores.float().masked_fill(blocked, float("-inf"))
            attn = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0).to(v.dtype)
        out = (self.dropout(attn) @ v).transpose(1, 2).reshape(b, t, self.h * self.dk)
        return self.linear_out(out), new_kv


class ConvolutionModule(nn.Module):
    """Pointwise conv -> GLU -> depthwise conv -> norm -> SiLU -> pointwise conv."""

    def __init__(self, d: int, kernel: int, causal: bool, norm: str) -> None:
        super().__init__()
        self.lorder = kernel - 1 if causal else 0
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1)
        self.depthwise_conv = nn.Conv1d(d, d, kernel, padding=0 if causal else (kernel - 1) // 2, groups=d)
        self.use_layer_norm = norm == "layer_norm"
        # WeNet's conv-module LayerNorm always used eps 1e-5, whatever norm_eps says.
        self.norm = nn.LayerNorm(d, eps=1e-5) if self.use_layer_norm else nn.BatchNorm1d(d)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1)

    def forward(self, x: Tensor, pad_mask: Tensor | None, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (B, t, d); pad_mask (B, 1, t) True = valid, or None; cache (B, d, lorder): the
        GLU outputs of the stream's previous lorder frames (streaming, see `initial_cache`),
        or None for whole utterances (left context of zeros before pointwise_conv1, as WeNet).

        Returns (out (B, t, d), the depthwise convolution's input (B, d, lorder + t)), from
        which the caller takes each stream's next cache among its own valid frames.
        """
        x = x.transpose(1, 2)
        if pad_mask is not None:
            x = x.masked_fill(~pad_mask, 0.0)
        if self.lorder > 0 and cache is None:
            x = nn.functional.pad(x, (self.lorder, 0))
        x = nn.functional.glu(self.pointwise_conv1(x), dim=1)
        if self.lorder > 0 and cache is not None:
            # pointwise_conv1 and GLU act frame by frame, so the cache holds their outputs:
            # a 16-frame step no longer recomputes them for 14 frames of history.
            x = torch.cat([cache.to(x.dtype), x], dim=2)
        padded = x
        x = self.depthwise_conv(x)
        if self.use_layer_norm:
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        else:
            x = self.norm(x)
        x = self.pointwise_conv2(nn.functional.silu(x))
        if pad_mask is not None:
            x = x.masked_fill(~pad_mask, 0.0)
        return x.transpose(1, 2), padded

    def initial_cache(self) -> Tensor:
        """(1, d, 1): what a frame of zeros gives after pointwise_conv1 and GLU, the value
        of every cache frame of a stream without history."""
        w = self.pointwise_conv1.weight
        return nn.functional.glu(self.pointwise_conv1(w.new_zeros(1, w.size(1), 1)), dim=1)


class FeedForward(nn.Module):
    def __init__(self, d: int, units: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d, units)
        self.w_2 = nn.Linear(units, d)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(nn.functional.silu(self.w_1(x))))


class ConformerBlock(nn.Module):
    """Macaron FFN (x0.5) -> MHSA -> conv -> FFN (x0.5) -> LayerNorm, pre-norm residuals."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, eps = cfg.output_size, cfg.norm_eps
        self.self_attn = RelPositionAttention(d, cfg.attention_heads, cfg.attention_dropout_rate)
        self.feed_forward = FeedForward(d, cfg.linear_units, cfg.dropout_rate)
        self.norm_ff = nn.LayerNorm(d, eps=eps)
        self.norm_mha = nn.LayerNorm(d, eps=eps)
        self.ff_scale = 1.0
        if cfg.macaron_style:
            self.feed_forward_macaron = FeedForward(d, cfg.linear_units, cfg.dropout_rate)
            self.norm_ff_macaron = nn.LayerNorm(d, eps=eps)
            self.ff_scale = 0.5
        if cfg.use_cnn_module:
            self.conv_module = ConvolutionModule(d, cfg.cnn_module_kernel, cfg.causal, cfg.cnn_module_norm)
            self.norm_conv = nn.LayerNorm(d, eps=eps)
            self.norm_final = nn.LayerNorm(d, eps=eps)
        self.dropout = Dropout(cfg.dropout_rate)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        pos_emb: Tensor | None,
        pad_mask: Tensor | None,
        kv_cache: Tensor | None = None,
        cnn_cache: Tensor | None = None,
        p: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns (x, new kv (B, h, C + t, 2dk), depthwise conv input (B, d, lorder + t) or None).
        p: this layer's projected positions, in place of pos_emb (see RelPositionAttention)."""
        if hasattr(self, "feed_forward_macaron"):
            x = x + self.ff_scale * self.dropout(self.feed_forward_macaron(self.norm_ff_macaron(x)))
        att, new_kv = self.self_attn(self.norm_mha(x), mask, pos_emb, kv_cache, p)
        x = x + self.dropout(att)
        conv_in = None
        if hasattr(self, "conv_module"):
            conv, conv_in = self.conv_module(self.norm_conv(x), pad_mask, cnn_cache)
            x = x + self.dropout(conv)
        x = x + self.ff_scale * self.dropout(self.feed_forward(self.norm_ff(x)))
        if hasattr(self, "norm_final"):
            x = self.norm_final(x)
        return x, new_kv, conv_in
