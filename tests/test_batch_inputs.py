"""Batch inputs: files, directories (recursive), globs, JSONL manifests, Kaldi wav.scp;
unique ids and output names; entries that cannot work carry their reason."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from asr.audio import write_wav
from asr.batch.inputs import InputError, expand_inputs


@pytest.fixture()
def tree(tmp_path):
    for rel in ["a.wav", "sub/b.wav", "sub/deeper/c.mp3", "sub/notes.txt", "x/a.wav"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".wav":
            write_wav(p, np.zeros(1600, dtype=np.float32), 16000)
        else:
            p.write_bytes(b"not audio")
    return tmp_path


def test_file_and_directory_recursive(tree):
    items = expand_inputs([tree / "a.wav", tree / "sub"])
    assert [i.path for i in items] == [str(tree / "a.wav"), str(tree / "sub/b.wav"), str(tree / "sub/deeper/c.mp3")]
    assert [i.name for i in items] == ["a", "b", "deeper/c"]  # sub-folders kept below a directory
    assert all(i.error is None for i in items)  # notes.txt is not media: not listed


def test_glob_recursive_and_unique_names(tree):
    items = expand_inputs([str(tree / "**" / "*.wav")])
    assert sorted(i.path for i in items) == sorted(str(tree / r) for r in ["a.wav", "sub/b.wav", "x/a.wav"])
    names = [i.name for i in items]
    assert len(set(names)) == 3 and "a" in names and "a~2" in names
    assert expand_inputs([str(tree / "*.flac")])[0].error.endswith("no media files match")


def test_missing_file_is_an_item_with_its_error(tree):
    (item,) = expand_inputs([tree / "nope.wav"])
    assert item.error and "no such file" in item.error


def test_manifest_paths_relative_to_it(tree):
    m = tree / "sub" / "list.jsonl"
    lines = [{"id": "u1", "audio": "b.wav", "text": "x"}, {"key": "u2", "audio_filepath": str(tree / "a.wav")},
             {"audio": "deeper/c.mp3"}, {"id": "u4"}]
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = expand_inputs([m])
    assert [i.id for i in items][:3] == ["u1", "u2", "deeper/c.mp3"]
    assert items[0].path == str(tree / "sub" / "b.wav") and items[1].path == str(tree / "a.wav")
    assert [i.name for i in items][:3] == ["u1", "u2", "deeper/c"]
    assert items[3].error and "no audio path" in items[3].error
    bad = tree / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match="bad.jsonl:1"):
        expand_inputs([bad])


def test_wav_scp_paths_pipes_and_archives(tree, monkeypatch):
    scp = tree / "wav.scp"
    scp.write_text(
        f"utt1 {tree / 'a.wav'}\n"
        "utt2 sub/b.wav\n"
        "utt3 sox x.wav -t wav - |\n"
        "utt4 feats.ark:1234\n"
        "utt/5 ../escape.wav\n"
    )
    monkeypatch.chdir(tree)
    items = expand_inputs([scp])
    assert [i.id for i in items] == ["utt1", "utt2", "utt3", "utt4", "utt/5"]
    assert items[0].error is None and items[1].path == os.path.join(str(tree), "sub/b.wav")
    assert "piped commands" in items[2].error and "archive offsets" in items[3].error
    assert items[4].name == "utt/5"  # no '..' can leave the output folder
    assert all(".." not in i.name for i in items)


def test_duplicate_ids_are_made_unique(tree):
    items = expand_inputs([tree / "a.wav", tree / "a.wav"])
    assert [i.id for i in items] == [str(tree / "a.wav"), str(tree / "a.wav") + "#2"]
    assert [i.name for i in items] == ["a", "a~2"]
