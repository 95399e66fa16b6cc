"""Writing files so that readers never see half of one, and hashing them.

Every file robustad writes (records, tables, checkpoints, cached maps) goes through
`write_bytes_atomic`: a temporary file in the same folder, flushed and fsynced, then renamed into
place, so a crash or a kill leaves either the old file or the new one. The file gets the mode a
plain `open()` would give it (0666 minus the umask), so a shared results folder stays readable.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

CHUNK_BYTES = 1 << 20


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Writes `data` to `path` atomically (see the module docstring); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def torch_bytes(obj) -> bytes:
    """`torch.save(obj)` as bytes. Equal objects give equal bytes: saved to a file, torch names the
    archive after the file, so two saves of one model under temporary names would differ."""
    import torch  # here, so that `bench list` and record readers never load torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def torch_save_atomic(obj, path: str | Path) -> Path:
    """`torch.save` to `path`, atomically and with bytes that depend on `obj` only."""
    return write_bytes_atomic(path, torch_bytes(obj))


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
