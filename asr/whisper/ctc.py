"""Whisper-CTC: Whisper's pretrained encoder, frozen, under a trained CTC head.

The encoder stays exactly as pretrained, so its output also feeds Whisper's own decoder
when finals are attention-rescored. The head is a few pre-norm Transformer layers over
the encoder output, then a linear layer over tingxie's units. A head may also hold its
own fine-tuned copy of the encoder's top layers (`encoder_layers`): it then reads the
output of the layers below them, shared with the decoder's path, which keeps the
pretrained top layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import WhisperDims, WhisperEncoder, _EncoderLayer, _LayerNorm, key_mask

__all__ = ["HeadConfig", "CTCHead", "WhisperCTC"]


@dataclass(frozen=True)
class HeadConfig:
    vocab_size: int
    layers: int = 2
    d_model: int = 256
    heads: int = 4
    ffn: int = 1024
    stride: int = 2  # encoder frames per output frame: 2 gives 25 per second (40 ms)
    dropout: float = 0.1
    encoder_layers: int = 0  # top encoder layers the head has its own (fine-tuned) copy of


class CTCHead(nn.Module):
    """Encoder output (B, T, d) -> CTC log-probs (B, ceil(T / stride), vocab).

    `stride` adjacent encoder frames are concatenated and projected to the head's width:
    Mandarin needs no more than 25 output frames a second, and the head's cost halves.
    With `encoder_layers` k, the input is the output of the encoder's first L - k layers
    (before the final norm), run through the head's copies of the top k layers and norm.
    """

    def __init__(self, cfg: HeadConfig, dims: WhisperDims = WhisperDims()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder_layers = nn.ModuleList(_EncoderLayer(dims) for _ in range(cfg.encoder_layers))
        self.encoder_norm = _LayerNorm(dims.d_model) if cfg.encoder_layers else None
        inner = WhisperDims(d_model=cfg.d_model, heads=cfg.heads, ffn=cfg.ffn)
        self.input = nn.Linear(dims.d_model * cfg.stride, cfg.d_model)
        self.layers = nn.ModuleList(_EncoderLayer(inner) for _ in range(cfg.layers))
        self.layer_norm = _LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size)

    def copy_encoder_top(self, encoder: WhisperEncoder) -> None:
        """Set the head's copies of the top encoder layers (and norm) to `encoder`'s."""
        if self.encoder_norm is not None:
            self.encoder_layers.load_state_dict(encoder.layers[len(encoder.layers) - len(self.encoder_layers):].state_dict())
            self.encoder_norm.load_state_dict(encoder.layer_norm.state_dict())

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.cfg.stride - 1) // self.cfg.stride

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`lengths`: valid encoder frames per batch row (None: all)."""
        mask = key_mask(lengths, x.size(1))
        if self.encoder_norm is not None:
            for layer in self.encoder_layers:
                x = layer(x, mask)
            x = self.encoder_norm(x)
        if mask is not None:  # padding as zeros, as alone: the last output frame of an odd-length row reads one
            x = x * mask[:, 0, 0, :, None]
        b, t, d = x.shape
        s = self.cfg.stride
        if t % s:
            x = F.pad(x, (0, 0, 0, s - t % s))
        x = self.input(self.dropout(x.reshape(b, -1, d * s)))
        mask = key_mask(None if lengths is None else self.output_lengths(lengths), x.size(1))
        for layer in self.layers:
            x = self.dropout(layer(x, mask))
        return F.log_softmax(self.output(self.layer_norm(x)).float(), dim=-1)


class WhisperCTC(nn.Module):
    def __init__(self, head: HeadConfig, dims: WhisperDims = WhisperDims()) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = WhisperEncoder(dims)
        self.head = CTCHead(head, dims)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, memory: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(encoder output, CTC log-probs, output lengths) of log-mel (B, T, 80). The
        encoder output is the pretrained encoder's (what Whisper's decoder reads); with
        `memory` False and a head that has its own top layers, it is not computed (None)."""
        enc_lens = self.encoder.output_lengths(lengths)
        below = len(self.encoder.layers) - self.head.cfg.encoder_layers
        x = self.encoder(mel, lengths, layers=below)  # the encoder output when the head copies no layer
        if below == len(self.encoder.layers):
            enc = x
        elif memory:
            enc = self.encoder.top(x, enc_lens, below)
        else:
            enc = None
        return enc, self.head(x, enc_lens), self.head.output_lengths(enc_lens)
