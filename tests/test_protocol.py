"""Wire messages: parsing client frames, validating audio formats, encoding server messages,
and the one mapping from exceptions to error codes and close codes."""

import json

import pytest

from server import errors
from server.errors import FrameTooLarge, IdleTimeout, InternalError, Overloaded, ProtocolError, to_error
from server.protocol import (
    Audio,
    AudioFormat,
    Done,
    End,
    Error,
    Final,
    Partial,
    Ready,
    Start,
    TokenInfo,
    encode,
    parse,
    parse_format,
)


def code_of(frame):
    with pytest.raises(ProtocolError) as e:
        parse(frame)
    return e.value.code


def test_binary_frames_are_audio():
    assert parse(b"\x01\x02") == Audio(b"\x01\x02")
    assert parse(bytearray(b"")) == Audio(b"")


def test_start_and_end():
    assert parse('{"type":"start"}') == Start({})
    msg = parse(json.dumps({"type": "start", "sample_rate": 8000, "encoding": "mulaw", "channels": 2}))
    assert msg == Start({"sample_rate": 8000, "encoding": "mulaw", "channels": 2})
    assert parse('{"type": "end"}') == End()


@pytest.mark.parametrize(
    "frame, code",
    [
        ("not json", "bad_json"),
        ("{", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('"start"', "bad_json"),
        ("{}", "bad_message"),
        ('{"type": "begin"}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "start", "samplerate": 8000}', "bad_message"),
        ('{"type": "end", "now": true}', "bad_message"),
        ('{"type": "start", "encoding": "opus"}', "bad_config"),
        ('{"type": "start", "encoding": 1}', "bad_config"),
        ('{"type": "start", "sample_rate": 7999}', "bad_config"),
        ('{"type": "start", "sample_rate": 96000}', "bad_config"),
        ('{"type": "start", "sample_rate": "fast"}', "bad_config"),
        ('{"type": "start", "sample_rate": 16000.5}', "bad_config"),
        ('{"type": "start", "sample_rate": true}', "bad_config"),
        ('{"type": "start", "channels": 0}', "bad_config"),
        ('{"type": "start", "channels": 3}', "bad_config"),
        ("[" * 100000, "bad_json"),
    ],
)
def test_invalid_text_frames(frame, code):
    assert code_of(frame) == code


def test_format_from_query_strings_and_defaults():
    assert parse_format({}) == AudioFormat(16000, "pcm_s16le", 1)
    fmt = parse_format({"sample_rate": "8000", "encoding": "alaw", "channels": "2", "api_key": "x"})
    assert fmt == AudioFormat(8000, "alaw", 2)
    assert fmt.frame_bytes == 2 and AudioFormat(encoding="pcm_f32le", channels=2).frame_bytes == 8
    # Keys given override the base; others keep it.
    assert parse_format({"channels": 1}, fmt) == AudioFormat(8000, "alaw", 1)
    assert parse_format({"sample_rate": 44100.0}).sample_rate == 44100


def test_error_messages_name_the_problem_without_echoing_huge_input():
    with pytest.raises(ProtocolError) as e:
        parse(json.dumps({"type": "start", "encoding": "x" * 5000}))
    assert "unknown encoding" in e.value.message and "pcm_s16le" in e.value.message
    assert len(e.value.message) < 200


def test_start_transcript_options():
    msg = parse(json.dumps({"type": "start", "punctuation": False, "itn": True, "hotwords": ["阿里巴巴"]}))
    assert msg.options == {"punctuation": False, "itn": True, "hotwords": ["阿里巴巴"]}
    assert parse('{"type": "start"}').options == {}
    for bad, message in [({"punctuation": "yes"}, "punctuation must be true or false"),
                         ({"itn": 1}, "itn must be true or false"),
                         ({"hotwords": 5}, "hotwords must be a list")]:
        with pytest.raises(ProtocolError) as e:
            parse(json.dumps({"type": "start", **bad}))
        assert message in e.value.message and e.value.code == "bad_config"


def test_encode_server_messages():
    assert json.loads(encode(Ready("s1", 16000, "pcm_s16le", 1, "m"))) == {
        "type": "ready", "session": "s1", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1,
        "model": "m", "protocol": 1,
    }
    assert json.loads(encode(Partial(1, 2, "今天", 0.12345, 1.0))) == {
        "type": "partial", "channel": 1, "utterance": 2, "text": "今天", "start": 0.123, "end": 1.0,
    }
    final = Final(0, 0, "今天。", 0.1, 0.5, 0.87654321,
                  (TokenInfo("今", 0.1, 0.3, 0.9), TokenInfo("天。", 0.3, 0.5, float("nan"))), "今天")
    assert json.loads(encode(final)) == {
        "type": "final", "channel": 0, "utterance": 0, "text": "今天。", "start": 0.1, "end": 0.5, "confidence": 0.8765,
        "tokens": [{"text": "今", "start": 0.1, "end": 0.3, "confidence": 0.9},
                   {"text": "天。", "start": 0.3, "end": 0.5, "confidence": 0.0}],
        "raw_text": "今天",
        "pass": "full",
    }
    assert "今天" in encode(final)  # UTF-8 text, not \u escapes
    assert json.loads(encode(Done(12.3456))) == {"type": "done", "audio_seconds": 12.346}
    assert json.loads(encode(Error("bad_json", "x"))) == {"type": "error", "code": "bad_json", "message": "x"}


def test_errors_map_to_close_codes_in_one_place():
    assert to_error(ProtocolError("m", "bad_json")) == ("bad_json", "m", 1008)
    assert to_error(ProtocolError("m", "bad_config"))[2] == 1008
    assert to_error(IdleTimeout("m")) == ("idle_timeout", "m", 1008)
    assert to_error(FrameTooLarge("m")) == ("frame_too_large", "m", 1009)
    assert to_error(Overloaded("m")) == ("overloaded", "m", 1013)
    assert to_error(InternalError("m")) == ("internal_error", "m", 1011)
    # Unexpected exceptions never leak their text to the client.
    assert to_error(ValueError("secret path /x/y")) == ("internal_error", errors.INTERNAL_MESSAGE, 1011)
    assert errors.Unauthorized("x").status == 401 and errors.ServerBusy("x").status == 503
