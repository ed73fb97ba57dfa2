"""Reader for CTranslate2's binary model format (`model.bin`, binary version 6).

Layout (little-endian): u32 version; string spec name; u32 spec revision; u32 variable
count, then per variable: string name, u8 rank, u32 x rank dims, u8 dtype, u32 byte count,
raw row-major data; then u32 alias count and (alias, target) string pairs. A string is a
u16 byte length (trailing NUL included) and its bytes. Read-only: nothing is executed.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

__all__ = ["CT2Model", "CT2FormatError", "read_ct2_model"]

SUPPORTED_VERSION = 6
# dtype codes of the format
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 binary model this reader understands."""


@dataclass
class CT2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def take(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise CT2FormatError("truncated CTranslate2 model file")
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        raw = self.take(self.u16())
        return raw.rstrip(b"\0").decode("utf-8")


def _open_parts(paths: Iterable[Path]) -> BinaryIO:
    """One readable stream over the concatenation of `paths` (a model split in parts)."""
    data = b"".join(Path(p).read_bytes() for p in paths)
    return io.BytesIO(data)


def read_ct2_model(*paths: str | Path) -> CT2Model:
    """Read `model.bin` (or its parts, in order, concatenated)."""
    f = _open_parts([Path(p) for p in paths])
    r = _Reader(f)
    version = r.u32()
    if version != SUPPORTED_VERSION:
        raise CT2FormatError(f"CTranslate2 binary version {version} is not supported (expected {SUPPORTED_VERSION})")
    spec = r.string()
    revision = r.u32()
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.u32()):
        name = r.string()
        dims = [r.u32() for _ in range(r.u8())]
        code = r.u8()
        nbytes = r.u32()
        raw = r.take(nbytes)
        if code == _BF16:
            # bfloat16: the upper half of a float32.
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif code in _DTYPES:
            arr = np.frombuffer(raw, _DTYPES[code])
        else:
            raise CT2FormatError(f"variable {name!r} has unknown dtype code {code}")
        count = int(np.prod(dims)) if dims else 1
        if arr.size != count:
            raise CT2FormatError(f"variable {name!r}: {arr.size} values for shape {dims}")
        variables[name] = arr.reshape(dims).copy()
    aliases = {}
    rest = f.read(4)
    if len(rest) == 4:
        for _ in range(struct.unpack("<I", rest)[0]):
            alias = r.string()
            aliases[alias] = r.string()
    return CT2Model(spec, revision, variables, aliases)
