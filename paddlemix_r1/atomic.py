"""Files written whole or not at all: the content goes to a temporary file beside the target (named for this
process and thread), which then replaces the target in one ``os.replace``. A crash or a kill leaves the old
file or the new one, never half of one; a failed write removes its temporary file and re-raises.

Used for every result file a run writes outside a checkpoint (checkpoints are whole directories, written
the same way by ``models.checkpoint`` and ``grpo.checkpoint``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any


def write_file(path: str, write: Callable[[IO], None], binary: bool = False) -> str:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``; return ``path``.
    Missing parent directories are made."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> str:
    """``obj`` as JSON (``json.dump`` keyword arguments pass through; default indent 2) and a final newline."""
    dump_kwargs.setdefault("indent", 2)

    def write(f: IO) -> None:
        json.dump(obj, f, **dump_kwargs)
        f.write("\n")

    return write_file(path, write)


def write_jsonl(path: str, records: Iterable[Mapping[str, Any]]) -> str:
    """One JSON object a line (non-ASCII text kept as is)."""
    return write_file(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
