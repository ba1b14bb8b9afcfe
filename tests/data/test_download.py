"""Downloads against a local HTTP server on 127.0.0.1: resume, retries, corruption, layout, offline message."""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from paddlemix_r1.data import download as dl
from paddlemix_r1.data.readers import read_training_files

REPO = Path(__file__).resolve().parents[2]


class FileServer:
    """Serves ``files`` (name -> bytes) with Range support; records (path, Range header) per request.

    cut: names whose next ``cut[name]`` full-file responses stop halfway (the connection closes).
    ignore_range: answer every request with the whole file (200), as some servers do.
    """

    def __init__(self, files):
        self.files = dict(files)
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.ignore_if_range = False  # resume with 206 even when If-Range names another version
        self.requests: list[tuple[str, str | None]] = []
        self.if_range: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                spec = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                server.if_range.append(if_range)
                if if_range is not None and if_range != etag(data) and not server.ignore_if_range:
                    spec = None  # RFC 9110: another version -> the whole (current) file with 200
                if spec and not server.ignore_range:
                    start = int(spec.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag(data))
                self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
                self.end_headers()
                if server.cut.get(name, 0) > 0:
                    server.cut[name] -= 1
                    self.wfile.write(body[: len(body) // 2])  # then the connection closes (HTTP/1.0)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def etag(data):
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def tar_bytes(entries):
    """An uncompressed tarball of {member name: bytes}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def jpeg_bytes(size=(64, 48)):
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 60, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def rec_tar():
    rows = [{"image": "train2014/COCO_train2014_000000000009.jpg", "problem": "Where is the bowl?",
             "normal_caption": "bowl", "solution": [1.5, 2.0, 30.0, 40.0]}]
    return tar_bytes({
        "REC/coco/train2014/COCO_train2014_000000000009.jpg": jpeg_bytes(),
        "REC/rec_jsons_processed/refcoco_train.json": json.dumps(rows).encode(),
        "REC/refgta/images/0.jpg": jpeg_bytes((32, 32)),
        "REC/README.txt": b"notes",
    })


def payload(n=300_000):
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


def checksum(data):
    return dl.Checksum(len(data), hashlib.sha256(data).hexdigest())


FAST = {"retries": 2, "backoff": 0.0, "timeout": 5.0}


def test_interrupted_transfer_resumes_with_range(tmp_path):
    data = payload()
    with FileServer({"big.bin": data}) as server:
        server.cut["big.bin"] = 1
        logs = []
        digest = dl.download_file(server.url + "big.bin", str(tmp_path / "big.bin"), checksum(data), log=logs.append,
                                  **FAST)
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "big.bin").read_bytes() == data and not (tmp_path / "big.bin.part").exists()
    assert server.requests == [("big.bin", None), ("big.bin", f"bytes={len(data) // 2}-")]
    assert any("resuming" in line for line in logs) and any("sha256 verified" in line for line in logs)


def part_on_disk(path, data, version, url):
    """``path``.part holding ``data`` and the validator the downloader records for ``version`` of the file."""
    Path(str(path) + ".part").write_bytes(data)
    dl.write_part_validator(str(path) + ".part", dl.Validator(url, etag(version), "Mon, 01 Jan 2024 00:00:00 GMT",
                                                              len(version)))


def test_partial_file_on_disk_is_resumed(tmp_path):
    data = payload()
    with FileServer({"big.bin": data}) as server:
        part_on_disk(tmp_path / "big.bin", data[:1000], data, server.url + "big.bin")
        dl.download_file(server.url + "big.bin", str(tmp_path / "big.bin"), checksum(data), log=lambda m: None, **FAST)
    assert server.requests == [("big.bin", "bytes=1000-")] and server.if_range == [etag(data)]
    assert (tmp_path / "big.bin").read_bytes() == data
    assert not Path(str(tmp_path / "big.bin") + ".part.json").exists()


def test_complete_partial_file_and_server_without_range(tmp_path):
    data = payload(5000)
    with FileServer({"a.bin": data, "b.bin": data}) as server:
        part_on_disk(tmp_path / "a.bin", data, data, server.url + "a.bin")  # whole file, not yet renamed
        part_on_disk(tmp_path / "b.bin", b"stale bytes", data, server.url + "b.bin")
        dl.download_file(server.url + "a.bin", str(tmp_path / "a.bin"), checksum(data), log=lambda m: None, **FAST)
        server.ignore_range = True  # answers 200 with the whole file: the partial file is started over
        dl.download_file(server.url + "b.bin", str(tmp_path / "b.bin"), checksum(data), log=lambda m: None, **FAST)
    assert (tmp_path / "a.bin").read_bytes() == data and (tmp_path / "b.bin").read_bytes() == data
    assert server.requests == [("a.bin", "bytes=5000-"), ("b.bin", "bytes=11-")]


def test_unknown_checksum_prints_sha256(tmp_path):
    data = payload(2000)
    logs = []
    with FileServer({"x.jsonl": data}) as server:
        dl.download_file(server.url + "x.jsonl", str(tmp_path / "x.jsonl"), None, log=logs.append, **FAST)
    assert any(hashlib.sha256(data).hexdigest() in line and "no recorded checksum" in line for line in logs)


def test_retries_exhausted_keeps_partial_file(tmp_path):
    data = payload()
    with FileServer({"big.bin": data}) as server:
        server.cut["big.bin"] = 10
        with pytest.raises(dl.DownloadError, match=r"failed after 2 attempts .*partial file .*big.bin.part is kept"):
            dl.download_file(server.url + "big.bin", str(tmp_path / "big.bin"), checksum(data), log=lambda m: None,
                             retries=1, backoff=0.0, timeout=5.0)
    assert len(server.requests) == 2 and server.requests[1][1] is not None
    assert 0 < (tmp_path / "big.bin.part").stat().st_size < len(data)


def test_http_error_is_not_retried(tmp_path):
    refused = pytest.raises(dl.DownloadError, match=r"HTTP 404 .*download .*missing.tar manually to")
    with FileServer({}) as server, refused:
        dl.download_file(server.url + "missing.tar", str(tmp_path / "missing.tar"), log=lambda m: None, **FAST)
    assert len(server.requests) == 1


def test_install_rec_layout_then_read_it(tmp_path):
    archive = rec_tar()
    dest = tmp_path / "data"
    with FileServer({"REC.tar": archive}) as server:
        server.cut["REC.tar"] = 1
        logs = []
        dl.install(["REC.tar"], str(dest), base_url=server.url, checksums={"REC.tar": checksum(archive)},
                   log=logs.append, **FAST)
        assert (dest / "coco" / "train2014" / "COCO_train2014_000000000009.jpg").is_file()
        assert (dest / "rec_jsons_processed" / "refcoco_train.json").is_file()
        assert (dest / "refgta" / "images" / "0.jpg").is_file()
        assert (dest / "REC" / "README.txt").read_bytes() == b"notes"  # content outside the layout kept as is
        assert (dest / ".downloads" / "REC.tar.installed").is_file()
        assert not (dest / ".downloads" / "REC.tar").exists()  # archive removed after extraction
        assert not (dest / ".downloads" / "REC.tar.staging").exists()
        n = len(server.requests)
        dl.install(["REC.tar"], str(dest), base_url=server.url, log=logs.append, **FAST)
        assert len(server.requests) == n and "already installed" in logs[-1]
    rows = read_training_files([str(dest / "rec_jsons_processed" / "refcoco_train.json")], str(dest / "coco"),
                               task="rec")
    assert rows[0]["solution"] == [1.5, 2.0, 30.0, 40.0]


def test_corrupt_archive_is_detected_and_not_extracted(tmp_path):
    archive = rec_tar()
    damaged = bytearray(archive)
    damaged[len(damaged) // 3] ^= 0xFF
    dest = tmp_path / "data"
    corrupt = pytest.raises(dl.ChecksumError, match=r"REC.tar: corrupt download \(sha256 [0-9a-f]{64}, expected")
    with FileServer({"REC.tar": bytes(damaged)}) as server, corrupt:
        dl.install(["REC.tar"], str(dest), base_url=server.url, checksums={"REC.tar": checksum(archive)},
                   log=lambda m: None, **FAST)
    assert (dest / ".downloads" / "REC.tar.corrupt").is_file()
    assert not (dest / ".downloads" / "REC.tar").exists()
    assert not (dest / "coco").exists() and not (dest / ".downloads" / "REC.tar.installed").exists()


def test_archive_escaping_the_destination_is_refused(tmp_path):
    archive = tar_bytes({"GEO/../../evil.txt": b"x"})
    with FileServer({"GEO.tar": archive}) as server, pytest.raises(dl.DownloadError, match="refusing to extract"):
        dl.install(["GEO.tar"], str(tmp_path / "data"), base_url=server.url, checksums={}, log=lambda m: None, **FAST)
    assert not (tmp_path / "evil.txt").exists()


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_message_without_traceback(tmp_path, capsys):
    port = unused_port()
    code = dl.main(["test", "rec", "--base_url", f"http://127.0.0.1:{port}", "--dest", str(tmp_path / "data"),
                    "--retries", "1", "--backoff", "0", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3  # REC.tar + the two test files, all from the unreachable host
    assert all(f"cannot reach 127.0.0.1:{port}:" in line for line in errors)
    assert f"download http://127.0.0.1:{port}/REC.tar manually to {tmp_path / 'data' / '.downloads' / 'REC.tar'} " \
           "and run this command again" in err
    assert f"manually to {tmp_path / 'data' / 'geoqa_test_prompts.jsonl'}" in err
    assert err.count("attempt 1/2 failed") == 1  # the host is not tried again for the next files


def test_shell_script_fetches_test_files(tmp_path):
    files = {"superclevr_test200_counting_problems.jsonl": b'{"image_path": "./images/a.png"}\n',
             "geoqa_test_prompts.jsonl": b'{"image_path": "./Geo170K/images/test/1.png"}\n'}
    with FileServer(files) as server:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "download_data.sh"), "test", "--base_url", server.url,
             "--dest", str(tmp_path / "data"), "--retries", "0", "--timeout", "5"],
            check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    for name, data in files.items():
        assert (tmp_path / "data" / name).read_bytes() == data
    assert "recorded in" in result.stderr


# ---- a partial file from another version; the lock file -------------------------------------------


@pytest.mark.parametrize("how", ["no-validator", "if-range", "server-ignores-if-range"])
def test_partial_file_of_an_older_version_is_started_over(tmp_path, how):
    """A .part of version 1 left on disk while the server now has version 2 (same size): resuming would
    splice the two into a file that is neither. Without a validator the part cannot be trusted; with one,
    If-Range makes the server send the whole new file, and if it resumes anyway its ETag tells."""
    old, new = payload(), payload()[::-1]
    target = tmp_path / "big.bin"
    logs = []
    with FileServer({"big.bin": new}) as server:
        if how == "no-validator":
            (tmp_path / "big.bin.part").write_bytes(old[:1000])
        else:
            part_on_disk(target, old[:1000], old, server.url + "big.bin")
        server.ignore_if_range = how == "server-ignores-if-range"
        digest = dl.download_file(server.url + "big.bin", str(target), None, log=logs.append, **FAST)
    assert target.read_bytes() == new and digest == hashlib.sha256(new).hexdigest()  # not a splice of both
    assert server.if_range[-1] == (etag(old) if how == "if-range" else None)
    assert any("starting over" in line for line in logs), logs


def test_partial_file_larger_than_the_recorded_size_is_started_over(tmp_path):
    data = payload(5000)
    with FileServer({"a.bin": data}) as server:
        part_on_disk(tmp_path / "a.bin", data + b"junk", data, server.url + "a.bin")
        dl.download_file(server.url + "a.bin", str(tmp_path / "a.bin"), None, log=lambda m: None, **FAST)
    assert (tmp_path / "a.bin").read_bytes() == data and server.requests == [("a.bin", None)]


def test_first_download_is_recorded_in_the_lock_and_later_ones_are_checked(tmp_path):
    first, changed = b'{"q": 1}\n' * 50, b'{"q": 2}\n' * 50
    dest = tmp_path / "data"
    name = "geoqa_test_prompts.jsonl"
    logs = []
    with FileServer({name: first}) as server:
        dl.install([name], str(dest), base_url=server.url, log=logs.append, **FAST)
        lock = json.loads((dest / dl.LOCK_FILE).read_text())
        assert lock["files"][name]["sha256"] == hashlib.sha256(first).hexdigest()
        assert lock["files"][name]["size"] == len(first)
        assert any("recorded in" in line and dl.LOCK_FILE in line for line in logs)
        # the file on disk is checked against the lock on every run
        dl.install([name], str(dest), base_url=server.url, log=logs.append, **FAST)
        assert "sha256 verified" in logs[-1]
        # a fresh download of a file that changed on the server is refused, and says why
        (dest / name).unlink()
        server.files[name] = changed
        with pytest.raises(dl.ChecksumError, match=rf"sha256 [0-9a-f]{{64}}, expected .*{dl.LOCK_FILE}"):
            dl.install([name], str(dest), base_url=server.url, log=logs.append, **FAST)
    assert (dest / (name + ".corrupt")).read_bytes() == changed and not (dest / name).exists()


def test_archive_checked_against_the_lock_before_extraction(tmp_path):
    archive = rec_tar()
    dest = tmp_path / "data"
    with FileServer({"REC.tar": archive}) as server:
        dl.install(["REC.tar"], str(dest), base_url=server.url, checksums={}, log=lambda m: None, **FAST)
        assert json.loads((dest / dl.LOCK_FILE).read_text())["files"]["REC.tar"]["size"] == len(archive)
        (dest / ".downloads" / "REC.tar.installed").unlink()
        server.files["REC.tar"] = tar_bytes({"REC/coco/x.jpg": jpeg_bytes()})
        with pytest.raises(dl.ChecksumError, match="REC.tar: corrupt download"):
            dl.install(["REC.tar"], str(dest), base_url=server.url, checksums={}, log=lambda m: None, **FAST)
    assert not (dest / "coco" / "x.jpg").exists()


def test_a_malformed_lock_file_is_named(tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / dl.LOCK_FILE).write_text("{not json")
    with pytest.raises(dl.DownloadError, match=rf"{dl.LOCK_FILE}: "):
        dl.install(["geoqa_test_prompts.jsonl"], str(dest), base_url="http://127.0.0.1:9/", log=lambda m: None, **FAST)
