"""Where transcripts go: one file per input in an output folder, one JSONL for all, or
standard output; and which inputs `--resume` can skip.

Per-input files are written to a temporary name and renamed, so a file that exists is
complete (an interrupted run never leaves a half-written output that resume would
skip). The JSONL is appended one whole line at a time; on resume, ids on complete lines
are done.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

from .formats import EXTENSIONS, PER_FILE_FORMATS, render
from .inputs import InputItem
from .results import Transcript

__all__ = ["Writer", "JSONL_NAME"]

JSONL_NAME = "transcripts.jsonl"


class Writer:
    def __init__(self, fmt: str, output_dir: Path | None, stdout: TextIO | None = None, cue_chars: int = 32) -> None:
        self.fmt = fmt
        self.dir = output_dir
        self.stdout = stdout or sys.stdout
        self.cue_chars = cue_chars
        self._jsonl: TextIO | None = None
        self._done_ids: set[str] = set()
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            if fmt == "jsonl":
                self._done_ids = self._read_done(output_dir / JSONL_NAME)

    @staticmethod
    def _read_done(path: Path) -> set[str]:
        done: set[str] = set()
        if not path.exists():
            return done
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # an interrupted last line: that input is not done
                try:
                    done.add(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        return done

    def path_for(self, item: InputItem) -> Path | None:
        """The output file of `item` (None: standard output or the shared JSONL)."""
        if self.dir is None or self.fmt not in PER_FILE_FORMATS:
            return None
        return self.dir / (item.name + EXTENSIONS[self.fmt])

    def done(self, item: InputItem) -> bool:
        """Whether `item`'s output already exists (for --resume)."""
        if self.dir is None:
            return False
        if self.fmt == "jsonl":
            return item.id in self._done_ids
        path = self.path_for(item)
        return path is not None and path.exists()

    def write(self, transcript: Transcript, item: InputItem) -> Path | None:
        text = render(transcript, self.fmt, self.cue_chars)
        if self.dir is None:
            self._to_stdout(transcript, text)
            return None
        if self.fmt == "jsonl":
            if self._jsonl is None:
                path = self.dir / JSONL_NAME
                self._repair_tail(path)
                self._jsonl = open(path, "a", encoding="utf-8")
            self._jsonl.write(text)
            self._jsonl.flush()
            self._done_ids.add(item.id)
            return self.dir / JSONL_NAME
        path = self.path_for(item)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path

    @staticmethod
    def _repair_tail(path: Path) -> None:
        """Drop an interrupted last line left by a killed run."""
        if not path.exists() or path.stat().st_size == 0:
            return
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])

    def _to_stdout(self, transcript: Transcript, text: str) -> None:
        out = self.stdout
        if self.fmt == "txt":  # `path<TAB>text`, as `tingxie transcribe` always printed
            if transcript.channels > 1:
                for c in range(transcript.channels):
                    out.write(f"{transcript.path}\t[{c}] {transcript.channel_text(c)}\n")
            else:
                out.write(f"{transcript.path}\t{transcript.text}\n")
        else:
            out.write(text)
        out.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
