"""Conformer encoder with a CTC head: full-context, chunk-masked and batched streaming forward.

Shapes: fbank input (B, T, idim) before CMVN (CMVN runs inside, as in WeNet); encoder
output (B, T', d) with T' = subsampled_lengths(T); CTC log-probs (B, T', vocab).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .layers import ConformerBlock, Conv2dSubsampling, GlobalCMVN, sinusoid, subsampled_lengths
from .state import EncoderState

__all__ = ["ConformerEncoder", "CTCModel", "PositionTable", "TracedBlocks", "chunk_mask", "chunk_window"]


def chunk_mask(size: int, chunk: int, left_chunks: int = -1, device: torch.device | str = "cpu") -> Tensor:
    """(size, size) bool: frame i attends to frame j within its own chunk and `left_chunks`
    chunks before it (all history when left_chunks < 0). Same as WeNet's subsequent_chunk_mask."""
    idx = torch.arange(size, device=device)
    chunk_id = idx // chunk
    end = (chunk_id + 1) * chunk
    start = torch.zeros_like(idx) if left_chunks < 0 else ((chunk_id - left_chunks) * chunk).clamp(min=0)
    return (idx[None, :] < end[:, None]) & (idx[None, :] >= start[:, None])


def chunk_window(cfg: ModelConfig, chunk_size: int) -> tuple[int, int]:
    """(window, stride) in fbank frames for chunk_size encoder frames per step.

    The subsampling convolution has no cache, so consecutive windows overlap by
    right_context + 1 - rate frames; window = (chunk - 1) * rate + right_context + 1.
    """
    rate, ctx = cfg.subsampling_rate, cfg.right_context
    return (chunk_size - 1) * rate + ctx + 1, chunk_size * rate


class PositionTable:
    """Every layer's projected positional embeddings, linear_pos(PE(p)) for 0 <= p < size,
    for streaming steps of a model whose weights no longer change.

    Streams in a batch sit at different offsets, so a step projected (B, C + t) embeddings
    in every layer, about a fifth of the attention's time at batch 32; gathering rows of
    this table gives the same values. Build it under the autocast the steps run in (its
    values are that precision's). Rows are laid out (h * size, dk) per layer so that the
    gather is (B, h, K, dk) and contiguous, as the score product wants it.
    """

    def __init__(self, encoder: "ConformerEncoder", size: int) -> None:
        device = next(encoder.parameters()).device
        pe = sinusoid(torch.arange(size, device=device), encoder.cfg.output_size)[None]
        self.size = size
        self.heads = encoder.cfg.attention_heads
        self.tables = []
        for layer in encoder.encoders:
            p = layer.self_attn.project_positions(pe)[0]  # (h, size, dk)
            self.tables.append(p.reshape(self.heads * size, p.size(-1)))

    def covers(self, positions: Tensor) -> bool:
        return int(positions.max()) < self.size

    def gather(self, layer: int, index: Tensor, shape: tuple[int, int]) -> Tensor:
        """Layer's p (B, h, K, dk) for `index` = `self.index(positions)`; shape = (B, K)."""
        table = self.tables[layer]
        return table.index_select(0, index).view(shape[0], self.heads, shape[1], table.size(-1))

    def index(self, positions: Tensor) -> Tensor:
        """(B, K) positions -> flat row index (B * h * K) into each layer's table."""
        head = torch.arange(self.heads, device=positions.device)[None, :, None] * self.size
        return (head + positions[:, None, :]).flatten()


class _BlockStack(nn.Module):
    """The blocks of one streaming step with the optional inputs of one variant fixed:
    `present` says which of mask, pos_emb, pad, conv caches and positions are given
    (torch.jit.trace takes tensors only)."""

    def __init__(self, layers: nn.ModuleList, present: tuple[bool, bool, bool, bool, bool]) -> None:
        super().__init__()
        self.layers = layers
        self.present = present

    def forward(self, x: Tensor, att_cache: Tensor, *given: Tensor) -> tuple[Tensor, ...]:
        n = len(self.layers)
        it = iter(given)
        mask, pos_emb, pad = (next(it) if self.present[k] else None for k in range(3))
        cnn = [next(it) for _ in range(n)] if self.present[3] else [None] * n
        ps = [next(it) for _ in range(n)] if self.present[4] else [None] * n
        x, kvs, conv_ins = run_blocks(self.layers, x, mask, pos_emb, pad, att_cache, cnn, ps)
        return (x, *kvs, *[c for c in conv_ins if c is not None])


def run_blocks(
    layers: nn.ModuleList, x: Tensor, mask: Tensor | None, pos_emb: Tensor | None, pad: Tensor | None,
    att_cache: Tensor, cnn: list[Tensor | None], ps: list[Tensor | None],
) -> tuple[Tensor, list[Tensor], list[Tensor | None]]:
    """The blocks of one streaming step, eagerly: (x, new kv per layer, conv input per layer)."""
    kvs, conv_ins = [], []
    for i, layer in enumerate(layers):
        x, kv, conv_in = layer(x, mask, pos_emb, pad, att_cache[i], cnn[i], ps[i])
        kvs.append(kv)
        conv_ins.append(conv_in)
    return x, kvs, conv_ins


class TracedBlocks:
    """The Conformer blocks of a streaming step as TorchScript traces, for a model whose
    weights no longer change.

    Run eagerly, the blocks make about 500 operator calls per step from Python, each
    taking the GIL, and wait for it whenever another thread holds it: in the server the
    event loop does, a third of the time, which slowed batched steps by 25-50% and steps
    of one stream by half (docs/benchmarks.md). A traced graph calls its operators from
    C++. One trace per variant of the step (masks or not, padding or not, history or not,
    projected positions or embeddings), made on the variant's first step under the
    caller's autocast; traces take any batch size and history length, and give the eager
    blocks' numbers bit for bit (tests/test_model.py).
    """

    def __init__(self, encoder: "ConformerEncoder") -> None:
        self.layers = encoder.encoders
        self._traces: dict[tuple, Any] = {}

    def __call__(
        self, x: Tensor, mask: Tensor | None, pos_emb: Tensor | None, pad: Tensor | None, att_cache: Tensor,
        cnn: list[Tensor | None], ps: list[Tensor | None],
    ) -> tuple[Tensor, list[Tensor], list[Tensor | None]]:
        present = (mask is not None, pos_emb is not None, pad is not None, cnn[0] is not None, ps[0] is not None)
        given = [t for t in (mask, pos_emb, pad) if t is not None]
        given += [t for t in cnn if t is not None] + [t for t in ps if t is not None]
        # A trace holds the casts its inputs' dtypes called for: one per combination.
        key = (present, att_cache.size(3) > 0, x.device, torch.is_autocast_enabled(x.device.type),
               tuple(t.dtype for t in (x, att_cache, *given)))
        graph = self._traces.get(key)
        if graph is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python values it fixes
                graph = torch.jit.trace(_BlockStack(self.layers, present), (x, att_cache, *given), check_trace=False)
            self._traces[key] = graph
        with torch.autocast(x.device.type, enabled=False):  # the trace holds autocast's casts
            out = graph(x, att_cache, *given)
        n = len(self.layers)
        conv_ins = list(out[1 + n :]) if present[3] else [None] * n
        return out[0], list(out[1 : 1 + n]), conv_ins


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.global_cmvn = GlobalCMVN(cfg.input_dim)
        self.embed = Conv2dSubsampling(cfg.input_dim, cfg.output_size, cfg.input_layer)
        self.encoders = nn.ModuleList([ConformerBlock(cfg) for _ in range(cfg.num_blocks)])
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=cfg.norm_eps)
        self.xscale = math.sqrt(cfg.output_size)

    def forward(self, xs: Tensor, xs_lens: Tensor, chunk_size: int = -1, left_chunks: int = -1) -> tuple[Tensor, Tensor]:
        """Whole utterances (B, T, idim) -> (B, T', d), lengths (B,).

        chunk_size <= 0 is full context; otherwise attention is limited by `chunk_mask`,
        which is exactly what `forward_chunk` computes stream-wise.
        """
        x = self.embed(self.global_cmvn(xs)) * self.xscale
        lens = subsampled_lengths(xs_lens, self.cfg.input_layer)
        t = x.size(1)
        pad = torch.arange(t, device=x.device)[None, :] < lens[:, None]  # (B, t)
        mask = pad[:, None, :]
        if chunk_size > 0:
            mask = mask & chunk_mask(t, chunk_size, left_chunks, x.device)[None]
        pos_emb = sinusoid(torch.arange(t, device=x.device), self.cfg.output_size)[None]
        for layer in self.encoders:
            x, _, _ = layer(x, mask, pos_emb, pad[:, None, :])
        return self.after_norm(x), lens

    def forward_chunk(
        self, xs: Tensor, xs_lens: Tensor, state: EncoderState, cache_frames: int = -1,
        positions: PositionTable | None = None, blocks: "TracedBlocks | None" = None,
    ) -> tuple[Tensor, Tensor, EncoderState]:
        """One streaming step for a batch of streams.

        xs (B, T_in, idim): each stream's fbank window (its last `right_context + 1 - rate`
        frames overlap the previous window), padded to T_in; xs_lens (B,) valid frames.
        state: the streams' stacked `EncoderState` (different offsets and cache lengths
        allowed). cache_frames: attention history kept afterwards (-1 = all). positions:
        projected positional embeddings to gather from, where they cover this step. blocks:
        the blocks as traced graphs (`TracedBlocks`), else they run eagerly.
        Returns (B, t, d) outputs, (B,) valid output lengths, and the new state.
        """
        cfg = self.cfg
        x = self.embed(self.global_cmvn(xs)) * self.xscale
        lens = subsampled_lengths(xs_lens, cfg.input_layer)
        b, t, _ = x.shape
        c = state.att_cache.size(3)
        slots = torch.arange(c + t, device=x.device)
        valid = (slots[None, :] >= (c - state.att_len)[:, None]) & (slots[None, :] < (c + lens)[:, None])
        key_positions = (state.offset[:, None] - c + slots[None, :]).clamp(min=0)
        if positions is not None and positions.covers(key_positions):
            pos_emb, pos_index = None, positions.index(key_positions)
        else:
            pos_emb, pos_index = sinusoid(key_positions, cfg.output_size), None  # (B, C + t, d)
        pad = (torch.arange(t, device=x.device)[None, :] < lens[:, None])[:, None, :]
        # Once streams hold their full history and bring full chunks, nothing is masked:
        # skipping the masks then saves four passes over scores and activations per layer.
        mask = None if bool(valid.all()) else valid[:, None, :]
        if bool(pad.all()):
            pad = None

        new_len = state.att_len + lens
        if cache_frames >= 0:
            new_len = new_len.clamp(max=cache_frames)
        width = int(new_len.max()) if b else 0
        # Next cache slot j of stream i holds key slot (c + lens[i] - width + j) of this step.
        kv_index = (c + lens[:, None] - width + torch.arange(width, device=x.device)[None, :]).clamp(min=0)
        lorder = state.cnn_cache.size(3)
        cnn_index = lens[:, None] + torch.arange(lorder, device=x.device)[None, :]
        # Usually every stream brings a full chunk: then the next caches are plain slices
        # (a gather per layer cost ~7% of a batched step).
        same = int(lens[0]) if b and bool((lens == lens[0]).all()) else None

        fresh = state.offset == 0  # streams without history: their conv caches start from zeros
        fresh = fresh if lorder > 0 and bool(fresh.any()) else None

        cnn_in: list[Tensor | None] = []
        ps: list[Tensor | None] = []
        for i, layer in enumerate(self.encoders):
            cnn_cache = state.cnn_cache[i] if lorder > 0 else None
            if fresh is not None:
                start = layer.conv_module.initial_cache().to(cnn_cache.dtype)
                cnn_cache = torch.where(fresh[:, None, None], start, cnn_cache)
            cnn_in.append(cnn_cache)
            ps.append(positions.gather(i, pos_index, key_positions.shape) if pos_index is not None else None)
        run = blocks if blocks is not None else functools.partial(run_blocks, self.encoders)
        x, kvs, conv_ins = run(x, mask, pos_emb, pad, state.att_cache, cnn_in, ps)

        att_caches, cnn_caches = [], []
        for i, (kv, conv_in) in enumerate(zip(kvs, conv_ins)):
            if same is not None:
                att_caches.append(kv[:, :, c + same - width : c + same])
            else:
                idx = kv_index[:, None, :, None].expand(b, kv.size(1), width, kv.size(3))
                att_caches.append(torch.gather(kv, 2, idx))
            if lorder > 0 and conv_in is not None:
                if same is not None:
                    cnn_caches.append(conv_in[:, :, same : same + lorder])
                else:
                    idx = cnn_index[:, None, :].expand(b, conv_in.size(1), lorder)
                    cnn_caches.append(torch.gather(conv_in, 2, idx))
            else:
                cnn_caches.append(state.cnn_cache[i])
        new_state = EncoderState(
            att_cache=torch.stack(att_caches).to(state.att_cache.dtype),
            att_len=new_len,
            cnn_cache=torch.stack(cnn_caches).to(state.cnn_cache.dtype),
            offset=state.offset + lens,
        )
        return self.after_norm(x), lens, new_state


class CTCHead(nn.Module):
    def __init__(self, d: int, vocab: int) -> None:
        super().__init__()
        self.ctc_lo = nn.Linear(d, vocab)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.ctc_lo(x).float(), dim=-1)


class CTCModel(nn.Module):
    """Encoder + CTC head. `forward` returns CTC log-probs (B, T', vocab) and lengths."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ConformerEncoder(cfg)
        self.ctc = CTCHead(cfg.output_size, cfg.vocab_size)

    def forward(self, xs: Tensor, xs_lens: Tensor, chunk_size: int = -1, left_chunks: int = -1) -> tuple[Tensor, Tensor]:
        out, lens = self.encoder(xs, xs_lens, chunk_size, left_chunks)
        return self.ctc(out), lens

    def forward_chunk(
        self, xs: Tensor, xs_lens: Tensor, state: EncoderState, cache_frames: int = -1,
        positions: PositionTable | None = None, blocks: "TracedBlocks | None" = None,
    ) -> tuple[Tensor, Tensor, EncoderState]:
        out, lens, state = self.encoder.forward_chunk(xs, xs_lens, state, cache_frames, positions, blocks)
        return self.ctc(out), lens, state

    def forward_with_encoder(
        self, xs: Tensor, xs_lens: Tensor, chunk_size: int = -1, left_chunks: int = -1
    ) -> tuple[Tensor, Tensor, Tensor]:
        """As `forward`, also returning the encoder output: (enc (B, T', d), logp, lens)."""
        out, lens = self.encoder(xs, xs_lens, chunk_size, left_chunks)
        return out, self.ctc(out), lens

    def forward_chunk_with_encoder(
        self, xs: Tensor, xs_lens: Tensor, state: EncoderState, cache_frames: int = -1,
        positions: PositionTable | None = None, blocks: "TracedBlocks | None" = None,
    ) -> tuple[Tensor, Tensor, Tensor, EncoderState]:
        """As `forward_chunk`, also returning the encoder output: (enc (B, t, d), logp, lens, state)."""
        out, lens, state = self.encoder.forward_chunk(xs, xs_lens, state, cache_frames, positions, blocks)
        return out, self.ctc(out), lens, state

    def initial_state(self, batch: int = 1, att_dtype: torch.dtype = torch.float32) -> EncoderState:
        return EncoderState.initial(self.cfg, batch, next(self.parameters()).device, att_dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
