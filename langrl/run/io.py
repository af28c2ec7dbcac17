"""Crash-safe file helpers.

A training run can be killed at any instant (OOM killer, pre-empted node, Ctrl-C). Everything a run
writes goes through these helpers so that a reader afterwards sees either the old content or the new
content of a file, never half of it:

* whole files are written to a temporary sibling, fsynced, then ``os.replace``-d over the target
  (rename within one folder is atomic on POSIX and on Windows);
* logs are append-only JSON Lines, each row flushed and fsynced; a crash can at worst leave a truncated
  last line, which :func:`read_jsonl` skips and :func:`append_jsonl` repairs before appending;
* folders (checkpoints) are built under a temporary sibling name and renamed into place by
  :func:`atomic_dir`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langrl.errors import ConfigError

__all__ = [
    "append_jsonl",
    "append_jsonl_rows",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
    "read_jsonl",
]

_log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable.

    ``fsync`` on a file does not persist its directory entry; after ``os.replace`` the parent folder must be
    fsynced too or a power loss can bring the old name back. Windows cannot open folders this way and its
    renames are already journalled, so there it is a no-op.
    """
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_sibling(path: Path, kind: str) -> Path:
    """A name next to ``path`` that is hidden and unlikely to collide: ``.<kind>-<name>-<random>``."""
    return path.parent / f".{kind}-{path.name}-{secrets.token_hex(4)}"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a partial one.

    The temporary file lives in the same folder because ``os.replace`` is only atomic within one file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path, "tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` as UTF-8. Newlines are written as given (no platform translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (UTF-8, non-ASCII kept readable, trailing newline)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def _dumps_row(row: dict[str, Any]) -> str:
    if not isinstance(row, dict):
        raise TypeError(f"a JSON Lines row must be a dict, got {type(row).__name__}")
    # One physical line per row: json.dumps without indent never emits a raw newline.
    return json.dumps(row, ensure_ascii=False) + "\n"


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Atomically replace ``path`` with ``rows`` as JSON Lines (used to rewrite a log on resume)."""
    atomic_write_text(path, "".join(_dumps_row(r) for r in rows))


def _repair_tail(f: Any) -> None:
    """Make an append-mode binary file end at a line boundary before new rows go in.

    Without this, a row appended after a crash would be glued onto the crash's truncated fragment and both
    would be lost as one unparsable line in the middle of the file. A last line that lacks only its newline
    (e.g. written by hand) but parses is kept and terminated; an unparsable fragment is cut off.
    """
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    # Scan back for the previous newline in chunks; logs rows are small so this touches a few KB.
    pos, tail = size, b""
    while pos > 0 and b"\n" not in tail:
        step = min(8192, pos)
        pos -= step
        f.seek(pos)
        tail = f.read(step) + tail
    cut = tail.rfind(b"\n") + 1  # 0 when the file holds a single line
    fragment = tail[cut:]
    try:
        json.loads(fragment)
    except ValueError:
        _log.warning("dropping a truncated last line (%d bytes) from %s", len(fragment), f.name)
        f.truncate(pos + cut)
    else:
        f.seek(0, os.SEEK_END)
        f.write(b"\n")


def append_jsonl_rows(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append several rows to a JSON Lines file with a single flush + fsync (one per batch, not per row)."""
    data = "".join(_dumps_row(r) for r in rows).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        _repair_tail(f)
        f.seek(0, os.SEEK_END)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one row to a JSON Lines file, flushed and fsynced so it survives a crash right after."""
    append_jsonl_rows(path, [row])


def read_jsonl(path: str | os.PathLike[str], missing_ok: bool = False) -> list[dict[str, Any]]:
    """Read a JSON Lines file into a list of dicts.

    A last line that does not parse is the footprint of a crash mid-append and is skipped with a warning;
    an unparsable line anywhere else is real corruption and raises ``ValueError`` naming the line. Blank
    lines are ignored. With ``missing_ok`` a missing file reads as no rows.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            if i == len(lines) - 1:
                _log.warning("skipping a truncated last line in %s", path)
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i + 1}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_dataset_rows(path: str | os.PathLike[str], field: str, give: str, row_help: str) -> list[dict[str, Any]]:
    """The rows of a user's JSON Lines dataset, or a one-line `ConfigError` naming ``field`` and the file: it
    is missing (``give`` says what to give instead), does not parse, or holds no rows (``row_help``: the row
    format)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{field} = {str(path)!r}: no such file; give {give}")
    try:
        rows = read_jsonl(file)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{field} = {str(path)!r}: {e}; {row_help}") from None
    if not rows:
        raise ConfigError(f"{field} = {str(path)!r}: the file holds no rows; {row_help}")
    return rows


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` so the rename that publishes it publishes real data."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextmanager
def atomic_dir(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder under a temporary sibling name and publish it at ``final_path`` only on success.

    Yields ``.tmp-<name>-<random>`` next to ``final_path``. On a clean exit its contents are fsynced and it
    is renamed to ``final_path``. An existing ``final_path`` is replaced in three steps (rename the old one
    to ``.old-<name>-<random>``, rename the new one in, delete the old one) because no portable call swaps
    two non-empty folders atomically; if the process dies between the two renames, the complete old copy
    survives under the ``.old-`` name. On an exception the temporary folder is deleted and ``final_path``
    is left exactly as it was.

    The temporary folder is created with ``os.mkdir`` (not ``tempfile.mkdtemp``) so that it gets the
    user's umask rather than mode 0700, which would make checkpoints unreadable to a shared group.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _tmp_sibling(final, "tmp")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    old: Path | None = None
    try:
        if final.exists() or final.is_symlink():
            old = _tmp_sibling(final, "old")
            os.rename(final, old)
        os.rename(tmp, final)
    except BaseException:
        # Put the previous version back so a failed publish never loses the last good copy.
        if old is not None and old.exists() and not final.exists():
            os.rename(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)
    if old is not None:
        _remove(old)
