"""`download_dataset` against a local HTTP server on 127.0.0.1 (with Range support): a complete
download, a truncated one resumed on rerun, a checksum mismatch, and archives whose members would
land outside the root."""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from robustad.datasets import create_dataset
from robustad.datasets.download import KNOWN_SOURCES, DownloadError, download_dataset
from tests import dataset_trees as trees


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves `server.files[path]`; honours `Range: bytes=N-`; while `server.truncate` is set,
    announces the full length but sends only the first half and closes the connection."""

    def do_GET(self):
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.server.requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.server.truncate:
            self.server.truncate = False
            payload = payload[: len(payload) // 2]
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.files, httpd.requests, httpd.truncate = {}, [], False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def url_of(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def mvtec_tar(tmp_path) -> bytes:
    trees.write_mvtec_like(tmp_path / "src", ["bottle"], n_train=12, n_good=4, n_bad=4)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "bottle", arcname="bottle")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_extracts_a_readable_tree(server, tmp_path):
    data = mvtec_tar(tmp_path)
    server.files["/mvtec.tar.gz"] = data
    root = download_dataset("mvtec", tmp_path / "data", url=url_of(server, "/mvtec.tar.gz"), sha256=sha(data),
                            progress=False, timeout=10)
    assert root == (tmp_path / "data").resolve()
    assert len(create_dataset("mvtec", root=root, category="bottle", split="test", image_size=8)) == 8
    assert sorted(p.name for p in root.iterdir()) == [".downloads", "bottle"]  # no staging folder left
    # rerun on the complete, verified tree: nothing is fetched, nothing is touched, it says it is ready
    requests = len(server.requests)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert download_dataset("mvtec", root, url=url_of(server, "/mvtec.tar.gz"), sha256=sha(data), progress=False) == root
    assert len(server.requests) == requests and {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    # a tree this archive did not make is never overwritten
    shutil.rmtree(root / ".downloads")
    with pytest.raises(DownloadError, match="refusing to overwrite .*bottle"):
        download_dataset("mvtec", root, url=url_of(server, "/mvtec.tar.gz"), sha256=sha(data), progress=False)


def test_truncated_download_resumes_with_a_range_request(server, tmp_path):
    data = mvtec_tar(tmp_path)
    server.files["/mvtec.tar.gz"] = data
    server.truncate = True
    url = url_of(server, "/mvtec.tar.gz")
    with pytest.raises(DownloadError, match="interrupted after .*rerun to resume"):
        download_dataset("mvtec", tmp_path / "data", url=url, sha256=sha(data), progress=False, timeout=10)
    part = tmp_path / "data" / ".downloads" / "mvtec.tar.gz.part"
    assert 0 < part.stat().st_size < len(data)
    assert not (tmp_path / "data" / "bottle").exists()
    download_dataset("mvtec", tmp_path / "data", url=url, sha256=sha(data), progress=False, timeout=10)
    assert server.requests == [None, f"bytes={len(data) // 2}-"]
    assert (tmp_path / "data" / "bottle" / "train" / "good").is_dir()
    assert (tmp_path / "data" / ".downloads" / "mvtec.tar.gz").read_bytes() == data


def test_checksum_mismatch_extracts_nothing(server, tmp_path):
    data = mvtec_tar(tmp_path)
    server.files["/mvtec.tar.gz"] = data
    with pytest.raises(DownloadError, match=f"SHA-256 mismatch .*expected {'0' * 64}, got {sha(data)}"):
        download_dataset("mvtec", tmp_path / "data", url=url_of(server, "/mvtec.tar.gz"), sha256="0" * 64,
                         progress=False, timeout=10)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".downloads"]
    assert list((tmp_path / "data" / ".downloads").iterdir()) == []


def evil_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("good/readme.txt", "fine")
        z.writestr("../escaped.txt", "outside the root")
    return buffer.getvalue()


def symlink_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("bottle/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buffer.getvalue()


@pytest.mark.parametrize("archive,name,kind", [(evil_zip(), "evil.zip", "outside the root"),
                                                (symlink_tar(), "link.tar", "is a link")])
def test_members_outside_the_root_are_refused(server, tmp_path, archive, name, kind):
    server.files[f"/{name}"] = archive
    with pytest.raises(DownloadError, match=f"refusing to extract .*{kind}"):
        download_dataset("folder", tmp_path / "data", url=url_of(server, f"/{name}"), sha256=sha(archive),
                         progress=False, timeout=10)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".downloads"]
    assert not (tmp_path / "escaped.txt").exists()


def test_options_are_checked_before_any_network_access(tmp_path):
    with pytest.raises(DownloadError, match="no public download address .* pass --url URL --sha256 HEX"):
        download_dataset("mpdd", tmp_path)
    with pytest.raises(DownloadError, match="pass --sha256"):
        download_dataset("wfdd", tmp_path, url="http://127.0.0.1:9/wfdd.zip")
    with pytest.raises(DownloadError, match="64 hexadecimal digits"):
        download_dataset("wfdd", tmp_path, url="http://127.0.0.1:9/wfdd.zip", sha256="abc")
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        download_dataset("nope", tmp_path)
    assert set(KNOWN_SOURCES) == {"mvtec", "visa", "btad"}
    assert all(len(s.sha256) == 64 and s.url.startswith("https://") for s in KNOWN_SOURCES.values())


def test_pythons_without_tar_filters_extract_the_same_and_refuse_the_same(server, tmp_path, monkeypatch):
    from robustad.datasets import download

    monkeypatch.setattr(download, "TAR_FILTER", {})  # Python 3.10.0-3.10.11 / 3.11.0-3.11.3
    data = mvtec_tar(tmp_path)
    server.files["/mvtec.tar.gz"] = data
    root = download_dataset("mvtec", tmp_path / "data", url=url_of(server, "/mvtec.tar.gz"), sha256=sha(data),
                            progress=False, timeout=10)
    assert (root / "bottle" / "train" / "good").is_dir()
    server.files["/link.tar"] = symlink_tar()
    with pytest.raises(DownloadError, match="refusing to extract .*is a link"):
        download_dataset("folder", tmp_path / "other", url=url_of(server, "/link.tar"), sha256=sha(symlink_tar()),
                         progress=False, timeout=10)
