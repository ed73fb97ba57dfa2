"""The sans-I/O session, without sockets: configuration, audio decoding and splitting,
channels, endpoints, finals, flushing, errors, backlog and memory.

Protocol logic is tested with a scripted stand-in for `asr.recognizer.Stream` (loud
0.1 s chunks are "speech", each giving one character); recognition results are tested
with a real random model against `Recognizer.transcribe`. Requests run as the engine
runs them, synchronously: chunk audio fed as on submit (`server.batcher._feed`), then
the engine's own worker function (`Batcher._work`).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asr import g711
from asr.config import EndpointConfig
from asr.recognizer import Recognizer
from asr.vad import EnergyVad
from server.batcher import DEFERRED, Batcher, _feed
from server.errors import CLOSE_GOING_AWAY, FrameTooLarge, ProtocolError, to_error
from server.protocol import Done, Final, Partial, Ready
from server.session import ChunkRequest, FinalRequest, Session, SessionConfig

from .conftest import speech_like

NO_ENDPOINT = EndpointConfig(trailing_silence_ms=600_000, silence_without_speech_ms=600_000, max_utterance_ms=600_000)


# ---------------------------------------------------------------- scripted stream


class FakeStream:
    """0.1 s chunks; a chunk whose peak exceeds 0.05 is speech and yields the character
    str(round(10 * peak)); other chunks are blank."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.chunk = rate // 10
        self.buf = np.zeros(0, np.float32)
        self.done = False
        self.decoded = 0
        self.utt_start = 0
        self.tokens: list[tuple[str, float]] = []
        self.silent = 0

    def accept_waveform(self, audio):
        assert not self.done
        self.buf = np.concatenate([self.buf, np.asarray(audio, np.float32)])

    def input_finished(self):
        self.done = True

    def ready(self):
        return self.buf.size >= self.chunk or (self.done and self.buf.size > 0)

    def samples_until_ready(self):
        return 0 if self.ready() or self.done else self.chunk - self.buf.size

    def step(self):
        x, self.buf = self.buf[: self.chunk], self.buf[self.chunk :]
        t = self.decoded / self.rate
        self.decoded += x.size
        peak = float(np.abs(x).max())
        if peak > 0.05:
            self.tokens.append((str(round(10 * peak)), t))
            self.silent = 0
        else:
            self.silent += 1

    @property
    def decoded_s(self):
        return self.decoded / self.rate

    @property
    def utterance_start(self):
        return self.utt_start / self.rate

    @property
    def trailing_blank_s(self):
        return self.silent * 0.1

    def partial(self):
        text = "".join(c for c, _ in self.tokens)
        toks = tuple(SimpleNamespace(text=c, start=t, end=t + 0.1, confidence=0.9) for c, t in self.tokens)
        start = self.tokens[0][1] if self.tokens else self.utterance_start
        end = toks[-1].end if toks else self.decoded_s
        return SimpleNamespace(text=text, start=start, end=end, confidence=0.9, tokens=toks)

    def end_utterance(self):
        r = self.partial()
        self.tokens, self.silent, self.utt_start = [], 0, self.decoded
        return r


class FakeRecognizer:
    name = "fake"

    def __init__(self):
        self.transcribed: list[tuple[int, int]] = []

    def step(self, streams):
        for s in streams:
            s.step()

    def transcribe(self, audio, sample_rate=16000):
        self.transcribed.append((audio.size, sample_rate))
        return SimpleNamespace(text=f"<{audio.size}>", start=0.0, end=audio.size / sample_rate, confidence=1.0, tokens=())


def levels(*parts: tuple[float, float], rate: int = 16000) -> np.ndarray:
    """Audio made of (seconds, peak) parts: constant-amplitude blocks."""
    return np.concatenate([np.full(int(round(s * rate)), p, np.float32) for s, p in parts])


def s16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes()


def make(config=None, query=None, rec=None, final_pass="stream", endpoint=EndpointConfig(), max_frame=1 << 20):
    rec = rec or FakeRecognizer()
    cfg = config or SessionConfig(rec.name, endpoint, final_pass, max_frame)
    factory = (lambda rate: FakeStream(rate)) if isinstance(rec, FakeRecognizer) else (
        lambda rate: rec.stream(rate, rescoring=False if final_pass == "full" else None))
    return Session("sid", cfg, factory, query), Batcher(rec)


def work(engine: Batcher, reqs: list) -> tuple[list, object]:
    """One engine run over `reqs`: audio fed as `Batcher.submit` feeds it, then `_work`;
    a request whose audio could not be fed gets that error as its outcome."""
    errors = {i: _feed(r) for i, r in enumerate(reqs) if isinstance(r, ChunkRequest)}
    ok = [r for i, r in enumerate(reqs) if errors.get(i) is None]
    outcomes, stats = engine._work(ok)
    done = iter(outcomes)
    return [errors[i] if errors.get(i) is not None else next(done) for i in range(len(reqs))], stats


def drain(session: Session, engine: Batcher) -> list:
    """Run every request the session produces until it waits for input; return messages.
    Final passes the engine defers to a later batch (its time budget) run in the next."""
    reqs = session.take_requests()
    while reqs:
        outcomes, _ = work(engine, reqs)
        deferred = []
        for r, o in zip(reqs, outcomes):
            if o is DEFERRED:
                deferred.append(r)
                continue
            if isinstance(o, BaseException):
                raise o
            session.complete(r, o)
        reqs = deferred + session.take_requests()
    return session.take_messages()


def run_all(session, engine, frames, end=True):
    out = []
    for f in frames:
        session.receive(f)
        out += drain(session, engine)
    if end:
        session.receive('{"type": "end"}')
        out += drain(session, engine)
    return out


def split(data: bytes, seed: int, max_piece: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, max_piece))
        out.append(data[i : i + n])
        i += n
    return out


def of(msgs, cls):
    return [m for m in msgs if isinstance(m, cls)]


# ---------------------------------------------------------------- configuration


def test_start_gets_ready_with_the_configuration():
    s, _ = make(query={"sample_rate": "8000"})
    s.receive(json.dumps({"type": "start", "encoding": "mulaw"}))
    assert s.take_messages() == [Ready("sid", 8000, "mulaw", 1, "fake")]


def test_query_alone_configures_and_ready_precedes_results():
    s, e = make(query={"sample_rate": "8000", "encoding": "alaw", "channels": "2", "api_key": "k"})
    audio = levels((0.5, 0.3), (1.0, 0.0), rate=8000)
    codes = g711.alaw_encode(np.repeat(np.round(audio * 32767).astype(np.int16), 2)).tobytes()
    msgs = run_all(s, e, [codes])
    assert msgs[0] == Ready("sid", 8000, "alaw", 2, "fake")
    assert [m.channel for m in of(msgs, Final)] == [0, 1]
    assert isinstance(msgs[-1], Done) and msgs[-1].audio_seconds == 1.5


def test_start_overrides_an_invalid_query():
    s, _ = make(query={"encoding": "opus"})
    s.receive('{"type": "start", "encoding": "pcm_f32le"}')
    assert s.take_messages()[0].encoding == "pcm_f32le"


def test_audio_after_an_invalid_query_is_refused():
    s, _ = make(query={"encoding": "opus"})
    with pytest.raises(ProtocolError) as e:
        s.receive(b"\x00\x00")
    assert e.value.code == "bad_config" and "audio before a valid configuration" in e.value.message
    assert to_error(e.value)[2] == 1008


@pytest.mark.parametrize(
    "frames, code",
    [
        (['{"type": "start"}', '{"type": "start"}'], "unexpected_message"),
        ([b"\x00\x00", '{"type": "start"}'], "unexpected_message"),
        (['{"type": "end"}', b"\x00\x00"], "unexpected_message"),
        (['{"type": "start", "encoding": "flac"}'], "bad_config"),
        (['{"type": "start", "sample_rate": 1}'], "bad_config"),
        (["{oops"], "bad_json"),
        (['{"type": "stop"}'], "bad_message"),
        (['{"type": "start", "encoding": "pcm_f32le"}', np.array([0.1, np.nan], "<f4").tobytes()], "bad_audio"),
        (['{"type": "start", "encoding": "pcm_f32le"}', np.array([np.inf], "<f4").tobytes()], "bad_audio"),
        ([b"\x00\x00\x00", '{"type": "end"}'], "bad_audio"),  # ends inside a sample
    ],
)
def test_protocol_violations(frames, code):
    s, e = make()
    with pytest.raises(ProtocolError) as err:
        run_all(s, e, frames, end=False)
    assert err.value.code == code
    assert to_error(err.value)[2] == 1008


def test_oversized_frames():
    s, _ = make(max_frame=1000)
    s.receive(b"\x00" * 1000)
    with pytest.raises(FrameTooLarge) as e:
        s.receive(b"\x00" * 1002)
    assert to_error(e.value)[:1] == ("frame_too_large",) and to_error(e.value)[2] == 1009
    with pytest.raises(FrameTooLarge):
        s.receive('{"type": "end", "x": "' + "y" * 1000 + '"}')


def test_end_without_audio_is_done_at_once():
    s, e = make()
    assert run_all(s, e, []) == [Done(0.0)]
    assert s.close_code == 1000
    s2, e2 = make()
    assert run_all(s2, e2, ['{"type": "start"}']) == [Ready("sid", 16000, "pcm_s16le", 1, "fake"), Done(0.0)]


# ---------------------------------------------------------------- audio handling


@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_f32le", "mulaw", "alaw"])
def test_any_byte_split_gives_the_same_messages(encoding):
    audio = levels((0.35, 0.3), (1.0, 0.0), (0.4, 0.6), (0.25, 0.0))
    pcm = np.round(audio * 32767).astype(np.int16)
    data = {
        "pcm_s16le": pcm.astype("<i2").tobytes(),
        "pcm_f32le": audio.astype("<f4").tobytes(),
        "mulaw": g711.mulaw_encode(pcm).tobytes(),
        "alaw": g711.alaw_encode(pcm).tobytes(),
    }[encoding]
    start = json.dumps({"type": "start", "encoding": encoding})
    s, e = make()
    whole = run_all(s, e, [start, data])
    assert [m.text for m in of(whole, Final)] == ["3333", "66666"]
    for seed, piece in [(0, 3), (1, 50), (2, 7000)]:
        s, e = make()
        assert run_all(s, e, [start, *split(data, seed, piece)]) == whole


def test_channels_are_deinterleaved_and_recognised_separately():
    left = levels((0.5, 0.2), (1.0, 0.0))
    right = levels((0.2, 0.0), (0.3, 0.7), (1.0, 0.0))
    data = s16(np.stack([left, right], axis=1).reshape(-1))
    s, e = make(query={"channels": "2"})
    msgs = run_all(s, e, split(data, 0, 999))
    finals = {m.channel: m.text for m in of(msgs, Final)}
    assert finals == {0: "22222", 1: "777"}
    assert msgs[-1] == Done(1.5)


def test_features_are_computed_once_per_chunk_not_per_frame():
    s, e = make()
    requests = 0
    for frame in split(s16(levels((2.0, 0.3))), 0, 320):  # ~10 ms frames
        s.receive(frame)
        reqs = s.take_requests()
        requests += len(reqs)
        for r in reqs:
            (o,), _ = work(e, [r])
            s.complete(r, o)
    assert requests == 20  # one per 0.1 s chunk


def test_backlog_counts_undecoded_audio():
    s, e = make()
    s.receive(s16(levels((5.0, 0.3))))
    assert s.backlog_s == pytest.approx(5.0)
    drain(s, e)
    assert s.backlog_s == pytest.approx(0.0)


# ---------------------------------------------------------------- utterances


def test_partials_are_cumulative_and_precede_their_final():
    s, e = make()
    msgs = run_all(s, e, split(s16(levels((0.5, 0.3), (0.3, 0.5), (1.0, 0.0))), 0, 2000))
    partials = of(msgs, Partial)
    assert [p.text for p in partials] == ["3", "33", "333", "3333", "33333", "333335", "3333355", "33333555"]
    assert all(p.utterance == 0 and p.channel == 0 for p in partials)
    assert [p.end for p in partials] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    final = of(msgs, Final)[0]
    assert msgs.index(final) > msgs.index(partials[-1])
    assert final.text == "33333555" and final.start == 0.0 and final.end == pytest.approx(0.8)
    assert [t.text for t in final.tokens] == list("33333555")


def test_endpoints_split_utterances_and_reset():
    audio = levels(
        (0.3, 0.3), (0.8, 0.0),  # speech, then 800 ms of silence: final 0
        (0.2, 0.5), (0.7, 0.0),  # speech, 700 ms: no endpoint yet
        (0.2, 0.4), (5.5, 0.0),  # speech, silence: final 1, then 5 s without speech: reset
        (0.1, 0.9), (0.2, 0.0),  # speech cut by the end of the input: final 2
    )
    s, e = make()
    msgs = run_all(s, e, split(s16(audio), 0, 4000))
    finals = of(msgs, Final)
    assert [(f.utterance, f.text) for f in finals] == [(0, "333"), (1, "5544")]  + [(2, "9")]
    assert finals[1].start == pytest.approx(1.1) and finals[2].start == pytest.approx(7.7)
    # Partials of an utterance carry its index.
    assert {p.utterance for p in of(msgs, Partial)} == {0, 1, 2}
    assert msgs[-1] == Done(pytest.approx(8.0))


def test_max_utterance_forces_a_final():
    s, e = make(endpoint=EndpointConfig(max_utterance_ms=2000))
    msgs = run_all(s, e, [s16(levels((3.0, 0.2)))])
    assert [len(f.text) for f in of(msgs, Final)] == [20, 10]


def test_full_pass_redecodes_each_utterance_audio():
    rec = FakeRecognizer()
    s, e = make(rec=rec, final_pass="full")
    audio = levels((0.3, 0.3), (0.8, 0.0), (0.4, 0.5), (0.3, 0.0))
    msgs = run_all(s, e, split(s16(audio), 1, 3000))
    finals = of(msgs, Final)
    # Utterance 0: from 0 to where decoding stopped at the endpoint (1.1 s); utterance 1:
    # from there to the end of the input (1.8 s).
    assert rec.transcribed == [(17600, 16000), (11200, 16000)]
    assert [f.text for f in finals] == ["<17600>", "<11200>"]
    assert finals[1].start == pytest.approx(1.1)  # segment times are shifted to the stream


def test_a_long_stream_keeps_flat_memory():
    s, e = make(final_pass="full", rec=FakeRecognizer())
    cycle = s16(levels((1.0, 0.3), (1.0, 0.0)))
    held = []
    for i in range(300):  # 10 minutes
        s.receive(cycle)
        drain(s, e)
        ch = s._channels[0]
        held.append(ch.history._n + ch.pending_n + ch.stream.buf.size)
    assert max(held[10:]) <= max(held[:10])
    assert ch.utterance == 300  # each second of silence ended an utterance


def test_going_away_flushes_and_closes_with_1001():
    s, e = make()
    s.receive(s16(levels((0.4, 0.3))))
    s.end(going_away=True)
    msgs = drain(s, e)
    assert [type(m) for m in msgs] == [Ready, Partial, Partial, Partial, Partial, Final, Done]
    assert s.close_code == CLOSE_GOING_AWAY


def test_abort_stops_everything():
    s, e = make()
    s.receive(s16(levels((0.4, 0.3))))
    reqs = s.take_requests()
    s.abort()
    outcomes, _ = work(e, reqs)
    s.complete(reqs[0], outcomes[0])
    s.receive(b"\x00\x00")
    assert s.take_messages() == [] and s.take_requests() == []


# ---------------------------------------------------------------- with a real model


@pytest.fixture(scope="module")
def rec(random_model_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: a second thread only adds overhead on a shared machine
    yield Recognizer.from_dir(random_model_dir, device="cpu")
    torch.set_num_threads(threads)


def test_samples_until_ready_is_exact(rec):
    for rate in (8000, 16000, 44100):
        audio = speech_like(3.0, rate=rate)
        st, i, steps = rec.stream(rate), 0, 0
        while (n := st.samples_until_ready()) and i + n <= audio.size:
            if n > 1:
                st.accept_waveform(audio[i : i + n - 1])
                i += n - 1
                assert not st.ready()
            st.accept_waveform(audio[i : i + 1])
            i += 1
            assert st.ready()
            while st.ready():
                rec.step([st])
                steps += 1
        assert steps >= 5


def transcribe_text(rec, audio, rate):
    return rec.transcribe(audio, rate).text


@pytest.mark.parametrize(
    "encoding, rate",
    [("pcm_s16le", 16000), ("pcm_f32le", 16000), ("mulaw", 8000), ("alaw", 8000), ("pcm_s16le", 44100)],
)
def test_final_equals_transcribe(rec, encoding, rate):
    audio = speech_like(3.0, rate=rate, seed=4)
    pcm = np.round(audio * 32767).astype(np.int16)
    data, decoded = {
        "pcm_s16le": (pcm.astype("<i2").tobytes(), pcm),
        "pcm_f32le": (audio.astype("<f4").tobytes(), audio),
        "mulaw": (g711.mulaw_encode(pcm).tobytes(), g711.mulaw_decode(g711.mulaw_encode(pcm))),
        "alaw": (g711.alaw_encode(pcm).tobytes(), g711.alaw_decode(g711.alaw_encode(pcm))),
    }[encoding]
    s, e = make(rec=rec, final_pass="full", endpoint=NO_ENDPOINT,
                query={"encoding": encoding, "sample_rate": str(rate)})
    msgs = run_all(s, e, split(data, 0, rate // 5))
    (final,) = of(msgs, Final)
    assert final.text and final.text == transcribe_text(rec, decoded, rate)
    assert of(msgs, Partial) and msgs.index(of(msgs, Partial)[0]) < msgs.index(final)


def test_stereo_finals_equal_transcribe_per_channel(rec):
    a, b = speech_like(2.0, seed=5), speech_like(2.0, seed=6)[::-1].copy()
    pcm = np.round(np.stack([a, b], axis=1) * 32767).astype(np.int16)
    s, e = make(rec=rec, final_pass="full", endpoint=NO_ENDPOINT, query={"channels": "2"})
    msgs = run_all(s, e, split(pcm.astype("<i2").tobytes(), 1, 5000))
    finals = {m.channel: m.text for m in of(msgs, Final)}
    assert finals == {0: transcribe_text(rec, pcm[:, 0], 16000), 1: transcribe_text(rec, pcm[:, 1], 16000)}
    assert finals[0] != finals[1]


def test_streaming_final_pass_equals_stream_finalize(rec):
    audio = speech_like(3.0, seed=7)
    pcm = np.round(audio * 32767).astype(np.int16)
    st = rec.stream(16000)
    st.accept(pcm)
    want = st.finalize()
    s, e = make(rec=rec, final_pass="stream", endpoint=NO_ENDPOINT)
    msgs = run_all(s, e, split(pcm.astype("<i2").tobytes(), 2, 3000))
    (final,) = of(msgs, Final)
    assert final.text == want.text
    assert [t.start for t in final.tokens] == [t.start for t in want.tokens]
    texts = [p.text for p in of(msgs, Partial)]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # greedy partials only grow


def test_real_model_endpoints_keep_absolute_times(rec):
    """A stream with real silences: whatever the random model makes of them, each final
    re-decodes exactly its own segment and times count from the stream start."""
    rate = 16000
    audio = np.concatenate([speech_like(1.5, seed=8), np.zeros(rate * 2, np.float32), speech_like(1.5, seed=9)])
    rng = np.random.default_rng(0)
    audio[int(1.5 * rate) : int(3.5 * rate)] += 1e-4 * rng.standard_normal(2 * rate).astype(np.float32)
    pcm = np.round(audio * 32767).astype(np.int16)
    s, e = make(rec=rec, final_pass="full", endpoint=EndpointConfig(trailing_silence_ms=400, blank_threshold=0.5))
    requests: list[FinalRequest] = []
    s.receive(pcm.tobytes())
    s.receive('{"type": "end"}')
    msgs = []
    while reqs := s.take_requests():
        requests += [r for r in reqs if isinstance(r, FinalRequest) and r.emit]
        outcomes, _ = work(e, reqs)
        for r, o in zip(reqs, outcomes):
            s.complete(r, o)
        msgs += s.take_messages()
    finals = of(msgs, Final)
    assert len(finals) == len(requests) >= 1
    for f, r in zip(finals, requests):
        first = int(round(r.offset_s * rate))
        seg = pcm[first : first + r.audio.size].astype(np.float32) / 32768
        assert f.text == rec.transcribe(seg, rate).text
        assert all(r.offset_s <= t.start <= t.end <= r.offset_s + r.audio.size / rate + 1e-6 for t in f.tokens)
    assert msgs[-1] == Done(5.0)


def test_a_voice_activity_detector_can_drive_the_endpoints():
    class NoBlanks(FakeStream):
        trailing_blank_s = 0.0  # the CTC statistics never see silence

    rec = FakeRecognizer()
    audio = s16(levels((0.3, 0.3), (1.0, 0.0), (0.3, 0.5), (0.1, 0.0)))
    results = {}
    for vad in (None, EnergyVad):
        for frames in ([audio], split(audio, 0, 999)):  # the detector runs ahead by a frame or all
            s = Session("sid", SessionConfig("fake", EndpointConfig(), "stream"), NoBlanks, None, vad)
            results.setdefault(vad, []).append([m.text for m in of(run_all(s, Batcher(rec), frames), Final)])
    assert results[None] == [["333555"]] * 2  # one utterance: no endpoint without silence
    assert results[EnergyVad] == [["333", "555"]] * 2


def test_detector_silence_counts_only_within_the_utterance():
    """After an endpoint the silence goes on; a model that emits text in silence must not
    then get an endpoint after every chunk (the blank count restarts with the utterance,
    and so does the detector's silence)."""
    class Hallucinating(FakeStream):
        def step(self):
            super().step()
            if not self.silent == 0:
                self.tokens.append(("0", self.decoded / self.rate - 0.1))

    audio = s16(levels((0.3, 0.3), (2.0, 0.0)))
    s = Session("sid", SessionConfig("fake", EndpointConfig(), "stream"), Hallucinating, None, EnergyVad)
    finals = of(run_all(s, Batcher(FakeRecognizer()), split(audio, 3, 2000)), Final)
    assert [f.text for f in finals] == ["333" + "0" * 8, "0" * 8, "0" * 4]
