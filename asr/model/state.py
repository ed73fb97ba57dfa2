"""Streaming encoder state as named tensors, with pure stack/unstack over streams.

A batch of streams may sit at different offsets and hold different amounts of attention
history. The batched form left-pads each stream's attention cache to the longest one and
records the valid length, so that key slot j of stream i is at absolute position
`offset[i] - C + j` (C = padded cache length) and is valid when `j >= C - att_len[i]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ModelConfig


@dataclass(frozen=True)
class EncoderState:
    """att_cache (L, B, h, C, 2*dk): keys || values, left-padded; att_len (B,) valid frames;
    cnn_cache (L, B, d, K-1): each conv module's GLU outputs for the last K-1 frames (unused
    while offset is 0: a stream without history starts from what zeros give, as in WeNet);
    offset (B,): encoder frames emitted."""

    att_cache: Tensor
    att_len: Tensor
    cnn_cache: Tensor
    offset: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.offset.numel())

    @staticmethod
    def initial(cfg: ModelConfig, batch: int = 1, device: torch.device | str = "cpu",
                att_dtype: torch.dtype = torch.float32) -> "EncoderState":
        """att_dtype: the attention cache's dtype. Under bf16/fp16 autocast the keys and
        values are computed in that dtype, so a cache kept in it holds the same numbers as
        a float32 one in half the memory, and steps copy half as much."""
        dk2 = 2 * cfg.output_size // cfg.attention_heads
        lorder = cfg.cnn_module_kernel - 1 if (cfg.causal and cfg.use_cnn_module) else 0
        return EncoderState(
            att_cache=torch.zeros(cfg.num_blocks, batch, cfg.attention_heads, 0, dk2, device=device, dtype=att_dtype),
            att_len=torch.zeros(batch, dtype=torch.long, device=device),
            cnn_cache=torch.zeros(cfg.num_blocks, batch, cfg.output_size, lorder, device=device),
            offset=torch.zeros(batch, dtype=torch.long, device=device),
        )

    def to(self, device: torch.device | str) -> "EncoderState":
        return EncoderState(*(t.to(device) for t in (self.att_cache, self.att_len, self.cnn_cache, self.offset)))

    @staticmethod
    def stack(states: list["EncoderState"]) -> "EncoderState":
        """Join single- or multi-stream states along the batch axis (left-padding caches), on
        the first state's device (a stream just reset may hold a fresh state made elsewhere)."""
        if not states:
            raise ValueError("stack needs at least one state")
        device = states[0].att_cache.device
        states = [s if s.att_cache.device == device else s.to(device) for s in states]
        width = max(s.att_cache.size(3) for s in states)
        padded = [
            s.att_cache
            if s.att_cache.size(3) == width
            else torch.nn.functional.pad(s.att_cache, (0, 0, width - s.att_cache.size(3), 0))
            for s in states
        ]
        return EncoderState(
            att_cache=torch.cat(padded, dim=1),
            att_len=torch.cat([s.att_len for s in states]),
            cnn_cache=torch.cat([s.cnn_cache for s in states], dim=1),
            offset=torch.cat([s.offset for s in states]),
        )

    def unstack(self) -> list["EncoderState"]:
        """Split into single-stream states, each trimmed to its own valid cache (copies)."""
        out = []
        width = self.att_cache.size(3)
        for i in range(self.batch_size):
            n = int(self.att_len[i])
            out.append(
                EncoderState(
                    att_cache=self.att_cache[:, i : i + 1, :, width - n :].clone(),
                    att_len=self.att_len[i : i + 1].clone(),
                    cnn_cache=self.cnn_cache[:, i : i + 1].clone(),
                    offset=self.offset[i : i + 1].clone(),
                )
            )
        return out
