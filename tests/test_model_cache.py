"""The converted-GGUF cache is keyed by the file's content: clones and venvs share one copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from clbench.backbones import hf_loading


def test_same_gguf_bytes_in_two_clones_share_one_converted_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hf_loading.CACHE_ENV, str(tmp_path / "cache"))
    payload = b"GGUF" + os.urandom(3000)
    copies = []
    for clone in ("clone-a", "clone-b"):
        path = tmp_path / clone / ".venv" / "model.gguf"
        path.parent.mkdir(parents=True)
        path.write_bytes(payload)
        copies.append(path)
    key = hashlib.sha256(payload).hexdigest()
    assert [hf_loading.gguf_content_key(p) for p in copies] == [key, key]
    assert len(list((tmp_path / "cache" / "gguf-digests").iterdir())) == 2  # each path hashed once, then remembered

    converted = tmp_path / "cache" / "models" / key
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    loaded = []
    monkeypatch.setattr(hf_loading, "load_folder", lambda spec, folder, **kw: loaded.append(folder) or ("model", "tokenizer"))
    for path in copies:
        hf_loading.load_gguf(f"hf:{path}", path)
    assert loaded == [converted, converted]


def test_the_remembered_digest_follows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hf_loading.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    path.write_bytes(b"one")
    first = hf_loading.gguf_content_key(path)
    path.write_bytes(b"two, longer")  # new size and mtime: hashed again
    assert hf_loading.gguf_content_key(path) == hashlib.sha256(b"two, longer").hexdigest() != first
    for memo in (tmp_path / "cache" / "gguf-digests").iterdir():
        memo.write_text("not a digest")  # a damaged memo is ignored
    assert hf_loading.gguf_content_key(path) == hashlib.sha256(b"two, longer").hexdigest()
