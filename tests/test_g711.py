import warnings

import numpy as np
import pytest

from asr import g711

ALL_CODES = bytes(range(256))
ALL_LINEAR = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop  # noqa: PLC0415  (removed from the stdlib in Python 3.13)
        except ImportError:
            return None
    return audioop


audioop = _audioop()
needs_audioop = pytest.mark.skipif(
    audioop is None,
    reason="stdlib audioop is not importable (removed in Python 3.13); "
    "reference comparison against it cannot run",
)


@needs_audioop
def test_mulaw_decode_matches_audioop_all_codes():
    ref = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.mulaw_decode(ALL_CODES), ref)


@needs_audioop
def test_alaw_decode_matches_audioop_all_codes():
    ref = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.alaw_decode(ALL_CODES), ref)


@needs_audioop
def test_mulaw_encode_matches_audioop_all_inputs():
    ref = np.frombuffer(audioop.lin2ulaw(ALL_LINEAR.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(g711.mulaw_encode(ALL_LINEAR), ref)


@needs_audioop
def test_alaw_encode_matches_audioop_all_inputs():
    ref = np.frombuffer(audioop.lin2alaw(ALL_LINEAR.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(g711.alaw_encode(ALL_LINEAR), ref)


def test_known_values():
    assert g711.mulaw_decode(b"\xff")[0] == 0
    assert g711.mulaw_decode(b"\x7f")[0] == 0
    assert g711.mulaw_decode(b"\x00")[0] == -32124
    assert g711.mulaw_decode(b"\x80")[0] == 32124
    assert g711.alaw_decode(b"\xd5")[0] == 8
    assert g711.alaw_decode(b"\x55")[0] == -8
    assert g711.alaw_decode(b"\xaa")[0] == 32256
    assert g711.alaw_decode(b"\x2a")[0] == -32256
    assert g711.mulaw_encode(np.array([0], np.int16))[0] == 0xFF
    assert g711.alaw_encode(np.array([0], np.int16))[0] == 0xD5
    assert g711.mulaw_encode(np.array([32767, -32768], np.int16)).tolist() == [0x80, 0x00]
    assert g711.alaw_encode(np.array([32767, -32768], np.int16)).tolist() == [0xAA, 0x2A]


def test_dtypes_and_shapes():
    x = ALL_LINEAR[::97].reshape(-1, 1)
    for enc, dec in ((g711.mulaw_encode, g711.mulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        b = enc(x)
        assert b.dtype == np.uint8 and b.shape == x.shape
        y = dec(b)
        assert y.dtype == np.int16 and y.shape == x.shape
        # bytes, bytearray and arrays decode identically
        flat = b.ravel()
        np.testing.assert_array_equal(dec(flat.tobytes()), dec(flat))
        np.testing.assert_array_equal(dec(bytearray(flat.tobytes())), dec(flat))
    with pytest.raises(ValueError):
        g711.mulaw_encode(np.array([40000]))
    with pytest.raises(TypeError):
        g711.alaw_encode(np.array([0.5]))


@pytest.mark.parametrize("law", ["mu", "a"])
def test_decode_tables_are_monotonic_and_codes_are_fixed_points(law):
    enc, table = (
        (g711.mulaw_encode, g711.MULAW_DECODE_TABLE)
        if law == "mu"
        else (g711.alaw_encode, g711.ALAW_DECODE_TABLE)
    )
    # every decoded level re-encodes to a code that decodes to the same level
    np.testing.assert_array_equal(table[enc(table)], table)
    # encoding is monotonic non-decreasing in the linear value
    levels = table[enc(ALL_LINEAR)].astype(np.int32)
    assert np.all(np.diff(levels) >= 0)
    assert len(np.unique(table)) == (255 if law == "mu" else 256)  # mu-law has +0 and -0


@pytest.mark.parametrize("law", ["mu", "a"])
def test_round_trip_error_bounds(law):
    enc, dec = (g711.mulaw_encode, g711.mulaw_decode) if law == "mu" else (g711.alaw_encode, g711.alaw_decode)
    x = ALL_LINEAR.astype(np.int32)
    y = dec(enc(ALL_LINEAR)).astype(np.int32)
    err = np.abs(y - x)
    mag = np.abs(x)
    if law == "mu":
        # Segment 0 (|x| < 124): step 8, so half a step (4) plus up to 3 lost
        # by the truncation to 14 bits.
        assert err[mag < 120].max() <= 7
        # Logarithmic part: relative error about half of 1/16 of a segment
        # (1/33 asymptotically) plus truncation.
        big = (mag >= 1024) & (mag <= 32000)
        assert np.max(err[big] / mag[big]) < 0.036
        # Top of the range clips to +-32124.
        assert err.max() == 644
    else:
        # Segments 0 and 1 (|x| < 256): uniform step 16, mid-step decoding.
        assert err[mag < 256].max() <= 8
        # Above: error at most half a step, i.e. 1/32 of the value.
        big = mag >= 256
        assert np.max(err[big] / mag[big]) <= 1 / 32
        assert err.max() == 512
    # SNR of a full-range sine is ~38 dB for both laws.
    t = np.arange(8000)
    s = (20000 * np.sin(2 * np.pi * 1000.0 / 8000 * t + 0.3)).astype(np.int16)
    r = dec(enc(s)).astype(np.float64)
    snr = 10 * np.log10(np.sum(s.astype(np.float64) ** 2) / np.sum((r - s) ** 2))
    assert 35 < snr < 42
