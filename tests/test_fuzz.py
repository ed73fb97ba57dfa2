"""Property-based fuzzing (hypothesis) of every protocol's sans-I/O parser and of the
session core, and a bounded loopback run of malformed input through the real server
(tests/fuzzcases.py; long runs: bench/fuzz.py). Any input gets a value or the
protocol's documented error, never another exception."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.recognizer import Recognizer
from server import validate
from server.compat.funasr import FunasrConfig, FunasrError, parse_config
from server.errors import ServerError
from server.protocol import AudioFormat, ProtocolError, parse, parse_format
from server.session import Session, SessionConfig
from server.telephony.audiosocket import AudioSocketError, Frame, FrameReader, check_frame
from server.telephony.freeswitch import ForkConfig, ForkError, fork_config, parse_metadata
from server.telephony.twilio import TrackTimeline, TwilioError, parse_event

from . import fuzzcases
from .callhelpers import running

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

digits = st.sampled_from(fuzzcases.UNICODE_DIGITS + ["16000", " 8000 ", "9" * 5000, "1e5", "-1", "", "\x00"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=30), digits)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def json_text(keys: list[str], extra: dict | None = None):
    """JSON objects with the protocol's keys holding any values (or raw broken text)."""
    objs = st.fixed_dictionaries({}, optional={k: values for k in keys}).map(lambda d: {**(extra or {}), **d})
    return st.one_of(objs.map(lambda o: json.dumps(o, ensure_ascii=False, allow_nan=True)), st.text(max_size=60),
                     st.sampled_from(["[" * 5000, '{"a": "\\ud800"}', '{"x": NaN}', "{" * 40 + "}" * 40]))


@EXAMPLES
@given(value=values)
def test_validators_return_a_value_or_field_error(value):
    for fn in (lambda: validate.integer("n", value, 0, 10**6), lambda: validate.choice("c", value, ("a", "b")),
               lambda: validate.text("t", value, 10, numbers=True), lambda: validate.boolean("b", value)):
        try:
            fn()
        except validate.FieldError as e:
            assert len(str(e)) < 200


@EXAMPLES
@given(frame=st.one_of(json_text(["type", "sample_rate", "encoding", "channels", "x"], {"type": "start"}),
                       json_text(["type"]), st.binary(max_size=40)))
def test_native_parse(frame):
    try:
        parse(frame)
    except ProtocolError as e:
        assert e.code in fuzzcases.NATIVE_CODES and len(e.message) < 300


@EXAMPLES
@given(query=st.dictionaries(st.sampled_from(["sample_rate", "encoding", "channels"]), st.text(max_size=12)))
def test_native_query_format(query):
    try:
        assert isinstance(parse_format(query), AudioFormat)
    except ProtocolError as e:
        assert e.code == "bad_config"


@EXAMPLES
@given(obj=st.dictionaries(st.sampled_from(["mode", "audio_fs", "chunk_size", "hotwords", "wav_name", "wav_format",
                                            "itn"]), values))
def test_funasr_parse_config(obj):
    try:
        assert isinstance(parse_config(obj), FunasrConfig)
    except FunasrError:
        pass


@EXAMPLES
@given(frame=st.one_of(json_text(["event", "start", "media", "dtmf", "mark"], {"event": "media"}),
                       json_text(["start"], {"event": "start"}), st.binary(max_size=40)))
def test_twilio_parse_event(frame):
    try:
        event = parse_event(frame)
    except TwilioError as e:
        assert str(e)  # a message for the log
    else:
        assert event is None or type(event).__name__ in ("Connected", "StartEvent", "Media", "Dtmf", "Mark", "Stop")


@EXAMPLES
@given(track=st.sampled_from(["inbound", "outbound"]), stamps=st.lists(st.one_of(st.none(), st.integers(0, 10**12)),
                                                                          max_size=20))
def test_twilio_timeline(track, stamps):
    t = TrackTimeline()
    for s in stamps:
        assert len(t.place(track, s, 160)) <= 30 * 8000


@EXAMPLES
@given(query=st.dictionaries(st.sampled_from(["rate", "sample_rate", "mix", "call_id"]), st.text(max_size=12)),
       meta=st.one_of(json_text(["sampleRate", "sample_rate", "mixType", "mix", "callId", "uuid"]), st.text(max_size=20)))
def test_freeswitch_config(query, meta):
    try:
        assert isinstance(fork_config(query, parse_metadata(meta)), ForkConfig)
    except ForkError:
        pass


@EXAMPLES
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_audiosocket_frames(data, cuts):
    reader, frames = FrameReader(), []
    last = 0
    for c in sorted(cuts) + [len(data)]:
        frames += reader.feed(data[last:c])
        last = max(last, c)
    assert sum(3 + len(f.payload) for f in frames) + reader.pending == len(data)
    for f in frames:
        try:
            check_frame(Frame(f.kind, f.payload))
        except AudioSocketError:
            pass


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(["sample_rate", "encoding", "channels"]),
                             st.sampled_from(["8000", "²", "pcm_f32le", "mulaw", "2", "0", "9" * 50])),
       frames=st.lists(st.one_of(json_text(["type", "sample_rate", "encoding", "channels"], {"type": "start"}),
                                 st.just('{"type": "end"}'), st.binary(max_size=700),
                                 st.just(np.full(64, 1e38, "<f4").tobytes())), max_size=6))
def test_session_core_any_frames(rec, query, frames):
    """The session core, with real streams: any frame sequence is accepted or refused
    with a ServerError; requests and messages stay well formed."""
    s = Session("fuzz", SessionConfig("m", max_frame_bytes=600), rec.stream, query)
    for f in frames:
        try:
            s.receive(f)
        except ServerError as e:
            assert e.close_code in (1008, 1009) and e.message
            break
        for req in s.take_requests():
            assert req.channel < (s.format.channels if s.format else 1)
        s.take_messages()


@pytest.mark.parametrize("endpoint", fuzzcases.ENDPOINTS)
async def test_loopback_malformed_input_is_handled_as_documented(rec, endpoint):
    """A bounded run through the real server: every case handled as documented, no
    traceback in the server's log, no hang (bench/fuzz.py runs thousands)."""
    async with running(rec, audiosocket_port=0, http_port=0 if endpoint == "http" else -1, idle_timeout_s=5.0,
                       max_frame_bytes=65536) as app:
        ports = {"ws": app.port, "audiosocket": app.integrations.ports["audiosocket"],
                 "http": app.http_api.port if app.http_api else 0}
        counter = fuzzcases.install_counter()
        try:
            tally = await fuzzcases.fuzz(ports, endpoint, 30, seed=1, counter=counter, concurrency=4)
        finally:
            fuzzcases.remove_counter(counter)
    assert tally.tried == 30
    assert (tally.tracebacks, tally.hangs, tally.undocumented) == (0, 0, 0), tally.examples
