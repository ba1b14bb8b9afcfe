"""Readers: every supported file format comes out in one row format, for training AND evaluation.

This is the one reader per file format: ``read_training_files`` (training) and the evaluation
readers (``paddlemix_r1.eval.data``, through ``read_row_results``) parse files with this code.

A row (the same as ``synthetic``'s; ``paddlemix_r1.tasks.rows`` documents it)::

    id                  str, "<file stem>/<row id or 0-based index>"
    images              list of image file paths (str), in the order the prompt shows them
    problem             the raw question: no answer-format template, no "<image>" placeholders
    solution            the gold answer as the row's task parses it (``Task.parse_solution``): int
                        (counting) | [x1, y1, x2, y2] floats in ORIGINAL pixels (rec) | str without
                        <answer> tags (geoqa, general)
    task                the row's own ``task`` field if it has one (so one file can mix tasks), else
                        the ``task`` argument; an unknown name is an error naming the row
    accu_reward_method  the row's own field if set, else its file's ``reward_methods`` entry, else
                        "default" (VLM-R1's semantics); the ``accuracy`` reward dispatches on it
    ...                 every other field of the source row ("normal_caption", "thinking", ...), passed to
                        the reward functions as columns. All rows returned by one call have the same keys; a
                        field some sources lack is None in their rows.

Formats, told apart by content where the extension is ambiguous (``detect_format``):

``yaml``    a data config listing files, as PaddleMIX / VLM-R1 (``datasets:``) and Curr-ReFT
            (``train_datasets:`` and ``val_datasets:``) write it::

                train_datasets:                        # or datasets: (not both)
                  - json_path: data/rec_jsons_processed/refcoco_train.json
                    sampling_strategy: first:1000      # all | first:N | end:N | random:N; N may be P%
                    image_root: data/coco              # optional, overrides the image_root argument
                val_datasets:                          # read by read_val_datasets (per-stage evaluation)
                  - json_path: data/judge_math_val.jsonl

            Relative ``json_path`` are resolved against the working directory (as PaddleMIX's scripts
            do), then against the YAML file's directory. Sampling is applied to every row of that
            entry (bad ones included, before they are dropped or raised), as their loaders do:
            ``P%`` is ceil(P * rows / 100); ``random`` shuffles and keeps the first N, with ONE
            ``random.Random(seed)`` per config whose stream runs through the train entries, then the
            val entries (their loaders: ``random.shuffle`` on the global generator, train before val;
            theirs is unseeded, ours is ``random.seed(seed)`` once before the train entries).
``json``    a JSON list of row objects (e.g. rec_jsons_processed: ``image``, ``problem``,
            ``solution``, ``normal_caption``); a ``.json`` file that starts with ``{`` is read as JSONL.
``jsonl``   one row object per line.
``parquet`` / ``arrow``   HF-datasets shards (R1-V's clevr_cogen_a_train, GEOQA_R1V_Train_8K):
            ``image`` (or ``images``) as {"bytes", "path"} structs, ``problem``, ``solution``
            ("<answer> 3 </answer>"). Read with pyarrow. An image given as a path instead of bytes is
            relative to the image root, or to the shard's folder when the root is empty.
``hf_dir``  a directory (a ``huggingface-cli download --local-dir`` or ``save_to_disk`` folder):
            its ``*.parquet`` shards, or ``*.arrow`` shards if it has none; when file names or
            folders mark splits, only the train split.

The fields of a json / jsonl row decide how it is read (the first row decides for the whole file):
``conversations`` -> VLM-R1 (``image``: one path or a list, relative to the file's image folder;
problem = the first human turn without "<image>", solution = the first gpt turn);
``question`` / ``ground_truth`` / ``image_path`` -> R1-V test prompts (SuperCLEVR, GeoQA);
otherwise ``image`` (one path or a list), ``problem``, ``solution``.

Several files and image folders may be given in one string separated by ':' (VLM-R1's
``--data_file_paths a.jsonl:b.jsonl --image_folders A:B``). One image root serves every file;
otherwise there must be one per file, paired in order. Image roots are ignored for images stored
inside parquet / arrow shards. ``reward_methods`` (VLM-R1's ``--reward_method a:b``) gives exactly
one accuracy method per file; a data-config YAML counts as one file (its entries share the method).

Images. Rows hold image PATHS, opened when a batch is built (``load_image``: EXIF orientation
applied, RGB) -- the training sets hold tens of thousands of images, too many to keep decoded.
At read time every distinct image is checked for what the image processor will need
(``check_images``, default True): it is decoded completely as a batch would load it (missing files,
non-images, truncated PNG / JPEG data, decompression bombs) and its size must be one
``processing.image_processor.smart_resize`` takes (``image_size_problem``: aspect ratio at most 200,
no empty side). Decoding costs about 5-10 ms per distinct 640x480 image on one core (a COCO-sized
set of 30k images: a few minutes). ``check_images="open"`` reads only the header (the size rule still
applies; truncated data is NOT caught) for sets too large to decode up front; False (or "none") checks nothing:
evaluation, which makes the same checks when it loads each image and records a failure as that
row's error. Images stored inside parquet / arrow shards are written once, byte for byte, to
``cache_dir`` (default ``$PADDLEMIX_R1_CACHE/images`` or ``~/.cache/paddlemix_r1/images``; one folder
per shard, keyed by its path, size and mtime) and the rows point at those files.

Text. JSON, JSONL and YAML files must be UTF-8 (a BOM is allowed). Each JSONL line is decoded on its
own, so a line with a byte that is not UTF-8 is one bad row; in a JSON list the element holding it
is (outside every string, the list cannot be read on and the file fails at that line).

Errors. A bad row -- a missing or malformed field, a gold answer its task cannot score
(``Task.check_gold``: a NaN or inverted box, a negative count, ...), a missing, undecodable or
unprocessable image, invalid JSON or non-UTF-8 bytes on a line -- raises ``DatasetError`` whose
message starts with ``<file>:<line>`` (JSON / JSONL) or ``<file>:row <N>`` (parquet / arrow, N
0-based as in ``dataset[N]``). With ``skip_bad=True`` such rows are left out instead;
``TrainingRows.skipped`` lists one message per row left out (the trainer prints their number) and
a warning is logged. A file that cannot be read at all, or nothing left to train on, always raises.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from paddlemix_r1.processing.image_processor import load_image, smart_resize
from paddlemix_r1.tasks import Task, get_task, row_accuracy_method, row_task

logger = logging.getLogger(__name__)

CORE_KEYS = ("id", "images", "problem", "solution", "task", "accu_reward_method")
CHECK_IMAGES = (True, False, "decode", "open", "none")
"""Values of ``check_images``: True (= "decode", the default), "open" (header only), False (= "none")."""
IMAGE_PLACEHOLDER = "<image>"


class DatasetError(ValueError):
    """A malformed data file or row; the message starts with ``<file>:<line>`` or ``<file>:row <N>``."""


class BadGoldError(DatasetError):
    """A well-formed row whose gold answer its task cannot score (``Task.check_gold``).

    ``row`` is the row in the reader format with ``solution`` as the file gives it: evaluation keeps
    such a row in place and counts it as an error (``read_row_results``), training drops or raises it."""

    def __init__(self, message: str, row: dict):
        super().__init__(message)
        self.row = row


class TrainingRows(list):
    """The rows read (a plain list of row dicts) and ``skipped``: one "<where>: <reason>" per row left out."""

    def __init__(self, rows: Iterable[dict] = (), skipped: Iterable[str] = ()):
        super().__init__(rows)
        self.skipped: list[str] = list(skipped)


# ----- small shared pieces (the eval readers can use them too) --------------------------------


def join_image(image_root: str, relative: str) -> str:
    """``image_root`` joined with a row's image path; "./x.png" and "x.png" give the same path."""
    return os.path.normpath(os.path.join(image_root, relative))


def split_paths(values: str | Sequence[str]) -> list[str]:
    """Paths from a string or a list of strings, each possibly ':'-separated (VLM-R1's flags)."""
    items = [values] if isinstance(values, str) else list(values)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"paths must be strings, got {item!r}")
        out.extend(item.split(":"))
    return out


def _not_utf8(path: str, data: bytes, error: UnicodeDecodeError, first_line: int = 1) -> DatasetError:
    """The error for ``data`` (a file, or one line of it numbered ``first_line``) failing to decode."""
    line_start = data.rfind(b"\n", 0, error.start) + 1
    line = first_line + data.count(b"\n", 0, error.start)
    return DatasetError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at column "
                        f"{error.start - line_start + 1}); re-encode the file as UTF-8")


def read_text(path: str) -> str:
    """The whole of a UTF-8 text file (BOM dropped); DatasetError naming ``<file>:<line>`` otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None


# Bytes that are not UTF-8 become lone surrogates U+DC80..U+DCFF under "surrogateescape"; UTF-8 text
# cannot hold those, so their presence marks exactly the elements that had such bytes.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def iter_json_list(text: str, path: str) -> Iterator[tuple[int, Any]]:
    """(line, element) for each element of a top-level JSON list; line = where the element starts.

    ``json.loads`` parses the same text but forgets the lines the error messages need. ``text``
    decoded with ``errors="surrogateescape"`` (``read_json_list``) may hold bytes that are not UTF-8:
    an element containing one is yielded as a DatasetError (so ``skip_bad`` can leave it out); one
    outside every element raises.
    """
    decoder = json.JSONDecoder()
    n = len(text)

    def skip_ws(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    def line_of(p: int) -> int:
        return text.count("\n", 0, p) + 1

    pos = skip_ws(0)
    if pos >= n or text[pos] != "[":
        raise DatasetError(f"{path}:{line_of(pos)}: expected a JSON list of rows")
    pos = skip_ws(pos + 1)
    if pos < n and text[pos] == "]":
        if skip_ws(pos + 1) != n:
            raise DatasetError(f"{path}:{line_of(skip_ws(pos + 1))}: unexpected content after the JSON list")
        return
    line, counted = 1, 0
    escaped = _ESCAPED_BYTE.search(text, pos)
    while True:
        if escaped is not None and escaped.start() < pos:  # searched again only past it: linear overall
            escaped = _ESCAPED_BYTE.search(text, pos)
        try:
            element, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            if escaped is not None and escaped.start() <= e.pos:
                raise _escaped_error(path, text, escaped.start()) from None
            raise DatasetError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        line += text.count("\n", counted, pos)  # counted incrementally: files have ~10^5 rows
        counted = pos
        if escaped is not None and escaped.start() < end:
            yield line, _escaped_error(path, text, escaped.start())
        else:
            yield line, element
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            if skip_ws(pos + 1) != n:
                raise DatasetError(f"{path}:{line_of(skip_ws(pos + 1))}: unexpected content after the JSON list")
            return
        raise DatasetError(f"{path}:{line_of(pos)}: expected ',' or ']' in the JSON list")


def _escaped_error(path: str, text: str, pos: int) -> DatasetError:
    """The error for the byte that is not UTF-8 at ``pos`` of a surrogateescape-decoded ``text``."""
    line_start = text.rfind("\n", 0, pos) + 1
    byte = ord(text[pos]) - 0xDC00
    return DatasetError(f"{path}:{text.count(chr(10), 0, pos) + 1}: not UTF-8 text (byte 0x{byte:02x} at column "
                        f"{pos - line_start + 1}); re-encode the file as UTF-8")


def read_json_list(path: str) -> Iterator[tuple[int, Any]]:
    """``iter_json_list`` of a file: its elements, one holding bytes that are not UTF-8 as a DatasetError."""
    with open(path, "rb") as f:
        data = f.read()
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    return iter_json_list(text, path)


def iter_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    """(line, parsed value or DatasetError) for each non-blank line of a JSON Lines file.

    Each line is decoded on its own: a line that is not UTF-8 or not valid JSON is yielded as a
    DatasetError (not raised), so that a caller that skips bad rows can go on with the next line.
    """
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, _not_utf8(path, raw, e, line_no)
                continue
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, DatasetError(f"{path}:{line_no}: invalid JSON: {e.msg}")


def load_row_images(row: Mapping[str, Any]) -> list[Image.Image]:
    """The row's images decoded as training sees them: EXIF orientation applied, RGB."""
    return [load_image(image) for image in row["images"]]


# ----- format detection -------------------------------------------------------------------------

_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"


def detect_format(path: str) -> str:
    """One of "yaml", "hf_dir", "parquet", "arrow", "json", "jsonl" (see the module docstring)."""
    if os.path.isdir(path):
        return "hf_dir"
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: data file not found")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        return "yaml"
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_ARROW_FILE_MAGIC) or (ext == ".arrow" and head.startswith(_ARROW_STREAM_MAGIC)):
        return "arrow"
    first = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")[:1]
    if first == "[":
        return "json"
    if first == "{":
        return "jsonl"
    if ext in (".parquet", ".arrow"):
        raise DatasetError(f"{path}: not a {ext[1:]} file (its first bytes are {head[:8]!r})")
    if not head.strip():
        raise DatasetError(f"{path}:1: empty data file")
    raise DatasetError(
        f"{path}: unsupported data file (expected a yaml data config, JSON list, JSONL, parquet or arrow "
        f"file, or a dataset directory)"
    )


# ----- row conversion ---------------------------------------------------------------------------


def _solution(value: Any, task: Task, where: str, field: str) -> Any:
    """The gold in ``task``'s canonical form, checked (``Task.check_gold``); ValueError / TypeError naming it."""
    where = f"{where}: field {field!r}"
    solution = task.parse_solution(value, where=where)
    task.check_gold(solution, where=where)
    return solution


def _require(row: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in row or row[key] is None:
        raise DatasetError(f"{where}: missing field {key!r} (fields: {sorted(row)})")
    return row[key]


def _require_text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = _require(row, key, where)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _image_list(value: Any, where: str, key: str) -> list[Any]:
    """One image reference or a non-empty list of them."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DatasetError(f"{where}: field {key!r} is an empty list")
    return values


def _relative_paths(value: Any, where: str, key: str) -> list[str]:
    paths = _image_list(value, where, key)
    for p in paths:
        if not isinstance(p, str) or not p.strip():
            raise DatasetError(f"{where}: field {key!r} must be a path or a list of paths, got {value!r}")
    return paths


def _extras(row: Mapping[str, Any], used: Iterable[str]) -> dict[str, Any]:
    drop = set(used) | set(CORE_KEYS)
    return {k: v for k, v in row.items() if k not in drop}


def _row_id(stem: str, row: Mapping[str, Any], index: int) -> str:
    rid = row.get("id")
    return f"{stem}/{rid}" if isinstance(rid, (str, int)) and not isinstance(rid, bool) else f"{stem}/{index}"


# A converter reads one source row: (relative image paths, problem, raw gold answer, the field the gold
# answer came from, extra fields). The gold answer is parsed afterwards by the row's task.
Converted = tuple[list[str], str, Any, str, dict]


def _from_problem_row(row: Mapping, where: str) -> Converted:
    images = _relative_paths(_require(row, "image", where), where, "image")
    problem = _require_text(row, "problem", where)
    solution = _require(row, "solution", where)
    return images, problem, solution, "solution", _extras(row, ("image", "problem", "solution"))


def _from_conversation_row(row: Mapping, where: str) -> Converted:
    images = _relative_paths(_require(row, "image", where), where, "image")
    turns = _require(row, "conversations", where)
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise DatasetError(f"{where}: field 'conversations' must be a list of {{'from', 'value'}} objects")
    human = [t for t in turns if t.get("from") == "human"]
    gpt = [t for t in turns if t.get("from") == "gpt"]
    if not human or not gpt:
        raise DatasetError(f"{where}: field 'conversations' needs a 'human' and a 'gpt' turn, got {turns!r}")
    question = human[0].get("value")
    if not isinstance(question, str):
        raise DatasetError(f"{where}: the first human turn's 'value' must be a string, got {question!r}")
    placeholders = question.count(IMAGE_PLACEHOLDER)
    if placeholders and placeholders != len(images):
        raise DatasetError(f"{where}: the question has {placeholders} {IMAGE_PLACEHOLDER} placeholders "
                           f"for {len(images)} images")
    problem = question.replace(IMAGE_PLACEHOLDER, "").strip()
    if not problem:
        raise DatasetError(f"{where}: the first human turn has no question text")
    answer = gpt[0].get("value")
    if answer is None:
        raise DatasetError(f"{where}: the first gpt turn has no 'value'")
    return images, problem, answer, "conversations[gpt].value", _extras(row, ("image", "conversations"))


def _from_test_row(row: Mapping, where: str) -> Converted:
    images = _relative_paths(_require(row, "image_path", where), where, "image_path")
    problem = _require_text(row, "question", where)
    solution = _require(row, "ground_truth", where)
    return images, problem, solution, "ground_truth", _extras(row, ("image_path", "question", "ground_truth"))


def _finish_row(obj: Mapping[str, Any], where: str, row_id: str, images: list[str], problem: str, raw: Any,
                field: str, extras: dict, default_task: str, reward_method: str | None) -> dict:
    """The row in the reader format: its task resolved (own ``task`` field, else the default), the gold
    answer parsed by that task, its accuracy method set (own, else the file's, else "default")."""
    try:
        task = row_task(obj, default_task, where)
        method = row_accuracy_method(obj, reward_method, where)
        task.check_fields(extras, where)
    except ValueError as e:
        raise DatasetError(str(e)) from None
    row = {"id": row_id, "images": images, "problem": problem, "solution": raw, "task": task.name,
           **extras, "accu_reward_method": method}
    try:
        row["solution"] = _solution(raw, task, where, field)
    except (TypeError, ValueError) as e:
        raise BadGoldError(str(e), row) from None
    return row


def _row_schema(row: Any) -> Callable[[Mapping, str], Converted]:
    if isinstance(row, dict):
        if "conversations" in row:
            return _from_conversation_row
        if {"question", "ground_truth", "image_path"} & set(row) and "problem" not in row:
            return _from_test_row
    return _from_problem_row


# ----- image checks -----------------------------------------------------------------------------


def image_size_problem(width: int, height: int) -> str | None:
    """Why the image processor cannot take an image of ``width x height`` (None if it can).

    ``smart_resize`` decides, so the rule is the processor's own (an aspect ratio above 200 is refused;
    any side of at least one pixel is resized up to the 28-pixel grid); the pixel limits do not change
    the answer, so the defaults stand in for every run's."""
    if width < 1 or height < 1:
        return f"image is {width}x{height}: a side is empty"
    try:
        smart_resize(height, width)
    except ValueError as e:
        return f"image is {width}x{height}, the image processor refuses it: {e}"
    return None


# What PIL raises for missing, truncated or undecodable data (UnidentifiedImageError is an OSError;
# some plugins raise SyntaxError / EOFError on corrupt headers).
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)


def _check_mode(check_images: bool | str) -> str:
    if isinstance(check_images, bool):
        return "decode" if check_images else "none"
    if not isinstance(check_images, str) or check_images not in CHECK_IMAGES:
        raise ValueError(f"check_images must be True, False, 'decode', 'open' or 'none', got {check_images!r}")
    return check_images


class _ImageChecker:
    """Checks each distinct image file once (REC sets point many rows at one COCO image)."""

    def __init__(self, check_images: bool | str):
        self.mode = _check_mode(check_images)
        self._seen: dict[str, str | None] = {}

    def check_path(self, path: str) -> str | None:
        """None if the image is usable, else the reason it is not."""
        if path not in self._seen:
            self._seen[path] = self._check(path)
        return self._seen[path]

    def _check(self, path: str) -> str | None:
        if self.mode == "none":
            return None
        if not os.path.isfile(path):
            return f"image file not found: {path}"
        try:
            return self._usable(path)
        except _DECODE_ERRORS as e:
            return f"cannot decode image {path}: {e}"

    def _usable(self, source: str | Image.Image) -> str | None:
        """Decode (``decode``: as a batch loads it) or read the header of ``source``; the size problem or None."""
        if self.mode == "decode":
            width, height = load_image(source).size
        else:
            with Image.open(source) if isinstance(source, str) else source as im:  # header: format and size
                width, height = im.size
        return image_size_problem(width, height)

    def check_bytes(self, data: bytes) -> str | None:
        if self.mode == "none":
            return None
        try:
            with Image.open(io.BytesIO(data)) as im:
                return self._usable(im)
        except _DECODE_ERRORS as e:
            return f"cannot decode the image bytes: {e}"


# ----- readers per format -----------------------------------------------------------------------

# A reader yields, per row, ("<file>:<line>" or "<file>:row <N>", the finished row dict or a DatasetError).
RowResult = dict | DatasetError


def _read_json_rows(path: str, kind: str, root: str, task: str, reward_method: str | None,
                    checker: _ImageChecker) -> Iterator[tuple[str, RowResult]]:
    stem = Path(path).stem
    if kind == "json":
        records: Iterable[tuple[int, Any]] = list(read_json_list(path))
    else:
        records = iter_jsonl(path)
    convert = None
    for index, (line, obj) in enumerate(records):
        where = f"{path}:{line}"
        if isinstance(obj, DatasetError):
            yield where, obj
            continue
        if not isinstance(obj, dict):
            yield where, DatasetError(f"{where}: row must be a JSON object, got {type(obj).__name__}")
            continue
        convert = convert or _row_schema(obj)
        try:
            rel_images, problem, raw, field, extras = convert(obj, where)
            images = [join_image(root, p) for p in rel_images]
            bad = next((r for r in map(checker.check_path, images) if r is not None), None)
            if bad is not None:
                key = "image_path" if convert is _from_test_row else "image"
                raise DatasetError(f"{where}: field {key!r}: {bad}")
            yield where, _finish_row(obj, where, _row_id(stem, obj, index), images, problem, raw, field, extras,
                                     task, reward_method)
        except DatasetError as e:
            yield where, e


def _default_cache_dir() -> str:
    base = os.environ.get("PADDLEMIX_R1_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "paddlemix_r1")
    return os.path.join(base, "images")


def _shard_cache_dir(path: str, cache_dir: str) -> str:
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{Path(path).stem}-{key}")


_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


def _write_image_bytes(data: bytes, folder: str, name: str) -> str:
    """Write ``data`` to ``folder/name.<ext>`` unless an identical-size file is there (atomic)."""
    with Image.open(io.BytesIO(data)) as im:
        ext = _EXTENSIONS.get(im.format or "", ".img")
    target = os.path.join(folder, name + ext)
    if os.path.isfile(target) and os.path.getsize(target) == len(data):
        return target
    os.makedirs(folder, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, target)
    return target


def _iter_table_rows(path: str, kind: str) -> Iterator[dict]:
    """Row dicts of a parquet file or an arrow (IPC file or stream) shard, batch by batch."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DatasetError(f"{path}: reading {kind} files needs pyarrow (pip install pyarrow)") from e
    try:
        if kind == "parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
                yield from batch.to_pylist()
            return
        with pa.memory_map(path) as source:
            magic = source.read(6)
            source.seek(0)
            reader = pa.ipc.open_file(source) if magic == _ARROW_FILE_MAGIC else pa.ipc.open_stream(source)
            if isinstance(reader, pa.ipc.RecordBatchFileReader):
                for i in range(reader.num_record_batches):
                    yield from reader.get_batch(i).to_pylist()
            else:
                for batch in reader:
                    yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: cannot read the {kind} file: {e}") from None


def _read_table_rows(path: str, kind: str, root: str, task: str, reward_method: str | None,
                     checker: _ImageChecker, cache_dir: str) -> Iterator[tuple[str, RowResult]]:
    stem = Path(path).stem
    folder = _shard_cache_dir(path, cache_dir)
    for index, obj in enumerate(_iter_table_rows(path, kind)):
        where = f"{path}:row {index}"
        key = "images" if obj.get("images") is not None else "image"
        try:
            refs = _image_list(_require(obj, key, where), where, key)
            problem = _require_text(obj, "problem", where)
            raw = _require(obj, "solution", where)
        except DatasetError as e:
            yield where, e
            continue
        images, bad = [], None
        for k, ref in enumerate(refs):
            data, rel = (ref.get("bytes"), ref.get("path")) if isinstance(ref, dict) else (None, None)
            if isinstance(ref, (bytes, bytearray)):
                data = bytes(ref)
            elif isinstance(ref, str):
                rel = ref
            if data:
                bad = checker.check_bytes(data)
                if bad is None:
                    images.append(_write_image_bytes(data, folder, f"{index:08d}" + (f"_{k}" if k else "")))
            elif isinstance(rel, str) and rel:
                images.append(join_image(root or os.path.dirname(path), rel))
                bad = checker.check_path(images[-1])
            else:
                bad = f"no image bytes or path in {str(ref)[:80]!r}"
            if bad is not None:
                break
        if bad is not None:
            yield where, DatasetError(f"{where}: field {key!r}: {bad}")
            continue
        try:
            yield where, _finish_row(obj, where, _row_id(stem, obj, index), images, problem, raw, "solution",
                                     _extras(obj, (key, "problem", "solution")), task, reward_method)
        except DatasetError as e:
            yield where, e


_SPLIT_WORDS = {"train": "train", "test": "test", "validation": "validation", "val": "validation", "dev": "validation"}


def _split_of(relative: Path) -> str | None:
    tokens = [t for part in relative.parts for t in re.split(r"[-_.]", part.lower())]
    return next((_SPLIT_WORDS[t] for t in tokens if t in _SPLIT_WORDS), None)


def dataset_dir_files(folder: str) -> list[str]:
    """The shards a dataset directory is read from: parquet (else arrow), the train split if marked."""
    base = Path(folder)
    for pattern in ("*.parquet", "*.arrow"):
        found = sorted(p for p in base.rglob(pattern)
                       if not any(part.startswith(".") for part in p.relative_to(base).parts))
        if found:
            train = [p for p in found if _split_of(p.relative_to(base)) == "train"]
            return [str(p) for p in (train or found)]
    raise DatasetError(f"{folder}: no *.parquet or *.arrow files in the dataset directory")


SAMPLING_STRATEGIES = ("all", "first:N", "end:N", "random:N", "first:P%", "end:P%", "random:P%")
DATA_CONFIG_SPLITS = ("train", "val")


def _sample_count(strategy: str, n_rows: int, where: str) -> tuple[str, int | None]:
    """(name, number of rows) of a sampling strategy; (``"all"``, None) for ``all``.

    ``N%`` is ceil(N * rows / 100), as the Curr-ReFT / VLM-R1 loaders compute it."""
    if strategy == "all":
        return "all", None
    name, _, amount = strategy.partition(":")
    if name not in ("first", "end", "random") or not amount:
        raise DatasetError(f"{where}: sampling_strategy must be all, first:N, end:N or random:N (N may be P%), "
                           f"got {strategy!r}")
    try:
        number = math.ceil(float(amount[:-1]) * n_rows / 100) if amount.endswith("%") else int(amount)
    except ValueError:
        raise DatasetError(f"{where}: sampling_strategy {strategy!r}: {amount!r} is not a number") from None
    if number < 0:
        raise DatasetError(f"{where}: sampling_strategy {strategy!r} is negative")
    if name == "end" and number == 0:
        # Their loaders slice rows[-0:], which is every row; refuse rather than pick either meaning.
        raise DatasetError(f"{where}: sampling_strategy {strategy!r} selects no rows here but every row in "
                           f"Curr-ReFT's / VLM-R1's loader (rows[-0:]); remove the entry or write 'first:0'")
    return name, number


def _sample(rows: list, strategy: str, where: str, rng: random.Random) -> list:
    """The rows ``strategy`` selects (all | first:N | end:N | random:N, N may be P%).

    ``random`` shuffles with ``rng`` and keeps the first N, exactly as Curr-ReFT's Stage*.py and
    VLM-R1's grpo_rec.py do with the global ``random`` module; the caller passes one generator per
    data config, seeded once, so successive ``random`` entries continue the same stream as theirs."""
    name, number = _sample_count(strategy, len(rows), where)
    if name == "all":
        return rows
    if name == "first":
        return rows[:number]
    if name == "end":
        return rows[-number:]
    shuffled = list(rows)
    rng.shuffle(shuffled)
    return shuffled[:number]


_SPLIT_KEYS = {"train": ("train_datasets", "datasets"), "val": ("val_datasets",)}


def _load_data_config(path: str) -> dict:
    import yaml

    try:
        config = yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(config, dict):
        raise DatasetError(f"{path}: a data config must be a mapping with a 'datasets:' or 'train_datasets:' list")
    if "datasets" in config and "train_datasets" in config:
        raise DatasetError(f"{path}: give either 'datasets' (VLM-R1) or 'train_datasets' (Curr-ReFT), not both")
    return config


def has_val_datasets(path: str) -> bool:
    """Whether the data-config YAML ``path`` has a non-empty ``val_datasets:`` list."""
    entries = _load_data_config(path).get("val_datasets")
    return isinstance(entries, list) and bool(entries)


def _yaml_entries(path: str, root: str, split: str = "train",
                  config: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(data file, image root, sampling strategy, where) per entry of one split of a data-config YAML."""
    config = _load_data_config(path) if config is None else config
    keys = _SPLIT_KEYS[split]
    key = next((k for k in keys if k in config), keys[0])
    entries = config.get(key)
    if not isinstance(entries, list) or not entries:
        wanted = " or ".join(f"'{k}:'" for k in keys)
        raise DatasetError(f"{path}: expected a {wanted} list of {{json_path: ...}} entries")
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: {key}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("json_path"), str):
            raise DatasetError(f"{where}: each entry needs a 'json_path' string, got {entry!r}")
        file = entry["json_path"]
        if not os.path.isabs(file) and not os.path.exists(file):
            beside = os.path.join(os.path.dirname(path), file)
            if not os.path.exists(beside):
                raise DatasetError(f"{where}: data file {file!r} not found (looked in {os.getcwd()} and "
                                   f"{os.path.dirname(path) or '.'})")
            file = beside
        entry_root = entry.get("image_root", root)
        strategy = entry.get("sampling_strategy", "all")
        if not isinstance(entry_root, str) or not isinstance(strategy, str):
            raise DatasetError(f"{where}: 'image_root' and 'sampling_strategy' must be strings")
        if detect_format(file) == "yaml":
            raise DatasetError(f"{where}: a data config cannot list another data config ({file})")
        out.append((file, entry_root, strategy, where))
    return out


SourcedRow = tuple[str, dict]
"""("<file>:<line>" or "<file>:row <N>", row): a row and where it was read."""


def _read_results(path: str, root: str, task: str, reward_method: str | None, checker: _ImageChecker,
                  cache_dir: str) -> list[tuple[str, RowResult]]:
    """Every row of one data file or dataset directory, in file order, bad rows as DatasetError."""
    kind = detect_format(path)
    if kind == "hf_dir":
        return [r for shard in dataset_dir_files(path)
                for r in _read_results(shard, root, task, reward_method, checker, cache_dir)]
    if kind in ("json", "jsonl"):
        return list(_read_json_rows(path, kind, root, task, reward_method, checker))
    return list(_read_table_rows(path, kind, root, task, reward_method, checker, cache_dir))


def read_row_results(path: str, image_root: str, task: str, *, check_images: bool | str = False,
                     cache_dir: str | None = None) -> list[tuple[str, dict | DatasetError]]:
    """Every row of one data file or dataset directory in file order, as ("<file>:<line>", row), a bad
    one as ("<file>:<line>", DatasetError) instead of raised: the evaluation readers keep each row in
    its place (``BadGoldError`` carries the row) and decide what a bad one is."""
    get_task(task)
    if detect_format(path) == "yaml":
        raise DatasetError(f"{path}: a data config lists data files; give one of them")
    return _read_results(path, image_root, task, None, _ImageChecker(check_images),
                         cache_dir if cache_dir is not None else _default_cache_dir())


def _keep_good(results: Iterable[tuple[str, RowResult]], skipped: list[str], skip_bad: bool) -> list[SourcedRow]:
    rows = []
    for where, result in results:
        if isinstance(result, DatasetError):
            if not skip_bad:
                raise result
            skipped.append(str(result))
        else:
            rows.append((where, result))
    return rows


def _read_one(path: str, root: str, task: str, reward_method: str | None, checker: _ImageChecker,
              cache_dir: str, seed: int, skipped: list[str], skip_bad: bool, split: str = "train") -> list[SourcedRow]:
    """The rows of one file; for a data-config YAML, its ``split`` entries, each sampled.

    Sampling picks from every row of the entry, bad ones included (as the Curr-ReFT / VLM-R1 loaders,
    which do not look at rows, count them), then bad rows are dropped or raised. One ``random.Random(seed)``
    serves the whole config: for ``split="val"`` it first makes the draws of the ``train`` entries'
    ``random`` sampling, because their trainers load the train datasets, then the val ones, from one stream."""
    if detect_format(path) != "yaml":
        if split != "train":
            raise DatasetError(f"{path}: only a data-config YAML has a {split!r} split")
        return _keep_good(_read_results(path, root, task, reward_method, checker, cache_dir), skipped, skip_bad)
    config = _load_data_config(path)
    rng = random.Random(seed)
    if split == "val":
        none = _ImageChecker(False)
        for file, entry_root, strategy, where in _yaml_entries(path, root, "train", config):
            if strategy.startswith("random:"):  # a shuffle's draws depend only on the number of rows
                n = len(_read_results(file, entry_root, task, reward_method, none, cache_dir))
                _sample(list(range(n)), strategy, where, rng)
    rows = []
    for file, entry_root, strategy, where in _yaml_entries(path, root, split, config):
        results = _read_results(file, entry_root, task, reward_method, checker, cache_dir)
        rows.extend(_keep_good(_sample(results, strategy, where, rng), skipped, skip_bad))
    return rows


def _per_file(values: str | Sequence[str], count: int, what: str) -> list[str]:
    """``values`` (a list or ':'-separated) as one entry per data file: one for all, or exactly one each."""
    items = split_paths(values)
    if len(items) == 1:
        return items * count
    if len(items) != count:
        raise ValueError(f"got {count} data files but {len(items)} {what}: give one, or one per file")
    return items


def read_sourced_rows(
    files: str | Sequence[str],
    image_root: str | Sequence[str],
    task: str,
    skip_bad: bool = False,
    *,
    reward_methods: str | Sequence[str] | None = None,
    check_images: bool | str = True,
    cache_dir: str | None = None,
    seed: int = 0,
    split: str = "train",
) -> tuple[list[SourcedRow], list[str]]:
    """``read_training_files`` with each row's "<file>:<line>": ([(where, row), ...], skipped messages)."""
    if split not in DATA_CONFIG_SPLITS:
        raise ValueError(f"split must be one of {DATA_CONFIG_SPLITS}, got {split!r}")
    get_task(task)  # the default task must exist even if every row names its own
    paths = [p for p in split_paths(files) if p]
    if not paths:
        raise ValueError("no training files given")
    roots = _per_file(image_root, len(paths), "image roots")
    methods: list[str | None] = [None] * len(paths)
    if reward_methods is not None:
        methods = list(split_paths(reward_methods))
        if len(methods) != len(paths):
            raise ValueError(f"got {len(paths)} data files but {len(methods)} reward methods: give one reward "
                             "method per data file (VLM-R1's --reward_method a:b)")
        if not all(methods):
            raise ValueError(f"reward methods must be non-empty names, got {reward_methods!r}")
    checker = _ImageChecker(check_images)
    cache = cache_dir if cache_dir is not None else _default_cache_dir()
    rows: list[SourcedRow] = []
    skipped: list[str] = []
    for path, root, method in zip(paths, roots, methods):
        rows.extend(_read_one(path, root, task, method, checker, cache, seed, skipped, skip_bad, split))
    if skipped:
        logger.warning("skipped %d bad row(s) in %s; first: %s", len(skipped), ", ".join(paths), skipped[0])
    if not rows:
        raise DatasetError(f"no usable rows in {', '.join(paths)}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    keys = list(dict.fromkeys(k for _, row in rows for k in row))
    return [(where, {k: row.get(k) for k in keys}) for where, row in rows], skipped


def read_training_files(
    files: str | Sequence[str],
    image_root: str | Sequence[str],
    task: str,
    skip_bad: bool = False,
    *,
    reward_methods: str | Sequence[str] | None = None,
    check_images: bool | str = True,
    cache_dir: str | None = None,
    seed: int = 0,
    split: str = "train",
) -> TrainingRows:
    """Read training rows from ``files`` (see the module docstring for formats and the row format).

    files:          data files / dataset directories / data-config YAMLs; each entry may hold several
                    paths separated by ':'.
    image_root:     the folder image paths are relative to: one for all files, or one per file
                    (a list or a ':'-separated string, paired with ``files`` in order).
    task:           the task of rows that name none (``tasks.list_tasks()``: rec, counting, geoqa,
                    general); a row's own ``task`` field wins. The task parses ``solution``.
    skip_bad:       leave bad rows out (listed in the result's ``skipped``) instead of raising.
    reward_methods: VLM-R1's per-file accuracy method (``--reward_method a:b``): exactly one per data
                    file (a list or ':'-separated). None: "default" for every file. A row's own
                    ``accu_reward_method`` wins. Every row gets the ``accu_reward_method`` field.
    check_images:   True (default): decode every image fully and check its size against the image
                    processor's rule (``image_size_problem``); "open": read only each header (size rule
                    applied, truncated data not caught); False: no check.
    cache_dir:      where images stored inside parquet / arrow shards are written.
    seed:           seed of YAML ``random:`` sampling (one ``random.Random(seed)`` per data config).
    split:          "train": a data config's ``train_datasets`` (or ``datasets``); "val": its
                    ``val_datasets`` (then every file must be a data config; ``read_val_datasets``).

    Raises DatasetError (``<file>:<line>: ...``) for a bad row unless ``skip_bad``, and always for
    an unreadable file or when no row is left.
    """
    rows, skipped = read_sourced_rows(files, image_root, task, skip_bad, reward_methods=reward_methods,
                                      check_images=check_images, cache_dir=cache_dir, seed=seed, split=split)
    return TrainingRows((row for _, row in rows), skipped)


def read_val_datasets(
    config: str,
    image_root: str,
    task: str,
    skip_bad: bool = False,
    *,
    check_images: bool | str = True,
    cache_dir: str | None = None,
    seed: int = 0,
) -> TrainingRows:
    """The ``val_datasets`` rows of the data-config YAML ``config`` (Curr-ReFT's per-stage validation sets),
    sampled as their trainer samples them after its train datasets (``read_training_files``, split="val").

    DatasetError if ``config`` is not a data config or has no ``val_datasets`` list (``has_val_datasets``)."""
    if detect_format(config) != "yaml":
        raise DatasetError(f"{config}: val_datasets are read from a data-config YAML, not a data file")
    return read_training_files([config], image_root, task, skip_bad, check_images=check_images,
                               cache_dir=cache_dir, seed=seed, split="val")
