"""The browser page in a real headless Chromium, its microphone fed from a WAV file.

Chromium's fake capture device plays the file in real time through the page's
AudioWorklet (resampled to 16 kHz there) and websocket, so the samples the server gets
are not the file's samples: they are resampled twice, start at an arbitrary point and may
glitch. A random model's text would change with every sample; the model here is trained
at test time (about ten seconds) to name the pitch of tone bursts (400, 800, 1600,
3200 Hz: one character each, blank in silence), which survives all of that. The page must
then show exactly what `Recognizer.transcribe` gives for the WAV file.

Needs Debian's `chromium` and the `playwright` Python package (no downloaded browsers).
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.audio import read_audio
from asr.batch.inputs import expand_inputs
from asr.batch.pipeline import run_local
from asr.checkpoint import save_model_dir
from asr.config import ChunkConfig, ModelConfig
from asr.features import fbank
from asr.metrics import ErrorCounts
from asr.model.conformer import CTCModel
from asr.recognizer import Recognizer
from asr.tokens import write_units
from server.app import App
from server.settings import Settings

from .conftest import espeak, needs_espeak, units

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover
    async_playwright = None

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(async_playwright is None, reason="the playwright package is not installed (pip install playwright)"),
]

FREQS = (400.0, 800.0, 1600.0, 3200.0)  # tone k is unit 2 + k
RATE = 16000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]


# ---------------------------------------------------------------- a model trained here


def tone_sequence(rng: np.random.Generator, bursts: list[int] | None = None, rate: int = RATE):
    """Silence, tone bursts with pauses, silence; returns (audio, [(start, end, k)])."""
    parts: list[np.ndarray] = []
    spans: list[tuple[float, float, int]] = []

    def silence(seconds: float) -> None:
        parts.append((rng.standard_normal(int(seconds * rate)) * 10 ** rng.uniform(-5, -3.3)).astype(np.float32))

    silence(rng.uniform(0.1, 0.6))
    t = parts[-1].size / rate
    ks = bursts if bursts is not None else list(rng.integers(len(FREQS), size=int(rng.integers(1, 7))))
    for k in ks:
        d = rng.uniform(0.18, 0.35) if bursts is None else 0.3
        n = int(d * rate)
        f = FREQS[k] * (rng.uniform(0.97, 1.03) if bursts is None else 1.0)
        x = rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * f * np.arange(n) / rate + rng.uniform(0, 6.3))
        env = np.ones(n)
        ramp = min(rate // 100, n // 4)
        env[:ramp], env[-ramp:] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
        parts.append((x * env).astype(np.float32))
        spans.append((t, t + d, int(k)))
        t += d
        silence(rng.uniform(0.25, 0.5) if bursts is None else 0.35)
        t += parts[-1].size / rate
    silence(rng.uniform(0.2, 0.8))
    return np.concatenate(parts), spans


def frame_labels(spans, n_frames: int) -> np.ndarray:
    """Per encoder frame (conv2d: centre of fbank frames 4j..4j+6): tone unit, blank, or
    ignored near a burst edge."""
    centre = (4 * np.arange(n_frames) + 3) * 0.01 + 0.0125
    y = np.zeros(n_frames, np.int64)
    for s, e, k in spans:
        y[(centre > s - 0.03) & (centre < e + 0.03)] = -100
        y[(centre >= s + 0.03) & (centre <= e - 0.03)] = 2 + k
    return y


def train_tone_model(out: Path, steps: int = 80, seed: int = 0) -> Path:
    """Frame-level cross-entropy on random tone sequences, full context and random chunk
    masks (so streaming blanks work for endpointing). ~10 s on one CPU core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        cfg = ModelConfig(vocab_size=len(units()), output_size=32, attention_heads=4, linear_units=64, num_blocks=2,
                          cnn_module_kernel=5, dropout_rate=0.0)
        model = CTCModel(cfg)
        stats = torch.cat([fbank(torch.from_numpy(tone_sequence(rng)[0])) for _ in range(16)])
        with torch.no_grad():
            model.encoder.global_cmvn.mean.copy_(stats.mean(0))
            model.encoder.global_cmvn.istd.copy_(1 / stats.std(0).clamp(min=1e-3))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for step in range(steps):
            batch = [tone_sequence(rng) for _ in range(8)]
            feats = [fbank(torch.from_numpy(a)) for a, _ in batch]
            xs = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
            chunk = -1 if step % 2 == 0 else int(rng.integers(1, 9))
            logp, lens = model(xs, torch.tensor([f.size(0) for f in feats]), chunk, -1)
            ys = torch.full(logp.shape[:2], -100, dtype=torch.long)
            for i, (_, spans) in enumerate(batch):
                n = int(lens[i])
                ys[i, :n] = torch.from_numpy(frame_labels(spans, n))
            loss = torch.nn.functional.nll_loss(logp.reshape(-1, cfg.vocab_size), ys.reshape(-1), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    write_units(units(), out / "units.txt")
    save_model_dir(out, model.eval(), out, "tone-test", chunk=ChunkConfig(4, -1))
    return out


@pytest.fixture(scope="module")
def tone_model_dir(tmp_path_factory) -> Path:
    return train_tone_model(tmp_path_factory.mktemp("tone_model"))


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


# ---------------------------------------------------------------- the page


async def launch(p, wav: Path | None = None):
    args = CHROMIUM_ARGS + ([f"--use-file-for-fake-audio-capture={wav}%noloop"] if wav else [])
    return await p.chromium.launch(executable_path=CHROMIUM, args=args)


async def test_page_shows_the_transcript_of_the_microphone(tone_model_dir, tmp_path):
    rate = 44100  # the fake microphone resamples it; the page resamples again to 16 kHz
    audio, spans = tone_sequence(np.random.default_rng(7), bursts=[1, 0, 2, 3, 1, 2], rate=rate)
    audio = np.concatenate([audio, np.zeros(rate, np.float32)])  # a pause: the utterance ends
    wav = write_wav(tmp_path / "tones.wav", audio, rate)
    rec = Recognizer.from_dir(tone_model_dir, device="cpu")
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    expected = rec.transcribe(pcm, rate).text
    assert expected == "".join(units()[2 + k] for _, _, k in spans)  # the model learnt its task

    # the server punctuates by default; the page's toggles turn it off for this session
    app = App(Settings(model=tone_model_dir, host="127.0.0.1", port=0, threads=1, final_pass="full"), rec)
    await app.start()
    try:
        async with async_playwright() as p:
            browser = await launch(p, wav)
            page = await browser.new_page()
            partials: list[str] = []
            await page.expose_function("notePartial", lambda text: partials.append(text))
            await page.goto(f"http://127.0.0.1:{app.port}/")
            await page.evaluate(
                "new MutationObserver(() => { const t = document.getElementById('partial').textContent;"
                " if (t) window.notePartial(t); }).observe(document.getElementById('partial'),"
                " {childList: true, characterData: true, subtree: true})"
            )
            await page.uncheck("#punctuation")
            await page.uncheck("#itn")
            await page.click("#start")
            await page.wait_for_selector('#state[data-state="listening"]', timeout=15_000)
            # The file plays in real time; its trailing pause makes the final arrive.
            await page.wait_for_function(
                "n => document.querySelectorAll('#finals .text').length >= n", arg=1, timeout=len(audio) / rate * 1000 + 15_000
            )
            await page.click("#stop")
            await page.wait_for_function("['closed', 'done'].includes(document.body.dataset.state)", timeout=15_000)
            finals = await page.eval_on_selector_all("#finals .text", "els => els.map(e => e.textContent)")
            times = await page.eval_on_selector_all("#finals .time", "els => els.map(e => e.textContent)")
            error = await page.inner_text("#error")
            state = await page.inner_text("#state")
            txt, srt = await downloads(page)
            await browser.close()
    finally:
        await app.shutdown()
    assert error == ""
    assert "".join(finals) == expected
    assert partials and expected.startswith(partials[0][:1])
    assert all("–" in t for t in times) and state in ("done", "closed")
    assert txt == "".join(f + "\n" for f in finals)
    assert_srt(srt, finals)


async def downloads(page) -> tuple[str, str]:
    """The page's TXT and SRT downloads of its transcript."""
    out = []
    for button in ("#download-txt", "#download-srt"):
        async with page.expect_download() as info:
            await page.click(button)
        out.append(Path(await (await info.value).path()).read_text(encoding="utf-8"))
    return out[0], out[1]


def assert_srt(srt: str, finals: list[str]) -> None:
    blocks = [b.split("\n") for b in srt.strip().split("\n\n")]
    assert [b[0] for b in blocks] == [str(i + 1) for i in range(len(finals))]
    assert [b[2] for b in blocks] == finals
    for b in blocks:
        start, end = b[1].split(" --> ")
        assert len(start) == len(end) == 12 and start <= end


async def test_page_transcribes_a_chosen_file_through_the_http_api(tone_model_dir, tmp_path):
    """The file picker: the recording goes to the OpenAI-compatible API (another port,
    found through /healthz), its segments become the list of finals with their times."""
    audio, spans = tone_sequence(np.random.default_rng(3), bursts=[2, 0, 1, 3], rate=RATE)
    wav = write_wav(tmp_path / "call.wav", np.concatenate([audio, np.zeros(RATE // 2, np.float32)]), RATE)
    rec = Recognizer.from_dir(tone_model_dir, device="cpu")
    (outcome,) = list(run_local(expand_inputs([str(wav)]), rec))
    expected = [s.text for s in outcome.transcript.segments]
    assert "".join(expected) == "".join(units()[2 + k] for _, _, k in spans)
    app = App(Settings(model=tone_model_dir, host="127.0.0.1", port=0, http_port=0, threads=1,
                       punctuation=False, itn=False), rec)
    await app.start()
    try:
        async with async_playwright() as p:
            browser = await launch(p)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{app.port}/")
            await page.set_input_files("#file", str(wav))
            await page.wait_for_function("document.body.dataset.state === 'done' || document.body.dataset.state === 'error'",
                                         timeout=30_000)
            finals = await page.eval_on_selector_all("#finals .text", "els => els.map(e => e.textContent)")
            error = await page.inner_text("#error")
            txt, srt = await downloads(page)
            await browser.close()
    finally:
        await app.shutdown()
    assert error == ""
    assert finals == expected
    assert txt == "".join(f + "\n" for f in finals)
    assert_srt(srt, finals)


SPOKEN = ["请帮我转人工服务", "今天天气很好", "我的订单还没有到"]


@needs_espeak
async def test_page_transcribes_mandarin_with_the_shipped_model(tmp_path):
    """Mandarin (espeak-ng, three sentences with pauses) through Chromium's microphone, the
    page and the server's default settings, recognised by models/default."""
    model = Path(__file__).resolve().parents[1] / "models" / "default"
    pieces = []
    for k, text in enumerate(SPOKEN):
        audio, rate = read_audio(espeak(text, tmp_path / f"s{k}.wav"))
        pieces += [audio[0], np.zeros(int(1.2 * rate), np.float32)]  # a pause after each: an endpoint
    audio = np.concatenate([np.zeros(rate // 2, np.float32), *pieces])
    wav = write_wav(tmp_path / "speech.wav", audio, rate)
    rec = Recognizer.from_dir(model, device="cpu")
    direct = ErrorCounts()
    direct.add("".join(SPOKEN), rec.transcribe(audio, rate).text)
    if direct.cer > 0.5:
        pytest.skip(f"models/default does not read this speech well enough yet (CER {direct.cer:.0%} on the file)")

    app = App(Settings(model=model, host="127.0.0.1", port=0, threads=1), rec)
    await app.start()
    try:
        async with async_playwright() as p:
            browser = await launch(p, wav)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{app.port}/")
            await page.click("#start")
            await page.wait_for_selector('#state[data-state="listening"]', timeout=15_000)
            await page.wait_for_function("n => document.querySelectorAll('#finals .text').length >= n",
                                         arg=len(SPOKEN), timeout=len(audio) / rate * 1000 + 20_000)
            await page.click("#stop")
            await page.wait_for_function("['closed', 'done'].includes(document.body.dataset.state)", timeout=15_000)
            finals = await page.eval_on_selector_all("#finals .text", "els => els.map(e => e.textContent)")
            error = await page.inner_text("#error")
            await browser.close()
    finally:
        await app.shutdown()
    assert error == ""
    assert len(finals) == len(SPOKEN)  # one final per sentence: the pauses were endpoints
    heard = ErrorCounts()
    heard.add("".join(SPOKEN), "".join(finals))
    # Chromium resamples the file twice and starts it anywhere, so the text may differ a
    # little from the direct transcription, but not by much.
    assert heard.cer <= direct.cer + 0.15, (finals, heard.cer, direct.cer)


async def test_page_shows_connection_errors(random_model_dir):
    rec = Recognizer.from_dir(random_model_dir, device="cpu")
    app = App(Settings(model=random_model_dir, host="127.0.0.1", port=0, api_key=("secret",), threads=1), rec)
    await app.start()
    try:
        async with async_playwright() as p:
            browser = await launch(p)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{app.port}/")  # no ?api_key=: the handshake gets 401
            await page.click("#start")
            await page.wait_for_selector('#state[data-state="error"]', timeout=15_000)
            error = await page.inner_text("#error")
            # With the key in the page URL the session opens.
            await page.goto(f"http://127.0.0.1:{app.port}/?api_key=secret")
            await page.click("#start")
            await page.wait_for_selector('#state[data-state="listening"]', timeout=15_000)
            meta = await page.inner_text("#meta")
            await browser.close()
    finally:
        await app.shutdown()
    assert "connection" in error
    assert rec.name in meta


def test_tone_model_is_streamable(tone_model_dir):
    """The streaming pass hears the same tones (blanks in the pauses drive endpoints)."""
    rec = Recognizer.from_dir(tone_model_dir, device="cpu")
    audio, spans = tone_sequence(np.random.default_rng(3), bursts=[3, 2, 1, 0])
    s = rec.stream()
    s.accept(audio)
    assert s.finalize().text == "".join(units()[2 + k] for _, _, k in spans)
    assert asyncio.iscoroutinefunction(test_page_shows_the_transcript_of_the_microphone)
