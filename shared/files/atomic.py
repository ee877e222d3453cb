"""The one atomic write (docs/DESIGN.md §9): a temp file in the same folder, fsync, rename.

A crash at any moment leaves either the old file or the new one, never half of either; the
rename is atomic because source and target share a file system.  Every file the product writes
whole (checkpoints, dataset arrays, the projector cache, metrics and result files) goes through here.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, IO

PARTIAL = ".partial"  # suffix of temp files; a cleaner may delete leftovers of a killed writer
_UMASK = os.umask(0)  # read once at import: changing the umask later is not thread-safe
os.umask(_UMASK)


class AtomicFile:
    """A file written in steps that appears at ``path`` whole or not at all: a temp file in the same
    folder (``*.partial``), renamed into place by ``commit()``; ``abort()`` (or an exception leaving a
    ``with`` block) removes it.  ``durable=False`` skips the fsyncs: still all-or-nothing for a killed
    process (the rename), but a machine crash may lose the data — for bulk data whose loss a checksum
    reveals (feature-store shards; ``frozenflow verify --full``), where an fsync per file would halve the
    write speed."""

    def __init__(self, path: str | Path, *, mode: int | None = None, durable: bool = True):
        self.path, self.mode, self.durable = Path(path), mode, durable
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=PARTIAL)
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> Path:
        try:
            self.file.flush()
            if self.durable:
                os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self._tmp, self.mode if self.mode is not None else 0o666 & ~_UMASK)  # mkstemp makes 0600
            os.replace(self._tmp, self.path)
            if self.durable:
                _fsync_dir(self.path.parent)
        finally:
            self.abort()  # removes the temp file if anything above failed; nothing once renamed
        return self.path

    def abort(self) -> None:
        self.file.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> IO:
        return self.file

    def __exit__(self, kind, *_) -> None:
        self.commit() if kind is None else self.abort()


def atomic_write(path: str | Path, write: Callable[[IO], None] | bytes | str, *, mode: int | None = None,
                 durable: bool = True) -> Path:
    """Write ``path`` atomically (``AtomicFile``).  ``write`` is bytes, text (UTF-8) or a function given the
    open binary file."""
    with AtomicFile(path, mode=mode, durable=durable) as f:
        if isinstance(write, str):
            f.write(write.encode())
        elif isinstance(write, (bytes, bytearray, memoryview)):
            f.write(write)
        else:
            write(f)
    return Path(path)


def write_parts(f: IO, parts: list) -> None:
    """Write buffers (bytes, uint8 arrays) to the open file ``f`` as they are, without joining them:
    the space reserved first in one piece, then one ``writev`` per IOV_MAX buffers.  On ext4 this puts
    a shard in the page cache for 0.69× the CPU of one ``write`` per buffer
    (benchmarks/results/write_parts.json)."""
    f.flush()
    fd, at = f.fileno(), f.tell()
    sizes = [memoryview(p).nbytes for p in parts]
    _reserve(fd, at, sum(sizes))
    for k in range(0, len(parts), _IOV_MAX):
        group = parts[k:k + _IOV_MAX]
        done = os.writev(fd, group)
        if done != sum(sizes[k:k + _IOV_MAX]):  # a short write (a full disk, a signal): finish it buffer by buffer
            _finish(fd, group, done)
    f.seek(at + sum(sizes))  # the file object learns where writev left off (not the end: space may be reserved past it)


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 16


def _finish(fd: int, group: list, done: int) -> None:
    for p in group:
        m = memoryview(p).cast("B")
        if done >= len(m):
            done -= len(m)
            continue
        m, done = m[done:], 0
        while len(m):
            m = m[os.write(fd, m):]


def _reserve(fd: int, offset: int, length: int) -> None:
    """Linux fallocate(2): the blocks allocated at once instead of write by write.  Skipped where the call
    or the filesystem has none; never glibc's posix_fallocate, which emulates it there by writing."""
    if _FALLOCATE is None or length <= 0:
        return
    _FALLOCATE(fd, 0, offset, length)  # a failure (EOPNOTSUPP, ENOSPC) leaves the writes to report it


def _fallocate():
    try:
        import ctypes

        f = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    f.restype = ctypes.c_int
    return f


_FALLOCATE = _fallocate()


def atomic_write_json(path: str | Path, obj, **dump_kw) -> Path:
    dump_kw.setdefault("indent", 2)
    return atomic_write(path, json.dumps(obj, **dump_kw) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    import csv
    import io

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fieldnames or list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return atomic_write(path, buf.getvalue())


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
