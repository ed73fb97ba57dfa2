"""Readable transcripts: display text and tokens (punctuation model, ITN), the start
options through a real websocket, and a hotword list that changes a real final."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openai
import pytest
from websockets.asyncio.client import connect

from asr.audio import read_audio, write_wav
from asr.batch.formats import cues
from asr.batch.results import Segment, Transcript
from asr.recognizer import Recognizer, Result, Token
from asr.text.format import PARTIAL_RIGHT_CONTEXT, Formatter, TextOptions
from asr.text.punct import LABELS, Punctuator, default_punct_dir
from tingxie.cli import main

from .callhelpers import ONE_UTTERANCE, read_all, running
from .conftest import SHARED, speech_like

EVAL = SHARED / "data" / "real_zh" / "eval"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.fixture(scope="module")
def punct() -> Punctuator:
    return Punctuator.load(default_punct_dir())


def _result(units: list[str]) -> Result:
    tokens = tuple(Token(u, 0.25 * i, 0.25 * i + 0.2, 0.9 - 0.01 * i, i) for i, u in enumerate(units))
    return Result("".join(units), tokens, 0.0, 0.25 * len(units), 0.8)


def test_shipped_punctuation_model_is_small_and_punctuates(punct):
    size = sum(f.stat().st_size for f in default_punct_dir().iterdir())
    assert size < 8_000_000
    assert punct.punctuate("您好请问有什么可以帮您")[-1] in "。？！"
    assert punct.punctuate("今天天气怎么样") == "今天天气怎么样？"
    labels = punct.predict(list("我想查一下话费然后再办一张卡"), final=True)
    assert len(labels) == 14 and LABELS[labels[-1]] in "。？！"


def test_display_tokens_cover_the_units_they_replace(punct):
    units = list("我的手机号是一三八零零一三八零零零那个订单三千五百元")
    res = _result(units)
    out = Formatter(punct).format(res, TextOptions(punctuation=True, itn=True))
    assert out.raw_text == res.text
    assert "13800138000" in out.text and "3500元" in out.text and out.text[-1] in "。？！"
    phone = next(t for t in out.tokens if t.text.startswith("13800138000"))
    first, last = res.tokens[6], res.tokens[16]  # 一 ... 零
    assert (phone.start, phone.end) == (first.start, last.end)
    assert phone.confidence == min(t.confidence for t in res.tokens[6:17])
    assert phone.id == -1
    # tokens outside rewrites are the recogniser's; marks ride on the token before them
    assert out.tokens[0] == res.tokens[0]
    assert "".join(t.text for t in out.tokens) == out.text
    assert [t.start for t in out.tokens] == sorted(t.start for t in out.tokens)


def test_partials_carry_only_the_stable_marks(punct):
    """A partial shows a mark only once PARTIAL_RIGHT_CONTEXT symbols follow it, and never
    ends with one; those marks are the ones the model gives the whole text there."""
    f = Formatter(punct)
    units = list("您好请问有什么可以帮您我想查一下话费")
    final = f.format(_result(units), TextOptions(punctuation=True, itn=False))
    assert final.text[-1] in "。？！" and any(c in "，。？！、" for c in final.text[:-1])
    for n in range(1, len(units) + 1):
        part = f.format(_result(units[:n]), TextOptions(punctuation=True, itn=False), final=False)
        marks = [i for i, c in enumerate(part.text) if c in "，。？！、"]
        plain = [c for c in part.text if c not in "，。？！、"]
        assert "".join(plain) == "".join(units[:n])
        for i in marks:  # at least PARTIAL_RIGHT_CONTEXT symbols after each mark
            assert len([c for c in part.text[i + 1:] if c not in "，。？！、"]) >= PARTIAL_RIGHT_CONTEXT
    whole = f.format(_result(units), TextOptions(punctuation=True, itn=False), final=False)
    assert whole.text.rstrip("，。？！、") == whole.text  # no mark at the end of a partial
    assert any(c in "，。？！" for c in whole.text)  # the stable marks are shown


def test_options_off_leave_the_result_as_is(punct):
    res = _result(list("三千五百元"))
    f = Formatter(punct)
    assert f.format(res, TextOptions(punctuation=False, itn=False)) is res
    only_itn = f.format(res, TextOptions(punctuation=False, itn=True))
    assert only_itn.text == "3500元" and only_itn.raw_text == "三千五百元"
    assert Formatter(None).format(res, TextOptions(punctuation=True, itn=False)) is res  # no model: no marks


def test_latin_words_keep_their_space(punct):
    res = Result("打开WI FI设置", tuple(Token(u, i * 0.2, i * 0.2 + 0.2, 0.9, i)
                                        for i, u in enumerate(["打", "开", "WI", "FI", "设", "置"])), 0, 2, 0.9)
    out = Formatter(punct).format(res, TextOptions(punctuation=True, itn=True))
    assert out.text.startswith("打开WI FI设置") and len(out.tokens) == 6


# ------------------------------------------------------------------ websocket


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


async def _session(app, start: dict, pcm: bytes) -> tuple[list[dict], int | None]:
    async with connect(f"ws://127.0.0.1:{app.port}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "start", **start}))
        for i in range(0, len(pcm), 3200):
            await ws.send(pcm[i : i + 3200])
        await ws.send('{"type": "end"}')
        return await read_all(ws), ws.close_code


async def test_start_options_choose_display_text(rec):
    pcm = np.round(speech_like(2.0, seed=5) * 32767).astype("<i2").tobytes()
    expected = rec.transcribe(np.frombuffer(pcm, "<i2").copy(), 16000).text
    async with running(rec, punctuation=True, itn=True) as app:
        plain, _ = await _session(app, {"punctuation": False, "itn": False}, pcm)
        shown, _ = await _session(app, {}, pcm)  # the server's defaults: both on
    (f_plain,), (f_shown,) = [[m for m in msgs if m["type"] == "final"] for msgs in (plain, shown)]
    assert f_plain["text"] == f_plain["raw_text"] == expected
    assert f_shown["raw_text"] == expected and f_shown["text"][-1] in "。？！"


@pytest.mark.parametrize("hotwords,message", [
    (["账单"], "cannot recognise"),
    ([{"phrase": "的", "boost": 50}], "from 0 to 10"),
    (["的"] * 1001, "too many hotwords"),
])
async def test_bad_hotwords_are_refused_with_a_clear_error(rec, hotwords, message):
    async with running(rec) as app:
        async with connect(f"ws://127.0.0.1:{app.port}/v1/stream") as ws:
            await ws.send(json.dumps({"type": "start", "hotwords": hotwords}))
            msgs = await read_all(ws)
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "bad_config" and message in msgs[-1]["message"]
    assert ws.close_code == 1008


needs_real = pytest.mark.skipif(
    not (EVAL / "manifest.jsonl").is_file() or not (DEFAULT_MODEL / "model.safetensors").is_file(),
    reason="real_zh eval data (../shared) or models/default not present")


@pytest.fixture(scope="module")
def call_center():
    """A MagicData customer-service recording (...这边是有相关课程的) and the default model,
    which gets 课程 wrong without help."""
    row = next(json.loads(line) for line in (EVAL / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
               if '"magicdatacs-100018"' in line)
    audio, rate = read_audio(EVAL / row["audio"])
    return row, audio[0], rate, Recognizer.from_dir(DEFAULT_MODEL, device="cpu")


@needs_real
async def test_hotword_list_changes_a_real_call_center_final(call_center):
    row, audio, rate, rec = call_center
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    async with running(rec, **ONE_UTTERANCE) as app:
        without, _code = await _session(app, {"sample_rate": rate}, pcm)
        with_list, code = await _session(app, {"sample_rate": rate, "hotwords": ["课程"]}, pcm)
    final_without = "".join(m["raw_text"] for m in without if m["type"] == "final")
    final_with = "".join(m["raw_text"] for m in with_list if m["type"] == "final")
    assert code == 1000
    assert "课程" in row["text"] and "相关课程" not in final_without and "相关课程" in final_with


@needs_real
async def test_openai_prompt_words_are_hotwords(call_center, tmp_path):
    row, audio, rate, rec = call_center
    wav = tmp_path / "call.wav"
    write_wav(wav, audio, rate)
    async with running(rec, http_port=0) as app:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{app.http_api.port}/v1", api_key="k", max_retries=0)
        texts = []
        for prompt in (None, "课程 学费"):
            with open(wav, "rb") as f:
                kw = {"prompt": prompt} if prompt else {}
                texts.append((await client.audio.transcriptions.create(model="tingxie", file=f, **kw)).text)
    assert "相关课程" not in texts[0] and "相关课程" in texts[1]


# ------------------------------------------------------------------ batch


def test_subtitle_cues_break_at_sentence_ends_and_after_commas():
    pieces = ["你", "好。", "请", "问", "有", "什", "么", "可", "以", "帮", "您？", "我", "想", "查", "话", "费，",
              "还", "有", "流", "量", "包"]
    tokens = tuple(Token(p, 0.3 * i, 0.3 * i + 0.25, 0.9, i) for i, p in enumerate(pieces))
    seg = Segment(0.0, 6.0, "".join(pieces), 0.9, tokens)
    got = cues(Transcript("x", "x.wav", 6.0, (seg,)), max_chars=10)
    assert [c.text for c in got] == ["你好。", "请问有什么可以帮您？", "我想查话费，", "还有流量包"]
    assert got[1].start == tokens[2].start and got[2].start == tokens[11].start


def test_batch_cli_writes_display_text_by_default(random_model_dir, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    write_wav(wav, speech_like(3.0, seed=3), 16000)
    base = ["transcribe", "--model", str(random_model_dir), "--threads", "1", "--no-progress", "--json", str(wav)]
    assert main(base) == 0
    shown = json.loads(capsys.readouterr().out)
    assert main([*base, "--punctuation", "off", "--itn", "off"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert shown["options"]["punctuation"] is True and raw["options"]["punctuation"] is False
    assert shown["text"][-1] in "。？！" and "raw_text" not in raw["segments"][0]
    assert [s["raw_text"] for s in shown["segments"]] == [s["text"] for s in raw["segments"]]
