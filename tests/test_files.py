"""robustad.core.files: atomic writes with the user's umask, deterministic torch bytes, SHA-256."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest
import torch

from robustad.core.files import file_sha256, torch_save_atomic, write_bytes_atomic, write_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_mode_of_the_users_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        path = write_text_atomic(tmp_path / "deep" / "record.json", "{}\n")
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == "{}\n"


def test_an_overwrite_leaves_no_temporary_file(tmp_path):
    write_bytes_atomic(tmp_path / "a.bin", b"one")
    write_bytes_atomic(tmp_path / "a.bin", b"two")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == b"two"


def test_the_same_tensors_saved_under_two_names_have_the_same_bytes(tmp_path):
    state = {"weight": torch.arange(6.0).view(2, 3), "nested": {"bias": torch.ones(2)}}
    a = torch_save_atomic(state, tmp_path / "one.pt")
    b = torch_save_atomic(state, tmp_path / "other-name.pt")
    assert a.read_bytes() == b.read_bytes()
    assert file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    torch.testing.assert_close(torch.load(a, weights_only=True), state)
