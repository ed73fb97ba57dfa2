"""Whisper's encoder and decoder as torch modules, loadable from a CTranslate2 WhisperSpec.

Parameter names follow CTranslate2's variable names with `/` replaced by `.`, so a
converted state dict maps one to one (`state_dict_from_ct2`). Pre-norm residual blocks,
GELU, layer norm eps 1e-5, scaled dot-product attention; the query/key/value projections
are one fused linear (`linear_0`), as CTranslate2 stores them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ct2 import CT2Model

__all__ = ["WhisperDims", "WhisperEncoder", "WhisperDecoder", "state_dict_from_ct2", "dims_from_ct2", "key_mask"]

LN_EPS = 1e-5


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int = 80
    d_model: int = 512
    heads: int = 8
    ffn: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    max_source_positions: int = 1500  # encoder frames (30 s at 50 per second)
    vocab_size: int = 51865
    max_target_positions: int = 448


def key_mask(lengths: torch.Tensor | None, t: int) -> torch.Tensor | None:
    """Attention mask (B, 1, 1, t) of the valid keys of a padded batch (None: all valid)."""
    if lengths is None or int(lengths.min()) >= t:
        return None
    return (torch.arange(t, device=lengths.device)[None] < lengths[:, None])[:, None, None, :]


class _LayerNorm(nn.LayerNorm):
    """Layer norm whose parameters are named as CTranslate2 names them (gamma, beta)."""

    def __init__(self, d: int) -> None:
        nn.Module.__init__(self)
        self.normalized_shape = (d,)
        self.eps = LN_EPS
        self.elementwise_affine = True
        self.gamma = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.gamma, self.beta, self.eps)


class _SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.layer_norm = _LayerNorm(d)
        self.linear_0 = nn.Linear(d, 3 * d)  # query, key, value
        self.linear_1 = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.linear_0(self.layer_norm(x)).view(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return x + self.linear_1(out.transpose(1, 2).reshape(b, t, d))


class _CrossAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.layer_norm = _LayerNorm(d)
        self.linear_0 = nn.Linear(d, d)  # query
        self.linear_1 = nn.Linear(d, 2 * d)  # key, value of the encoder output
        self.linear_2 = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        h, dh = self.heads, d // self.heads
        q = self.linear_0(self.layer_norm(x)).view(b, t, h, dh).transpose(1, 2)
        k, v = self.linear_1(memory).view(b, memory.size(1), 2, h, dh).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return x + self.linear_2(out.transpose(1, 2).reshape(b, t, d))


class _FeedForward(nn.Module):
    def __init__(self, d: int, ffn: int) -> None:
        super().__init__()
        self.layer_norm = _LayerNorm(d)
        self.linear_0 = nn.Linear(d, ffn)
        self.linear_1 = nn.Linear(ffn, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear_1(F.gelu(self.linear_0(self.layer_norm(x))))


class _EncoderLayer(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.self_attention = _SelfAttention(dims.d_model, dims.heads)
        self.ffn = _FeedForward(dims.d_model, dims.ffn)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ffn(self.self_attention(x, mask))


class _PositionEncodings(nn.Module):
    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.encodings = nn.Parameter(torch.zeros(n, d), requires_grad=False)


class WhisperEncoder(nn.Module):
    """Log-mel (B, T, 80) at 100 frames/s -> (B, ceil(T/2), d) at 50 frames/s."""

    def __init__(self, dims: WhisperDims = WhisperDims()) -> None:
        super().__init__()
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, dims.d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(dims.d_model, dims.d_model, 3, stride=2, padding=1)
        self.position_encodings = _PositionEncodings(dims.max_source_positions, dims.d_model)
        self.layers = nn.ModuleList(_EncoderLayer(dims) for _ in range(dims.encoder_layers))
        self.layer_norm = _LayerNorm(dims.d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + 1) // 2

    def embed(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = F.gelu(self.conv1(mel.transpose(1, 2)))
        valid = key_mask(lengths, mel.size(1))
        if valid is not None:  # padding as zeros, as alone: the strided convolution's last frame of an odd-length row reads one
            x = x * valid[:, 0]
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.size(1) > self.dims.max_source_positions:
            raise ValueError(
                f"Whisper's encoder takes at most {self.dims.max_source_positions * 2 // 100} s of audio at once"
            )
        return x + self.position_encodings.encodings[: x.size(1)].to(x.dtype)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None, layers: int | None = None) -> torch.Tensor:
        """Encoder output; `lengths` (B,) of the mel frames masks padded keys of a batch;
        `layers`: run only the first N layers (without the final norm)."""
        x = self.embed(mel, lengths)
        mask = key_mask(None if lengths is None else self.output_lengths(lengths), x.size(1))
        for layer in self.layers[:layers]:
            x = layer(x, mask)
        return x if layers is not None and layers < len(self.layers) else self.layer_norm(x)

    def top(self, x: torch.Tensor, lengths: torch.Tensor | None, start: int) -> torch.Tensor:
        """The encoder output from the output `x` of its first `start` layers; `lengths`
        (B,): valid frames of x per row (None: all)."""
        mask = key_mask(lengths, x.size(1))
        for layer in self.layers[start:]:
            x = layer(x, mask)
        return self.layer_norm(x)


class _DecoderLayer(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.self_attention = _SelfAttention(dims.d_model, dims.heads)
        self.attention = _CrossAttention(dims.d_model, dims.heads)
        self.ffn = _FeedForward(dims.d_model, dims.ffn)


class WhisperDecoder(nn.Module):
    """Teacher-forced token log-probs (B, L, vocab) given tokens (B, L) and the encoder
    output (B, T, d): what attention rescoring needs (no incremental generation).

    Several hypotheses can also share one row as a prefix tree: `positions` (L,) gives
    each token's depth and `self_mask` (L, L) which tokens each one sees (its ancestors
    and itself) in place of the causal mask, so shared prefixes run once.
    """

    def __init__(self, dims: WhisperDims = WhisperDims()) -> None:
        super().__init__()
        self.dims = dims
        self.embeddings = nn.Embedding(dims.vocab_size, dims.d_model)
        self.position_encodings = _PositionEncodings(dims.max_target_positions, dims.d_model)
        self.layers = nn.ModuleList(_DecoderLayer(dims) for _ in range(dims.decoder_layers))
        self.layer_norm = _LayerNorm(dims.d_model)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, self_mask: torch.Tensor | None = None) -> torch.Tensor:
        depth = tokens.size(1) if positions is None else int(positions.max()) + 1
        if depth > self.dims.max_target_positions:
            raise ValueError(f"at most {self.dims.max_target_positions} decoder positions")
        table = self.position_encodings.encodings
        x = self.embeddings(tokens) + (table[: tokens.size(1)] if positions is None else table[positions])
        x = x.to(memory.dtype)
        for layer in self.layers:
            x = layer.self_attention(x, self_mask, causal=self_mask is None)
            x = layer.attention(x, memory, memory_mask)
            x = layer.ffn(x)
        x = self.layer_norm(x)
        return torch.log_softmax((x @ self.embeddings.weight.to(x.dtype).T).float(), dim=-1)


def dims_from_ct2(m: CT2Model) -> WhisperDims:
    v = m.variables
    n_enc = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    n_dec = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    emb = m.get("decoder/embeddings/weight")
    return WhisperDims(
        n_mels=v["encoder/conv1/weight"].shape[1],
        d_model=v["encoder/conv1/weight"].shape[0],
        heads=int(v["encoder/num_heads"]),
        ffn=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        vocab_size=emb.shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
    )


def state_dict_from_ct2(m: CT2Model, part: str) -> dict[str, torch.Tensor]:
    """The float32 state dict of `part` ("encoder" or "decoder") from CTranslate2 variables
    (settings, which are scalars, are left out)."""
    prefix = part + "/"
    out = {}
    for name, arr in m.variables.items():
        if not name.startswith(prefix) or arr.ndim == 0:
            continue
        key = re.sub(r"^layer_(\d+)/", r"layers.\1/", name[len(prefix):]).replace("/", ".")
        out[key] = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    return out
