"""`bench data download NAME --root DIR`: fetch a dataset archive from its public address.

The archive is streamed into `<root>/.downloads/<file>.part` with a progress bar; an interrupted
download resumes from where it stopped (HTTP Range) when rerun. Its SHA-256 is checked before
anything is extracted (a mismatch deletes the file and is an error). Extraction refuses any member
that would land outside `--root` (absolute paths, "..", links, devices) and happens in a temporary
folder inside `--root` whose entries are moved into place only once all succeeded, so a failure
leaves nothing half-extracted. The verified archive is kept in `.downloads/`; rerunning skips the
download.

Known addresses (`KNOWN_SOURCES`) are those whose SHA-256 is published by a public source; the
checksums below are the `DownloadInfo.hashsum` (SHA-256) values of anomalib's data modules
(github.com/openvinotoolkit/anomalib, `src/anomalib/data/datamodules/image/{mvtecad,visa,btech}.py`).
MPDD, WFDD, DTD-Synthetic, BraTS2021 and Head-CT are distributed through Google Drive, Kaggle or
registration pages without a published checksum: pass `--url` and `--sha256` for them (and for any
other address).
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from robustad.core.files import file_sha256, write_text_atomic
from robustad.datasets.image_io import DatasetError
from robustad.datasets.registry import DATASETS

CHUNK_BYTES = 1 << 20
# Python's tar extraction filters (3.12, and backported to 3.10.12 / 3.11.4): "data" refuses links
# out of the tree and special files. Older 3.10/3.11 releases lack them; `check_member` has already
# refused every such member, so they extract without one.
TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
DOWNLOAD_FOLDER = ".downloads"


@dataclass(frozen=True)
class DownloadSource:
    url: str
    sha256: str
    filename: str
    note: str = ""


KNOWN_SOURCES: dict[str, DownloadSource] = {
    "mvtec": DownloadSource(
        "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
        "mvtec_anomaly_detection.tar.xz",
        "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        "mvtec_anomaly_detection.tar.xz",
        "MVTec AD, CC BY-NC-SA 4.0; MVTec may move this address behind its download form",
    ),
    "visa": DownloadSource(
        "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
        "VisA_20220922.tar",
        "VisA, CC BY 4.0",
    ),
    "btad": DownloadSource(
        "https://avires.dimi.uniud.it/papers/btad/btad.zip",
        "461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
        "btad.zip",
        "BTAD, CC BY-SA 4.0; unpacks to BTech_Dataset_transformed/",
    ),
}


class DownloadError(DatasetError):
    """A download or extraction failed; the message says whether rerunning resumes it."""


def download_dataset(name: str, root, *, url: str | None = None, sha256: str | None = None,
                     progress: bool = True, timeout: float = 60.0) -> Path:
    """Downloads, verifies and extracts dataset `name` into `root`; returns `root` (absolute).

    `url` and `sha256` override the known source; a dataset without a known source needs both.
    """
    DATASETS.get(name)  # an unknown name lists the valid ones
    if name == "textures":  # built in: generated, not downloaded
        from robustad.datasets.textures import generate_textures

        return generate_textures(root)
    source = KNOWN_SOURCES.get(name)
    if url is None and source is None:
        raise DownloadError(f"no public download address with a published checksum is known for {name!r}; "
                            f"pass --url URL --sha256 HEX (known: {', '.join(KNOWN_SOURCES)})")
    if url is None:
        url, sha256, filename = source.url, sha256 or source.sha256, source.filename
    else:
        if sha256 is None and source is not None and url == source.url:
            sha256 = source.sha256
        filename = PurePosixPath(urllib.parse.urlparse(url).path).name or f"{name}.archive"
    if not sha256:
        raise DownloadError(f"no SHA-256 known for {url}: pass --sha256 HEX so the archive can be verified")
    sha256 = sha256.strip().lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise DownloadError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    root = Path(root).expanduser().resolve()
    archive = root / DOWNLOAD_FOLDER / filename
    if already_extracted(archive, sha256, root):
        return root
    archive.parent.mkdir(parents=True, exist_ok=True)
    if not (archive.is_file() and file_sha256(archive) == sha256):
        fetch(url, archive, sha256, progress=progress, timeout=timeout)
    entries = extract(archive, root)
    write_text_atomic(extraction_marker(archive), json.dumps({"sha256": sha256, "entries": entries}) + "\n")
    return root


def extraction_marker(archive: Path) -> Path:
    """`<root>/.downloads/<archive>.extracted.json`: the archive's SHA-256 and the entries it put in the root."""
    return archive.with_name(archive.name + ".extracted.json")


def already_extracted(archive: Path, sha256: str, root: Path) -> bool:
    """True when this very archive (by SHA-256) was extracted into `root` and its entries are still there."""
    try:
        marker = json.loads(extraction_marker(archive).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(marker, dict) and marker.get("sha256") == sha256 and isinstance(marker.get("entries"), list)
            and all((root / entry).exists() for entry in marker["entries"]))


def fetch(url: str, archive: Path, sha256: str, *, progress: bool, timeout: float) -> None:
    """Streams `url` to `archive` through `<archive>.part`, resuming a partial file."""
    part = archive.with_name(archive.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the partial file is already complete
            response = None
        else:
            raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"download of {url} failed: {err}") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            if start and not resumed:
                start = 0  # the server ignored Range: start over
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            received = start
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=archive.name, disable=not progress
            ) as bar:
                try:
                    for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as err:  # a dropped connection
                    raise DownloadError(f"download of {url} interrupted after {received} bytes ({err}); "
                                        f"rerun to resume from {part}") from None
            if total is not None and received < total:
                raise DownloadError(f"download of {url} interrupted after {received} of {total} bytes; "
                                    f"rerun to resume from {part}")
    actual = file_sha256(part)
    if actual != sha256:
        part.unlink()
        raise DownloadError(f"SHA-256 mismatch for {url}: expected {sha256}, got {actual}; "
                            f"the file was deleted and nothing was extracted")
    os.replace(part, archive)


def archive_members(archive: Path) -> list[tuple[str, str]]:
    """[(member name, kind)] with kind "file", "dir" or something refused ("link", "device")."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            out = []
            for info in z.infolist():
                mode = info.external_attr >> 16
                kind = "link" if stat.S_ISLNK(mode) else ("dir" if info.is_dir() else "file")
                out.append((info.filename, kind))
            return out
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            return [(m.name, "file" if m.isfile() else "dir" if m.isdir() else "link" if (m.issym() or m.islnk())
                     else "device") for m in t.getmembers()]
    raise DownloadError(f"{archive} is neither a zip nor a tar archive")


def check_member(name: str, kind: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if kind not in ("file", "dir"):
        raise DownloadError(f"refusing to extract {archive}: member {name!r} is a {kind}")
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DownloadError(f"refusing to extract {archive}: member {name!r} would land outside the root folder")


def extract(archive: Path, root: Path) -> list[str]:
    """Extracts into a temporary folder inside `root`, then moves the top-level entries in place;
    returns their names."""
    members = archive_members(archive)
    for name, kind in members:
        check_member(name, kind, archive)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(staging)
        else:
            with tarfile.open(archive) as t:
                t.extractall(staging, **TAR_FILTER)
        entries = sorted(staging.iterdir())
        clashes = [e.name for e in entries if (root / e.name).exists()]
        if clashes:
            raise DownloadError(f"refusing to overwrite {', '.join(str(root / c) for c in clashes)} while "
                                f"extracting {archive}: move them away or choose another --root")
        for entry in entries:
            os.replace(entry, root / entry.name)
        return [entry.name for entry in entries]
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as err:
        raise DownloadError(f"extracting {archive} failed: {err}; nothing was extracted") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
