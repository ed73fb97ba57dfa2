"""What to transcribe: files, directories (recursive), globs, JSONL manifests and Kaldi
`wav.scp` lists, expanded into `InputItem`s with unique ids and output names.

A problem with one entry (a missing file, a piped `wav.scp` command) becomes an item
carrying its error, so that the run reports it and carries on; only an unreadable
list itself (a manifest that is not JSONL) stops the run (`InputError`).
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["InputItem", "InputError", "expand_inputs", "MEDIA_EXTENSIONS"]

# Extensions picked up when a directory or glob is expanded (files named explicitly are
# tried whatever their name).
MEDIA_EXTENSIONS = frozenset(
    ".wav .wave .flac .mp3 .m4a .aac .ogg .oga .opus .webm .weba .amr .awb .3gp .3g2 .wma .aif .aiff .aifc .au "
    ".caf .mka .spx .ac3 .wv .ape .mp2 .mp4 .m4v .mov .mkv .avi .flv .ts .mts .mpg .mpeg .wmv".split()
)
MANIFEST_AUDIO_KEYS = ("audio", "audio_filepath", "path", "wav", "file")
MANIFEST_ID_KEYS = ("id", "key", "utt", "utt_id", "utterance_id")


class InputError(ValueError):
    """A list of inputs (manifest, wav.scp) cannot be read at all."""


@dataclass(frozen=True)
class InputItem:
    """id: unique key (a manifest/wav.scp id, else the path as given); name: output file
    name without extension, unique, may contain '/' (a directory's sub-folders);
    error: why this entry cannot be transcribed, found while listing."""

    id: str
    path: str
    name: str
    error: str | None = None


def _safe_name(text: str) -> str:
    """A file name from an id or relative path: no '..', no leading '/', no odd characters."""
    parts = [re.sub(r"[^\w.\-+=@,]", "_", p) for p in Path(text).parts if p not in ("", ".", "..", "/")]
    parts = [p.lstrip(".") or "_" for p in parts]
    return "/".join(parts) or "_"


def _strip_ext(rel: str) -> str:
    p = Path(rel)
    return str(p.with_suffix("")) if p.suffix else rel


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_EXTENSIONS and path.is_file()


def _from_dir(root: Path) -> list[tuple[str, str, str, str | None]]:
    files = sorted(p for p in root.rglob("*") if _is_media(p))
    return [(str(p), str(p), _strip_ext(str(p.relative_to(root))), None) for p in files]


def _resolve(path_text: str, base: Path) -> str:
    p = Path(path_text).expanduser()
    if p.is_absolute():
        return str(p)
    return str(base / p)


def _from_manifest(path: Path) -> list[tuple[str, str, str, str | None]]:
    out = []
    base = path.parent
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not a JSON line ({e.msg})") from None
            if not isinstance(entry, dict):
                raise InputError(f"{path}:{n}: expected a JSON object")
            audio = next((entry[k] for k in MANIFEST_AUDIO_KEYS if isinstance(entry.get(k), str)), None)
            uid = next((str(entry[k]) for k in MANIFEST_ID_KEYS if entry.get(k) not in (None, "")), None)
            if audio is None:
                keys = "/".join(MANIFEST_AUDIO_KEYS)
                out.append((uid or f"{path}:{n}", "", _safe_name(uid or f"line{n}"), f"{path}:{n}: no audio path ({keys})"))
                continue
            resolved = _resolve(audio, base)
            uid = uid or audio
            out.append((uid, resolved, _safe_name(uid if uid != audio else _strip_ext(audio)), None))
    return out


def _from_scp(path: Path) -> list[tuple[str, str, str, str | None]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            uid, _, rest = line.partition(" ")
            rest = rest.strip()
            if not rest:
                raise InputError(f"{path}:{n}: expected 'utterance-id path'")
            error = None
            if rest.endswith("|"):
                error = (f"{path}:{n}: piped commands ('... |') are not run; extract the audio to files first "
                         "(e.g. with Kaldi's wav-copy) and list those")
            elif re.search(r"\.ark:\d+$", rest):
                error = f"{path}:{n}: archive offsets (file.ark:offset) are not supported; extract the audio to files first"
            # Kaldi resolves relative paths against the working directory; fall back to
            # the list's own folder when nothing is there.
            resolved = rest if error else _resolve(rest, Path.cwd())
            if not error and not Path(resolved).exists() and (path.parent / rest).exists():
                resolved = str(path.parent / rest)
            out.append((uid, resolved, _safe_name(uid), error))
    return out


def _looks_like_scp(path: Path) -> bool:
    return path.suffix == ".scp"


def expand_inputs(args: Iterable[str | Path]) -> list[InputItem]:
    """Items for command-line arguments: a file, a directory (its media files, recursive),
    a glob (`**` recursive), a `.jsonl` manifest, or a `.scp` list. Order is kept;
    directory and glob members are sorted; ids and names are made unique."""
    raw: list[tuple[str, str, str, str | None]] = []
    for arg in args:
        text = str(arg)
        path = Path(text).expanduser()
        if path.is_dir():
            raw.extend(_from_dir(path))
        elif path.is_file() and path.suffix == ".jsonl":
            raw.extend(_from_manifest(path))
        elif path.is_file() and _looks_like_scp(path):
            raw.extend(_from_scp(path))
        elif path.exists():
            raw.append((text, text, _strip_ext(path.name), None))
        elif glob.has_magic(text):
            matches = sorted(glob.glob(str(path), recursive=True))
            files = [Path(m) for m in matches if _is_media(Path(m))]
            if not files:
                raw.append((text, text, _safe_name(_strip_ext(path.name)), f"{text}: no media files match"))
            raw.extend((str(p), str(p), _strip_ext(p.name), None) for p in files)
        else:
            raw.append((text, text, _strip_ext(path.name) or "_", f"{text}: no such file"))
    return _unique(raw)


def _unique(raw: list[tuple[str, str, str, str | None]]) -> list[InputItem]:
    items, ids, names = [], set(), set()
    for uid, path, name, error in raw:
        name = _safe_name(name)
        base_id, k = uid, 1
        while uid in ids:
            k += 1
            uid = f"{base_id}#{k}"
        base_name, k = name, 1
        while name.lower() in names:
            k += 1
            name = f"{base_name}~{k}"
        ids.add(uid)
        names.add(name.lower())
        items.append(InputItem(uid, path, name, error))
    return items
