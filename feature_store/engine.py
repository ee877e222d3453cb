"""How the chunk bytes of a feature store move: plain shards (uncompressed, local) straight to and
from their files (:class:`ShardFiles`), everything else through tensorstore (C++, threaded, one call
per tap for a whole batch or shard) for local stores when it is installed, else zarr-python.

The metadata (groups, array definitions, attributes, done flags) is always written by zarr-python,
and every path reads and writes the same Zarr v3 chunks — a store written by one is read by the
others, by dask and by xarray unchanged.  Measured against raw bytes in
``benchmarks/bench_engines.py`` (docs/DESIGN.md §5): on this layout zarr-python is an order of
magnitude slower than tensorstore, and the direct shard path faster again (results/engines.json).
"""
from __future__ import annotations

import json
import mmap
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shared.files.atomic import AtomicFile, write_parts

from . import layout as L
from shared.errors import InputError

ENGINES = ("auto", "tensorstore", "zarr")
READ_CACHE_BYTES = 32 << 20  # per reading process (see SplitArrays)
ENGINE_HELP = ("how chunks are read and written: auto = whole uncompressed shards straight to/from their files, "
               "everything else through tensorstore (local stores, when installed) or zarr-python; tensorstore; "
               "zarr (zarr-python only)")


def _tensorstore():
    try:
        import tensorstore
    except ImportError:
        return None
    return tensorstore


_TS_PID = None  # the process whose tensorstore runtime is live (the first to open an array)


def _tensorstore_usable_here() -> bool:
    """tensorstore aborts when used in a process forked from one that had used it (its threads do
    not survive fork), e.g. DataLoader workers started with the "fork" context."""
    return _TS_PID in (None, os.getpid())


def resolve_engine(name: str, store) -> str:
    """``auto`` / ``tensorstore`` / ``zarr`` → the engine that will run; refusals name the reason."""
    if name not in ENGINES:
        raise L.StoreError(f"--engine must be one of {list(ENGINES)}, got {name!r}")
    local = L.local_path(store) is not None
    if name == "tensorstore":
        if _tensorstore() is None:
            raise L.StoreError("--engine tensorstore: the tensorstore package is not installed (pip install tensorstore)")
        if not local:
            raise L.StoreError(f"--engine tensorstore: {store} is a URL; tensorstore is used for local folders only")
        return "tensorstore"
    if name == "zarr" or not local:
        return "zarr"
    return "tensorstore" if _tensorstore() is not None else "zarr"


class SplitArrays:
    """The tap arrays of one split, opened with one engine: ``write(start, {tap: rows})`` and
    ``read(tap, samples, variants)`` / ``read_taps(samples, variants)`` (a batch; rows in the
    order asked).  With ``engine="auto"``, reads of the plain layout (uncompressed shards, local)
    go straight to the shard files (:class:`ShardFiles`, engine ``"shard files"``)."""

    def __init__(self, store, split: str, taps, engine: str = "auto", write: bool = False, threads: int = 2):
        self.store, self.split, self.taps = str(store), split, list(taps)
        self.engine = resolve_engine(engine, store)
        self._zarr = _zarr_arrays(store, split, taps, write)
        self._pool, self._direct = None, None
        local = L.local_path(store)
        if engine == "auto" and local is not None:
            direct = {t: ShardFiles.open(local / split / t) for t in taps}
            if all(direct.values()):
                self._direct, self.engine = direct, "shard files"
                # writes go one tap per thread (file writes release the GIL: 0.42 -> 0.61x raw on 2 cores,
                # benchmarks/results/engines.json); reads stay serial: threads did not speed them up
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="features") if write and threads > 1 else None
                return
        if self.engine == "tensorstore" and not _tensorstore_usable_here():
            warnings.warn("this process was forked from one that used tensorstore, which cannot run here; reading "
                          "with zarr-python (slower). Start DataLoader workers with multiprocessing_context="
                          "'forkserver' or 'spawn' to keep tensorstore", RuntimeWarning, stacklevel=3)
            self.engine = "zarr"
        if self.engine == "tensorstore":
            global _TS_PID
            _TS_PID = os.getpid()
            ts = _tensorstore()
            # A small cache keeps the shard indices (else every batch re-reads and re-checks them); a
            # reader opens a complete split, which never changes, so cached entries need no re-check.
            # No fsync per file, like zarr-python and the raw baseline: a killed process loses nothing
            # written, and after a machine crash `frozenflow verify --full` finds what the disk lost.
            ctx = ts.Context({"cache_pool": {"total_bytes_limit": 0 if write else READ_CACHE_BYTES},
                              "data_copy_concurrency": {"limit": max(1, threads)}, "file_io_sync": False})
            root = L.local_path(store)
            fixed = {} if write else {"recheck_cached_data": False, "recheck_cached_metadata": False}
            self._ts = {t: ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root / split / t)},
                                    **fixed}, open=True, read=True, write=write, context=ctx).result() for t in taps}
        else:
            self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="features")

    def write(self, start: int, values: dict[str, np.ndarray]) -> None:
        """Rows ``start …`` of every tap in ``values`` (tensorstore: all taps at once)."""
        if self._direct is not None:
            n = self._zarr[self.taps[0]].shape[0]

            def write_tap(t):
                v = values[t]
                if self._direct[t].can_write(start, len(v), n):
                    self._direct[t].write(start, v)
                else:  # not one whole shard: through zarr-python, which reads, merges and rewrites it
                    self._zarr[t][start:start + len(v)] = v
            list(self._pool.map(write_tap, values) if self._pool else map(write_tap, values))
            return
        if self.engine == "tensorstore":
            pending = [self._ts[t][start:start + len(v)].write(v) for t, v in values.items()]
            for f in pending:
                f.result()
        else:
            for t, v in values.items():
                self._zarr[t][start:start + len(v)] = v

    def shard_sink(self, start: int, rows: int) -> "ShardSink":
        """Where one whole shard of every tap (samples ``start …``, ``rows`` of them) goes batch by batch:
        straight to the shard files on the plain layout, else gathered and written at once on commit."""
        n = self._zarr[self.taps[0]].shape[0]
        if self._direct is not None and all(f.can_write(start, rows, n) for f in self._direct.values()):
            return ShardSink({t: f.writer(start, rows) for t, f in self._direct.items()})
        return ShardSink(None, lambda values: self.write(start, values))

    def read_taps(self, samples, variants=None) -> dict[str, np.ndarray]:
        """``read`` for every tap (tensorstore: all taps' reads in flight at once)."""
        if self._direct is not None or self.engine != "tensorstore":
            return {t: self.read(t, samples, variants) for t in self.taps}
        pending = {t: self._ts_read(t, samples, variants) for t in self.taps}
        return {t: finish() for t, finish in pending.items()}

    def read(self, tap: str, samples, variants=None) -> np.ndarray:
        """Rows ``samples`` (with ``variants`` for a flips store) of ``tap`` as one array.

        Raises ValueError when a chunk's checksum does not match or it does not decode."""
        samples = np.asarray(samples, dtype=np.int64)
        if self._direct is not None:
            return self._direct[tap].read(samples, variants)
        if self.engine == "tensorstore":
            return self._ts_read(tap, samples, variants)()
        arr = self._zarr[tap]
        keys = [int(i) for i in samples] if variants is None else [(int(i), int(v)) for i, v in zip(samples, variants)]
        # one call per sample: zarr-python's fancy indexing on sharded arrays is 2.8× slower
        # (benchmarks/results/engines.json: 25 vs 70 samples/s)
        return np.stack(list(self._pool.map(lambda k: np.asarray(arr[k]), keys)))

    def _ts_read(self, tap: str, samples, variants):
        """Start a tensorstore read; returns the function that waits for it."""
        a, samples = self._ts[tap], np.asarray(samples, dtype=np.int64)
        if variants is None:
            # sorted unique rows: sequential within shards; then back to the order asked
            rows, inverse = np.unique(samples, return_inverse=True)
            future = a[rows].read()
            return lambda: np.asarray(future.result())[inverse]
        future = a.vindex[samples, np.asarray(variants, dtype=np.int64)].read()
        return lambda: np.asarray(future.result())

    def read_one(self, tap: str, key) -> np.ndarray:
        """One sample through zarr-python (the reference path used to name a damaged chunk)."""
        return np.asarray(self._zarr[tap][key])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for reader in (self._direct or {}).values():
            reader.close()


def _zarr_arrays(store, split, taps, write: bool) -> dict:
    root = L.open_root(store, mode="r+" if write else "r")
    return {t: root[split][t] for t in taps}


class ShardFiles:
    """Samples of an uncompressed sharded tap array read (and whole shards written) straight from
    (to) its shard files.

    The layout the export writes with ``--codec none`` is simple enough to read without a codec
    pipeline: each shard file holds its chunks' raw little-endian bytes, each followed by a crc32c,
    and an index of (offset, nbytes) pairs with its own crc32c (Zarr v3 ``sharding_indexed``).  A
    batch is then one copy out of the memory map per sample, like reading a raw ``.npy`` memmap.  Any
    other layout (compressed, unsharded) is left to the engines.

    A chunk's crc32c is checked the first time this process reads it from a version of its shard file
    (device, inode, size, mtime), and not again: FrozenFlow replaces shard files only by rename, so the
    bytes checked are the bytes read later, and a replaced or rewritten file is a new version, checked
    afresh.  (A crc pass costs about as much as the copy: checking on every read halved the read,
    benchmarks/results/reader_hot.json.)
    """

    EMPTY = 2 ** 64 - 1
    MAX_OPEN = 32

    def __init__(self, folder, meta: dict):
        sharding = meta["codecs"][0]["configuration"]
        self.folder = folder
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunk = tuple(sharding["chunk_shape"])
        self.per_shard = tuple(s // c for s, c in zip(self.shard, self.chunk))
        self.n_chunks = int(np.prod(self.per_shard))
        self.n_var = self.per_shard[1] if len(self.shard) == 5 else 1  # variants (flips) per sample
        self.index_at_end = sharding.get("index_location", "end") == "end"
        self._maps = OrderedDict()
        self._checked: dict[tuple, bytearray] = {}  # file version → which of its chunks passed their crc32c (1)

    @classmethod
    def open(cls, folder):
        """A reader for the array in ``folder``, or None when its layout is not the plain one."""
        try:
            meta = json.loads((folder / "zarr.json").read_text())
            codecs = meta["codecs"]
            if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
                return None
            conf = codecs[0]["configuration"]
            plain = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
            lead = len(meta["shape"]) - 3
            if (conf["codecs"] != plain or conf.get("index_codecs") != plain
                    or meta["chunk_key_encoding"] != {"name": "default", "configuration": {"separator": "/"}}
                    or any(c != 1 for c in conf["chunk_shape"][:lead])
                    or list(conf["chunk_shape"][lead:]) != list(meta["shape"][lead:])):
                return None
            return cls(folder, meta)
        except (OSError, KeyError, TypeError, ValueError):
            return None

    def key(self, start: int) -> tuple:
        """Grid position of the shard holding sample ``start`` (one per sample axis, the variants in it)."""
        return (start // self.shard[0],) + (0,) * (len(self.shard) - 4)

    def path(self, key: tuple) -> Path:
        return self.folder / "c" / "/".join(str(k) for k in key + (0, 0, 0))

    def _shard(self, key: tuple):
        """(bytes of the shard file as a read-only uint8 array over its memory map, its index as a list of
        [offset, nbytes], which chunks passed their crc32c, each chunk's values as a typed view once read)
        of the shard at grid position ``key``, None when absent.  At most MAX_OPEN stay mapped (each
        holds a file descriptor), least recently used first out; a map closes when its array goes."""
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        while len(self._maps) >= self.MAX_OPEN:
            self._maps.popitem(last=False)
        path = self.path(key)
        got = None
        if path.exists():
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
            size = self.n_chunks * 16 + 4
            raw = data[-size:] if self.index_at_end else data[:size]
            if len(raw) < size or _crc32c(raw) != CRC32C_RESIDUE:
                raise InputError(f"{path}: shard index does not match its crc32c (truncated or damaged)")
            version = (key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            checked = self._checked.setdefault(version, bytearray(self.n_chunks))
            index = raw[:-4].view("<u8").reshape(self.n_chunks, 2).tolist()  # lists: cheap per-sample lookups
            got = (data, index, checked, [None] * self.n_chunks)
        self._maps[key] = got
        return got

    def read(self, samples, variants=None) -> np.ndarray:
        """Rows ``samples`` (with ``variants`` on a flips store; without: every variant of each)."""
        samples = np.asarray(samples, dtype=np.int64)
        n_var = self.n_var
        if variants is None and n_var > 1:
            return np.stack([self.read(samples, np.full(len(samples), v)) for v in range(n_var)], axis=1)
        variants = np.zeros(len(samples), np.int64) if variants is None else np.asarray(variants, np.int64)
        out = np.empty((len(samples), *self.chunk[-3:]), dtype=self.dtype)
        flat = out.reshape(len(samples), -1)
        per = self.shard[0]
        for k, (i, v) in enumerate(zip(samples.tolist(), variants.tolist())):
            got = self._shard(self.key(i))
            j = (i % per) * n_var + v
            row = None if got is None else got[3][j]
            if row is None:  # this map's first read of the chunk
                off, n = (self.EMPTY, self.EMPTY) if got is None else got[1][j]
                if off == self.EMPTY:  # never written (or its shard deleted): zarr would read the fill value, NaN
                    raise InputError(f"{self.folder}: sample {i} has no chunk (deleted, or never written)")
                chunk = got[0][off:off + n]  # a view of the map, copied below
                if not got[2][j]:
                    if len(chunk) != n or _crc32c(chunk) != CRC32C_RESIDUE:  # data + its crc32c: one pass
                        raise InputError(f"{self.folder}: chunk of sample {i} does not match its crc32c")
                    got[2][j] = 1
                row = got[3][j] = chunk[:-4].view(self.dtype)
            flat[k] = row
        return out

    def can_write(self, start: int, rows: int, n: int) -> bool:
        """Whether ``rows`` rows at ``start`` are exactly one shard (the last one may be short)."""
        return start % self.shard[0] == 0 and rows == min(self.shard[0], n - start)

    def write(self, start: int, values: np.ndarray) -> None:
        """Write one whole shard (see ``can_write``) in one step (``writer``)."""
        with self.writer(start, len(values)) as w:
            w.append(values)

    def writer(self, start: int, rows: int) -> "ShardWriter":
        """A writer of the shard whose first sample is ``start`` (``rows`` samples, see ``can_write``)."""
        key = self.key(start)
        self._maps.pop(key, None)
        return ShardWriter(self, self.path(key), rows)

    def close(self) -> None:
        self._maps.clear()


class ShardSink:
    """A shard of every tap written batch by batch (``SplitArrays.shard_sink``): ``append({tap: rows})``
    in sample order, then ``commit()``, or ``abort()`` to leave nothing.  With shard writers each batch goes
    to its files at once; otherwise the batches are kept (copies: the caller reuses its buffers) and
    handed to ``write_all`` together on commit."""

    def __init__(self, writers: dict[str, "ShardWriter"] | None, write_all=None):
        self._writers, self._write_all, self._kept = writers, write_all, []

    def append(self, values: dict[str, np.ndarray]) -> None:
        if self._writers is not None:
            for t, v in values.items():
                self._writers[t].append(v)
        else:
            self._kept.append({t: v.copy() for t, v in values.items()})

    def commit(self) -> None:
        if self._writers is not None:
            for w in self._writers.values():
                w.commit()
        else:
            self._write_all({t: np.concatenate([k[t] for k in self._kept]) for t in self._kept[0]})
            self._kept = []

    def abort(self) -> None:
        for w in (self._writers or {}).values():
            w.abort()
        self._kept = []


class ShardWriter:
    """One shard file written batch by batch: each ``append`` puts its samples' chunks, each followed by
    its crc32c, at the end of a temporary file while they are still in the cache; ``commit`` adds the index
    and its crc32c and renames the file into place (shared.files.atomic.AtomicFile), so a reader or a killed
    writer never sees half a shard; ``abort`` (or an exception in a ``with`` block) leaves no file.  The
    bytes are those of writing the shard at once: samples in order, each batch's space reserved as it is
    appended (``write_parts``)."""

    def __init__(self, files: ShardFiles, path: Path, rows: int):
        self.files, self.rows, self.n_var = files, rows, files.n_var
        self._index = np.full((files.n_chunks, 2), ShardFiles.EMPTY, dtype="<u8")
        self._index_size = files.n_chunks * 16 + 4
        self._j = 0
        # no fsync: like zarr-python's chunks; a machine crash shows up in the checksums (verify --full)
        self._file = AtomicFile(path, durable=False)
        self._offset = 0 if files.index_at_end else self._index_size
        if not files.index_at_end:
            self._file.file.write(bytes(self._index_size))  # the index's place, filled by commit()

    def append(self, values: np.ndarray) -> None:
        """The next samples of the shard, shaped as stored ([rows, (V,) C, H, W])."""
        flat = np.ascontiguousarray(values, dtype=self.files.dtype).reshape(len(values) * self.n_var, -1).view(np.uint8)
        if self._j + len(flat) > self.rows * self.n_var:
            raise ValueError(f"{self._file.path}: more samples than the shard's {self.rows}")
        parts = []
        for chunk in flat:
            parts += [chunk, _crc32c(chunk).to_bytes(4, "little")]
            self._index[self._j] = (self._offset, chunk.nbytes + 4)
            self._offset += chunk.nbytes + 4
            self._j += 1
        write_parts(self._file.file, parts)

    def commit(self) -> None:
        if self._j != self.rows * self.n_var:
            self.abort()
            raise ValueError(f"{self._file.path}: {self._j // self.n_var} of the shard's {self.rows} samples written")
        head = [self._index.tobytes(), _crc32c(self._index.view(np.uint8)).to_bytes(4, "little")]
        if self.files.index_at_end:
            write_parts(self._file.file, head)
        else:
            self._file.file.flush()
            os.pwrite(self._file.file.fileno(), b"".join(head), 0)
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        self.commit() if kind is None else self.abort()


CRC32C_RESIDUE = 0x48674BC7  # crc32c of any data followed by its own little-endian crc32c


def _crc32c(data) -> int:
    """crc32c of bytes or a read-only uint8 array (no copy), hardware-accelerated.  The ``crc32c`` package
    lets other threads run while it checksums a large buffer (google-crc32c, zarr's own, holds the GIL:
    beside a thread checksumming in a loop the teacher's forward ran at 0.20× its speed, at 1.0× with crc32c;
    benchmarks/results/gil.json)."""
    import crc32c

    return crc32c.crc32c(data)
