"""ITU-T G.711 mu-law and A-law codecs, vectorised with numpy.

The code words are the standard G.711 octets as they appear on the wire:

* mu-law: the magnitude is biased by 0x84 (132, i.e. 33 in 14-bit units),
  split into a 3-bit segment (exponent) and 4-bit mantissa, and the whole
  octet is bit-inverted, so 0xFF and 0x7F both decode to 0.
* A-law: 13-bit magnitude, segment 0 and 1 share the same step size, and
  the even bits are inverted (XOR 0x55); 0xD5 decodes to +8 and 0x55 to -8.

Linear samples are 16-bit two's complement.  Decoding uses 256-entry lookup
tables; encoding uses a 65536-entry table indexed by the int16 bit pattern,
built once (vectorised) on first use.  Results are bit-exact with the
classic Sun/CCITT reference routines used by e.g. Python's ``audioop``
module (``lin2ulaw``/``ulaw2lin``/``lin2alaw``/``alaw2lin`` with width 2).

Note on negative inputs to the mu-law encoder: like ``audioop`` (and Sun's
g711.c), a negative 16-bit sample is first reduced to 14 bits with an
arithmetic shift and then negated, so e.g. -1 encodes to the code for -8.
The ITU-T G.191 STL reference uses the one's complement instead (-1 -> 0);
the two differ by one 14-bit step at negative decision boundaries only.
Decoding tables are identical in all references.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "mulaw_encode",
    "mulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "MULAW_DECODE_TABLE",
    "ALAW_DECODE_TABLE",
]

_MU_BIAS = 0x84  # 132 in 16-bit units == 33 in 14-bit units
_MU_CLIP = 8159  # largest 14-bit magnitude before the bias is added


def _build_mulaw_decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF  # undo the bit inversion
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _MU_BIAS) << exponent) - _MU_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _build_alaw_decode_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55  # undo even-bit inversion
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # segment 0: step 2 (in 13-bit units), no leading one;
    # segment s >= 1: implied leading one, step 2**s.  Scaled to 16 bits (<<3).
    seg0 = (mantissa << 4) + 8
    segn = ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    magnitude = np.where(exponent == 0, seg0, segn)
    # A-law sign bit set means positive.
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


MULAW_DECODE_TABLE: np.ndarray = _build_mulaw_decode_table()
MULAW_DECODE_TABLE.setflags(write=False)
ALAW_DECODE_TABLE: np.ndarray = _build_alaw_decode_table()
ALAW_DECODE_TABLE.setflags(write=False)


def _mulaw_encode_vec(x: np.ndarray) -> np.ndarray:
    """Encode int16 samples (any shape) to mu-law octets, fully vectorised."""
    v = x.astype(np.int32) >> 2  # 14-bit two's complement
    negative = v < 0
    mag = np.minimum(np.abs(v), _MU_CLIP) + (_MU_BIAS >> 2)  # 33 .. 8192
    # Segment = number of bits above the 6 lowest ones (first segment ends at 0x3F).
    seg = np.searchsorted(
        np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag
    )
    mant = (mag >> np.minimum(seg + 1, 8)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | mant)
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_vec(x: np.ndarray) -> np.ndarray:
    """Encode int16 samples (any shape) to A-law octets, fully vectorised."""
    v = x.astype(np.int32) >> 3  # 13-bit two's complement
    negative = v < 0
    mag = np.where(negative, ~v, v)  # one's complement magnitude, 0 .. 4095
    seg = np.searchsorted(
        np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag
    )
    mant = (mag >> np.maximum(seg, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | mant)
    mask = np.where(negative, 0x55, 0xD5)
    return (code ^ mask).astype(np.uint8)


@functools.cache
def _encode_table(law: str) -> np.ndarray:
    # Index by the uint16 bit pattern of the int16 sample.
    lin = np.arange(65536, dtype=np.uint16).view(np.int16)
    table = _mulaw_encode_vec(lin) if law == "mu" else _alaw_encode_vec(lin)
    table.setflags(write=False)
    return table


def _as_int16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.int16:
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"expected int16 PCM samples, got dtype {x.dtype}")
        if x.size and (x.min() < -32768 or x.max() > 32767):
            raise ValueError("integer samples out of int16 range")
        x = x.astype(np.int16)
    return x


def _as_codes(b: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(b, (bytes, bytearray, memoryview)):
        return np.frombuffer(b, dtype=np.uint8)
    b = np.asarray(b)
    if b.dtype != np.uint8:
        if not np.issubdtype(b.dtype, np.integer):
            raise TypeError(f"expected uint8 code words, got dtype {b.dtype}")
        if b.size and (b.min() < 0 or b.max() > 255):
            raise ValueError("code words out of 0..255 range")
        b = b.astype(np.uint8)
    return b


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """int16 PCM (any shape) -> mu-law octets (uint8, same shape)."""
    x = _as_int16(x)
    return _encode_table("mu")[x.view(np.uint16)]


def mulaw_decode(b: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """mu-law octets (bytes or uint8 array) -> int16 PCM."""
    return MULAW_DECODE_TABLE[_as_codes(b)]


def alaw_encode(x: np.ndarray) -> np.ndarray:
    """int16 PCM (any shape) -> A-law octets (uint8, same shape)."""
    x = _as_int16(x)
    return _encode_table("a")[x.view(np.uint16)]


def alaw_decode(b: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A-law octets (bytes or uint8 array) -> int16 PCM."""
    return ALAW_DECODE_TABLE[_as_codes(b)]
