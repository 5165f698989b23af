"""Files a bundle, a run or a user names, read and written safely: small texts and JSON read with a size limit from
regular files only (errors are the caller's :class:`~.errors.AcousticSenseError` subclass, naming the file and the
reason); files written whole or not at all, through temporary files that are never written through a planted link."""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import AcousticSenseError, OutputError

MAX_TEXT_BYTES = 16 << 20  # a config.json, labels or preprocessing file beyond this is refused unread (they take a few KiB)


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (a newline, a terminal escape) or a lone surrogate (which no
    UTF-8 output can print): no name of a genre does."""
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary name beside ``path`` to write to; when the block ends without an error the file written there
    replaces ``path`` in one step. Anything under that name is removed first (a link planted there is never written
    through), and the temporary file is removed however the block ends: an interrupted or failed write leaves whatever
    ``path`` held. An ``OSError`` on the way (read-only, no permission, a full disk) is an :class:`OutputError` naming
    ``path`` and the reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: two writers never share one
    try:
        _sweep(path)
        tmp.unlink(missing_ok=True)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot be written ({e.strerror or e})") from None


def _sweep(path: Path) -> None:
    """Remove what a killed process (``kill -9``, out of memory) left while it rewrote ``path``: its temporary file,
    named by a process id that no longer runs. Those of running processes are theirs."""
    prefix = f".{path.name}."
    with os.scandir(path.parent) as entries:
        stale = [e.path for e in entries if e.name.startswith(prefix) and e.name.endswith(".tmp") and not _running(e.name[len(prefix) : -4])]
    for name in stale:
        Path(name).unlink(missing_ok=True)


def _running(pid: str) -> bool:
    if not pid.isdigit():
        return True  # not one of ours: left alone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def write_whole(path: str | os.PathLike, data: bytes) -> None:
    """``data`` into ``path`` through :func:`replacing`."""
    with replacing(path) as tmp, open(tmp, "xb") as f:  # "x": never through a file or link that appeared meanwhile
        f.write(data)


def read_small_text(path: Path, error: type[AcousticSenseError], limit: int = MAX_TEXT_BYTES) -> str:
    """The text of a small file that a bundle or a user names (a config, labels, preprocessing, a manifest): a regular file
    (never a FIFO or a device, which could block or never end), at most ``limit`` bytes, UTF-8 (a BOM is dropped).
    Anything else is ``error`` naming the file and the reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, to be refused below
    except OSError as e:  # missing, no permission, a name too long
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO, a device
            raise error(f"{path}: not a regular file")
        raw = bytearray()
        while len(raw) <= limit and (part := os.read(fd, limit + 1 - len(raw))):
            raw += part  # in a loop: a network file system may return less than asked
    except OSError as e:  # an I/O error
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise error(f"{path}: larger than {limit >> 20} MiB, far more than such a file holds; refused")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{path}: invalid JSON or text (not UTF-8: {e.reason} at byte {e.start})") from None


def read_json(path: Path, error: type[AcousticSenseError], limit: int = MAX_TEXT_BYTES) -> Any:
    """:func:`read_small_text` parsed as JSON; a parse error (an integer of thousands of digits, nesting too deep) is ``error``."""
    return parse_json(read_small_text(path, error, limit), path, error)


def parse_json(text: str, where: str | os.PathLike, error: type[AcousticSenseError]) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise error(f"{where}: invalid JSON ({' '.join(str(e).split())[:200]})") from None
    except RecursionError:
        raise error(f"{where}: invalid JSON (nested too deeply)") from None
