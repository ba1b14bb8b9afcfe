"""Download the published R1-MLLM data into the ``data/`` layout the configs and eval commands use.

    python -m paddlemix_r1.data.download rec|counting|geo|test|all [--dest data] [--base_url URL]

``rec``      REC.tar       -> data/coco, data/rec_jsons_processed, data/refgta
``counting`` Counting.tar  -> data/clevr_cogen_a_train, data/superclevr_200,
                              data/superclevr_test200_counting_problems.jsonl
``geo``      GEO.tar       -> data/GEOQA_R1V_Train_8K, data/Geo170K, data/geoqa_test_prompts.jsonl
``test``     R1-V's superclevr_test200_counting_problems.jsonl and geoqa_test_prompts.jsonl -> data/
``all``      all of the above

Archives go to ``<dest>/.downloads/`` while they download (``<name>.part``). An interrupted
transfer is resumed with an HTTP Range request, by the retry loop or by running the command again,
but only a part whose origin is known: when a transfer starts, the server's ``ETag``,
``Last-Modified`` and size are stored beside the part (``<name>.part.json``). A resume sends
``If-Range`` with them (a server that has another version answers with the whole file) and checks
the validators and the size of the answer again (for servers that ignore If-Range); a part without
a stored validator (no ETag nor Last-Modified), larger than the file, or from another version is
deleted and the file is downloaded from zero. A server that ignores Range restarts the file too.

Checksums. No checksum is published for any of these files, so ``CHECKSUMS`` holds none. The first
complete download of each file is recorded, with its size and sha256, in the lock file
``<dest>/downloads.lock.json`` (``LOCK_FILE``), and every later download into the same ``dest`` -- and
every re-run, for a plain file already on disk -- is checked against it: a file that changed on the
server is refused (renamed ``<name>.corrupt``, not extracted) instead of silently replacing the data
the earlier runs used. Copy the lock file with the data to check another machine's download against
it; delete a file's entry to accept a new version. A checksum added to ``CHECKSUMS`` wins over the
lock. Archives are extracted into a staging folder; each expected entry of the layout is looked for
up to three levels deep (the folder structure inside the tarballs is not documented) and moved to
``<dest>/<entry>``; other content is moved to ``<dest>`` as it is. Existing entries in ``<dest>`` are
kept, never overwritten. A marker ``<dest>/.downloads/<archive>.installed`` makes a second run skip
the archive. Members that would land outside the destination (absolute paths, "..", links pointing
out, devices) are refused.

Network failures are retried with exponential backoff; when a host cannot be reached the command
ends with "cannot reach HOST: ...; download URL manually to PATH" (and exit status 1), no traceback.

Why urllib and not pooch or requests: pooch downloads to a temporary file and starts over after an
interruption (the archives are several GB), and it verifies only hashes known in advance, which
these files do not have -- the lock file above is the trust-on-first-use record it lacks. Its
``Untar`` processor extracts into its cache folder, not into the layout the configs read. ``requests``
would replace only the ``urlopen`` call (resume, validators, retries, the lock and the safe
extraction stay ours) and is not a dependency of the package.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from paddlemix_r1 import atomic

R1_MLLM_URL = "https://paddlenlp.bj.bcebos.com/datasets/paddlemix/playground/r1_mllm/"
R1V_PROMPTS_URL = "https://raw.githubusercontent.com/Deep-Agent/R1-V/main/src/eval/prompts/"
CHUNK = 1 << 20
USER_AGENT = "paddlemix-r1-download"


@dataclass(frozen=True)
class Artifact:
    """One published file: where it comes from and what it becomes under ``dest``.

    layout: the entries (folders or files) an archive provides under ``dest``; empty for a plain
    file, which is saved as ``dest/<filename>``.
    """

    filename: str
    base_url: str
    layout: tuple[str, ...] = ()

    @property
    def is_archive(self) -> bool:
        return bool(self.layout)


@dataclass(frozen=True)
class Checksum:
    """Expected size in bytes and sha256 (lower-case hex) of a file; either may be unknown (None).

    origin: where the expectation comes from, for messages (e.g. the lock file that recorded it)."""

    size: int | None
    sha256: str | None
    origin: str | None = None


ARTIFACTS: dict[str, Artifact] = {
    a.filename: a
    for a in (
        Artifact("REC.tar", R1_MLLM_URL, ("coco", "rec_jsons_processed", "refgta")),
        Artifact("Counting.tar", R1_MLLM_URL,
                 ("clevr_cogen_a_train", "superclevr_200", "superclevr_test200_counting_problems.jsonl")),
        Artifact("GEO.tar", R1_MLLM_URL, ("GEOQA_R1V_Train_8K", "Geo170K", "geoqa_test_prompts.jsonl")),
        Artifact("superclevr_test200_counting_problems.jsonl", R1V_PROMPTS_URL),
        Artifact("geoqa_test_prompts.jsonl", R1V_PROMPTS_URL),
    )
}

GROUPS: dict[str, tuple[str, ...]] = {
    "rec": ("REC.tar",),
    "counting": ("Counting.tar",),
    "geo": ("GEO.tar",),
    "test": ("superclevr_test200_counting_problems.jsonl", "geoqa_test_prompts.jsonl"),
}
GROUPS["all"] = tuple(name for group in ("rec", "counting", "geo", "test") for name in GROUPS[group])

# Published size / sha256 per file name. None: nothing is published for these files; the first
# download into a data folder is recorded in its lock file (LOCK_FILE) and later ones are checked
# against that record.
CHECKSUMS: dict[str, Checksum | None] = {name: None for name in ARTIFACTS}

LOCK_FILE = "downloads.lock.json"
"""The record, in the data folder, of the size and sha256 of each file as it was first downloaded."""


class DownloadError(RuntimeError):
    """A download or installation step failed; the message says what to do."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its recorded size or sha256."""


class UnreachableError(DownloadError):
    """No connection to the host could be made (offline, DNS failure, refused)."""

    def __init__(self, message: str, host: str, reason: str):
        super().__init__(message)
        self.host = host
        self.reason = reason


Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: str, obj: object) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a crash leaves the old file or the new one)."""
    _local(lambda: atomic.write_json(path, obj, indent=1, sort_keys=True), path)


def read_lock(dest: str) -> dict[str, dict]:
    """The entries of ``<dest>/LOCK_FILE`` (file name -> {"size", "sha256", "url", "recorded"}); {} if none.

    A lock file that cannot be read raises DownloadError: checking against nothing would be silent."""
    path = os.path.join(dest, LOCK_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            files = json.load(f)["files"]
        for name, entry in files.items():
            if not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str):
                raise ValueError(f"entry {name!r} needs an integer 'size' and a 'sha256' string")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DownloadError(f"{path}: unreadable lock file ({type(e).__name__}: {e}); repair it, or delete it "
                            "to record the files afresh") from None
    return files


def _lock_checksum(dest: str, entry: Mapping[str, object]) -> Checksum:
    return Checksum(int(entry["size"]), str(entry["sha256"]),  # type: ignore[call-overload]
                    f"recorded in {os.path.join(dest, LOCK_FILE)} on {entry.get('recorded', '?')}")


def _record_in_lock(dest: str, name: str, url: str, size: int, digest: str, log: Log) -> None:
    files = read_lock(dest)
    files[name] = {"size": size, "sha256": digest, "url": url,
                   "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    lock = os.path.join(dest, LOCK_FILE)
    _write_json(lock, {"files": files})
    log(f"{name}: no published checksum; size and sha256 recorded in {lock}: later downloads into {dest} are "
        "checked against them")


def _reason(error: BaseException | None) -> str:
    """A one-line reason for a network error ("[Errno 111] Connection refused", "HTTP 503 ...")."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return _reason(error.reason) if isinstance(error.reason, BaseException) else str(error.reason)
    return (str(error) or type(error).__name__) if error is not None else "no error recorded"


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header "bytes A-B/T" or "bytes */T"."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    first = int(span.split("-")[0]) if span[:1].isdigit() else None
    return first, int(total) if total.isdigit() else None


def _local(action: Callable, path: str, *args):
    """Run a file operation; its OSError is a local problem (disk full, permissions), never retried."""
    try:
        return action(*args)
    except OSError as e:
        raise DownloadError(f"cannot write {path}: {e}") from None


@dataclass(frozen=True)
class Validator:
    """The version of a file a ``.part`` holds, as the server described it when the transfer started.

    url: where it came from; etag / last_modified: the server's ``ETag`` and ``Last-Modified`` (None if
    not sent); size: the whole file's size in bytes (None if not sent)."""

    url: str
    etag: str | None
    last_modified: str | None
    size: int | None


def _validator_path(part: str) -> str:
    return part + ".json"


def write_part_validator(part: str, validator: Validator) -> None:
    """Store ``validator`` beside ``part`` (``<part>.json``), atomically."""
    _write_json(_validator_path(part), asdict(validator))


def read_part_validator(part: str) -> tuple[Validator | None, str]:
    """(the validator stored beside ``part``, "") or (None, why there is none usable)."""
    path = _validator_path(part)
    if not os.path.exists(path):
        return None, "there is no record of the version it holds"
    try:
        with open(path, encoding="utf-8") as f:
            validator = Validator(**json.load(f))
    except (OSError, ValueError, TypeError) as e:
        return None, f"its record {path} is unreadable ({e})"
    if validator.etag is None and validator.last_modified is None:
        return None, "the server gave no ETag or Last-Modified to tell its version by"
    return validator, ""


def _discard_part(part: str) -> None:
    for path in (part, _validator_path(part)):
        if os.path.exists(path):
            _local(os.remove, path, path)


def _version_change(stored: Validator, headers: Mapping[str, str], total: int | None) -> str | None:
    """Why the answer ``headers`` (whole size ``total``) may be another version than ``stored``; None if
    the server confirms the same one (a matching ETag, else a matching Last-Modified, and the size)."""
    etag, modified = headers.get("ETag"), headers.get("Last-Modified")
    if stored.size is not None and total is not None and total != stored.size:
        return f"its size changed ({stored.size} -> {total} bytes)"
    if stored.etag is not None and etag is not None:
        return None if etag == stored.etag else f"its ETag changed ({stored.etag} -> {etag})"
    if stored.last_modified is not None and modified is not None:
        return None if modified == stored.last_modified else \
            f"its Last-Modified changed ({stored.last_modified} -> {modified})"
    return "the server did not confirm its version (no ETag or Last-Modified in the answer)"


def _fetch_once(url: str, part: str, timeout: float, log: Log) -> None:
    """One request continuing ``part`` to the end of the file; raises on network errors and short bodies.

    A part is continued only when its stored validator says it holds the version the server has now
    (If-Range, then the answer's own validators); otherwise it is started over from byte 0."""
    name = os.path.basename(part)
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    stored = None
    if offset:
        stored, why = read_part_validator(part)
        if stored is not None and stored.url != url:
            stored, why = None, f"it was started from {stored.url}"
        elif stored is not None and stored.size is not None and offset > stored.size:
            stored, why = None, f"it is larger ({offset} bytes) than the file ({stored.size} bytes)"
        if stored is None:
            log(f"{name}: not resuming, {why}; starting over")
            _discard_part(part)
            offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset and stored is not None:
        headers["Range"] = f"bytes={offset}-"
        # RFC 9110 If-Range: the rest of THIS version, or the whole current file (200) if it changed
        headers["If-Range"] = stored.etag or stored.last_modified or ""
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset and stored is not None:  # Range past the end: the part may be whole
            _, total = _content_range(e.headers.get("Content-Range"))
            change = _version_change(stored, e.headers, total)
            if change is not None and not e.headers.get("ETag") and not e.headers.get("Last-Modified") \
                    and total == stored.size:
                change = None  # a bare 416 names only the size; the sha256 check after the download decides
            e.close()
            if total == offset and change is None:
                return
            log(f"{name}: the server rejected resuming at byte {offset}"
                + (f" ({change})" if change else "") + "; starting over")
            _discard_part(part)
            return _fetch_once(url, part, timeout, log)  # offset 0 now: no Range, no 416
        raise
    with response:
        first, total = _content_range(response.headers.get("Content-Range"))
        if offset and response.status == 206 and first == offset:
            assert stored is not None
            change = _version_change(stored, response.headers, total)
            if change is not None:  # a server that ignored If-Range: its answer's validators tell
                log(f"{url}: {change} since {name} was started; starting over")
                response.close()
                _discard_part(part)
                return _fetch_once(url, part, timeout, log)
            mode = "ab"
            log(f"resuming {url} at byte {offset}")
        else:
            if offset:
                log(f"{url}: the server sends the whole file (HTTP {response.status}); starting over")
            mode, offset = "wb", 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            write_part_validator(part, Validator(url, response.headers.get("ETag"),
                                                 response.headers.get("Last-Modified"), total))
        received = offset
        step = max(total // 10, 64 * CHUNK) if total else None  # progress every 10% of a large file
        next_report = (received // step + 1) * step if step else None
        with _local(open, part, part, mode) as f:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                _local(f.write, part, block)
                received += len(block)
                if next_report is not None and received >= next_report:
                    log(f"  {received >> 20} / {total >> 20} MiB")
                    next_report += step
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)


def download_file(url: str, path: str, expected: Checksum | None = None, *, retries: int = 3, backoff: float = 1.0,
                  timeout: float = 60.0, log: Log = _stderr, then: str = "") -> str:
    """Download ``url`` to ``path`` (resuming ``path + ".part"``), check it, return its sha256.

    An existing ``path`` is not downloaded again, only checked. Network errors are retried
    ``retries`` times, sleeping ``backoff * 2**(attempt - 1)`` seconds before each retry. Raises
    DownloadError (the host cannot be reached, an HTTP error, retries exhausted; the message ends
    with "download URL manually to PATH" + ``then``) or ChecksumError (the file is then renamed
    ``path + ".corrupt"``).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + ".part"
    manually = f"download {url} manually to {path}{then}"
    if os.path.exists(path):
        log(f"{path} is already downloaded")
    else:
        host = urllib.parse.urlsplit(url).netloc or url
        log(f"downloading {url} -> {path}")
        last: BaseException | None = None
        connected = False
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(url, part, timeout, log)
                break
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code != 429:
                    raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; {manually}") from None
                connected, last = True, e
            except urllib.error.URLError as e:
                last = e
            except (http.client.HTTPException, OSError) as e:  # reset / timeout / short body mid-transfer
                connected, last = True, e
            log(f"attempt {attempt + 1}/{retries + 1} failed: {_reason(last)}")
        else:
            if not connected:
                raise UnreachableError(f"cannot reach {host}: {_reason(last)}; {manually}", host, _reason(last))
            kept = f"; the partial file {part} is kept, run again to resume" if os.path.exists(part) else ""
            raise DownloadError(f"downloading {url} failed after {retries + 1} attempts ({_reason(last)}){kept}; "
                                f"or {manually}")
        os.replace(part, path)
        _discard_part(part)  # its validator
    return verify_file(path, expected, log=log)


def verify_file(path: str, expected: Checksum | None, log: Log = _stderr) -> str:
    """Check ``path`` against ``expected`` and return its sha256; a mismatch renames it ``.corrupt``."""
    size, digest = os.path.getsize(path), sha256_file(path)
    name = os.path.basename(path)
    problems = []
    if expected is not None and expected.size is not None and size != expected.size:
        problems.append(f"size {size} bytes, expected {expected.size}")
    if expected is not None and expected.sha256 is not None and digest != expected.sha256.lower():
        problems.append(f"sha256 {digest}, expected {expected.sha256.lower()}")
    if problems and expected is not None and expected.origin:
        problems.append(expected.origin)
    if problems:
        os.replace(path, path + ".corrupt")
        raise ChecksumError(f"{path}: corrupt download ({'; '.join(problems)}); moved to {path}.corrupt and not "
                            f"extracted; run again to download it afresh")
    if expected is None or expected.sha256 is None:
        log(f"{name}: sha256 {digest} ({size} bytes); no recorded checksum (add it to CHECKSUMS to verify)")
    else:
        log(f"{name}: sha256 verified" + (f" ({expected.origin})" if expected.origin else ""))
    return digest


def _safe_members(tar: tarfile.TarFile, archive: str) -> list[tarfile.TarInfo]:
    """Members that stay inside the extraction folder; anything else is an error, not skipped."""
    members = tar.getmembers()
    for m in members:
        parts = m.name.replace("\\", "/").split("/")
        if m.name.startswith(("/", "\\")) or ".." in parts:
            raise DownloadError(f"{archive}: refusing to extract {m.name!r} (outside the destination)")
        if m.issym() or m.islnk():
            target = os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname) if m.issym() else m.linkname)
            if os.path.isabs(m.linkname) or target.startswith(".."):
                raise DownloadError(f"{archive}: refusing to extract link {m.name!r} -> {m.linkname!r}")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise DownloadError(f"{archive}: refusing to extract special file {m.name!r}")
    return members


def _find(root: str, name: str, depth: int = 3) -> str | None:
    """The first ``name`` (breadth first, sorted) at most ``depth`` levels below ``root``."""
    level = [root]
    for _ in range(depth):
        nxt = []
        for folder in level:
            entries = sorted(os.listdir(folder))
            if name in entries:
                return os.path.join(folder, name)
            nxt.extend(os.path.join(folder, e) for e in entries if os.path.isdir(os.path.join(folder, e)))
        level = nxt
    return None


def _has_files(folder: str) -> bool:
    return any(files for _, _, files in os.walk(folder))


def extract_archive(archive: str, dest: str, layout: Sequence[str], log: Log = _stderr) -> list[str]:
    """Extract ``archive`` and place its ``layout`` entries under ``dest``; returns the paths placed."""
    staging = os.path.join(os.path.dirname(os.path.abspath(archive)), os.path.basename(archive) + ".staging")
    if os.path.exists(staging):  # left by an interrupted run of ours
        shutil.rmtree(staging)
    os.makedirs(staging)
    log(f"extracting {archive}")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _safe_members(tar, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: members were checked above
                tar.extractall(staging, members=members)
    except (tarfile.TarError, EOFError) as e:
        shutil.rmtree(staging)
        raise DownloadError(f"{archive}: cannot extract ({e}); delete it and run again") from None
    placed = []
    for name in layout:
        found = _find(staging, name)
        target = os.path.join(dest, name)
        if found is None:
            log(f"{os.path.basename(archive)} has no {name!r}")
        elif os.path.exists(target):
            log(f"kept the existing {target} (delete it to take the one from {os.path.basename(archive)})")
        else:
            os.replace(found, target)
            placed.append(target)
    for entry in sorted(os.listdir(staging)):  # whatever the layout did not name, as it is
        source, target = os.path.join(staging, entry), os.path.join(dest, entry)
        if os.path.isdir(source) and not _has_files(source):
            continue
        if os.path.exists(target):
            log(f"not moving {entry!r} from {os.path.basename(archive)}: {target} exists (left in {staging})")
            continue
        os.replace(source, target)
        placed.append(target)
        log(f"{os.path.basename(archive)}: also extracted {target}")
    if not any(files for _, _, files in os.walk(staging)):
        shutil.rmtree(staging)
    return placed


def install(names: Sequence[str], dest: str = "data", *, base_url: str | None = None,
            checksums: Mapping[str, Checksum | None] = CHECKSUMS, keep_archives: bool = False, retries: int = 3,
            backoff: float = 1.0, timeout: float = 60.0, log: Log = _stderr) -> None:
    """Download and install the artifacts ``names`` (file names of ARTIFACTS) under ``dest``.

    base_url: fetch every file from ``base_url + filename`` instead of its published location.
    A failed file does not stop the others (a host found unreachable is not tried again). At the
    end a single failure is raised as it is; several as one DownloadError, one line each.
    """
    if base_url is not None and urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        raise DownloadError(f"--base_url must be an http:// or https:// URL, got {base_url!r}")
    os.makedirs(dest, exist_ok=True)
    lock = read_lock(dest)
    options = {"retries": retries, "backoff": backoff, "timeout": timeout, "log": log}
    failures: list[DownloadError] = []
    unreachable: dict[str, str] = {}
    for name in names:
        artifact = ARTIFACTS[name]
        url = urllib.parse.urljoin(base_url.rstrip("/") + "/" if base_url else artifact.base_url, name)
        host = urllib.parse.urlsplit(url).netloc
        target = os.path.join(dest, name) if not artifact.is_archive else os.path.join(dest, ".downloads", name)
        if host in unreachable:
            then = " and run this command again" if artifact.is_archive else ""
            failures.append(UnreachableError(
                f"cannot reach {host}: {unreachable[host]}; download {url} manually to {target}{then}",
                host, unreachable[host]))
            continue
        expected = checksums.get(name)
        if expected is None and name in lock:
            expected = _lock_checksum(dest, lock[name])
        try:
            _install_one(artifact, url, target, dest, expected, name in lock, keep_archives, options)
        except UnreachableError as e:
            unreachable[e.host] = e.reason
            failures.append(e)
        except DownloadError as e:
            failures.append(e)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise DownloadError("\n".join(str(e) for e in failures))


def _install_one(artifact: Artifact, url: str, target: str, dest: str, expected: Checksum | None,
                 locked: bool, keep_archives: bool, options: dict) -> None:
    log = options["log"]
    if not artifact.is_archive:
        digest = download_file(url, target, expected, **options)
        if not locked:
            _record_in_lock(dest, artifact.filename, url, os.path.getsize(target), digest, log)
        return
    marker = target + ".installed"
    if os.path.exists(marker):
        log(f"{artifact.filename} is already installed (delete {marker} to install it again)")
        return
    digest = download_file(url, target, expected, then=" and run this command again", **options)
    if not locked:  # recorded before extraction: the archive is deleted afterwards
        _record_in_lock(dest, artifact.filename, url, os.path.getsize(target), digest, log)
    placed = extract_archive(target, dest, artifact.layout, log=log)
    with open(marker, "w", encoding="utf-8") as f:
        f.write(f"sha256 {digest}\n" + "".join(f"{p}\n" for p in placed))
    if not keep_archives:
        os.remove(target)
    log(f"{artifact.filename}: installed into {dest}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m paddlemix_r1.data.download",
                                     description="Download the R1-MLLM training and test data into data/.")
    parser.add_argument("groups", nargs="+", choices=sorted(GROUPS), help="what to download")
    parser.add_argument("--dest", default="data", help="data folder (default: data)")
    parser.add_argument("--base_url", default=None, help="fetch every file from BASE_URL/<file name> (a mirror)")
    parser.add_argument("--keep_archives", action="store_true", help="keep the tarballs after extraction")
    parser.add_argument("--retries", type=int, default=3, help="retries per file on network errors (default: 3)")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds (default: 60)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(dict.fromkeys(name for group in args.groups for name in GROUPS[group]))
    try:
        install(names, args.dest, base_url=args.base_url, keep_archives=args.keep_archives, retries=args.retries,
                backoff=args.backoff, timeout=args.timeout)
    except DownloadError as e:
        for line in str(e).splitlines():
            _stderr(f"error: {line}")
        return 1
    except KeyboardInterrupt:
        _stderr("interrupted; run the same command again to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
