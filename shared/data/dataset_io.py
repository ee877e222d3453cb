"""The dataset folder (docs/DESIGN.md §8): float32 ``.npy`` arrays opened with mmap + ``dataset.json``.

Layout, per split (``train``, ``val``, ``test``; any split listed in dataset.json)::

    {split}-actSino.npy    (N, C, R, A)  activity sinograms, C = 1 or 3 adjacent planes (centre = target)
    {split}-actMap.npy     (N, 1, H, W)  activity of the centre plane
    {split}-attenMap.npy   (N, 1, H, W)  μ in 1/cm
    {split}-attenSino.npy  (N, 1, R, A)  optional: line integrals of μ (present in all splits or none)
    {split}-lesionMap.npy  (N, 1, H, W)  optional: lesion labels, 0 = none, j = lesion j (known truth of
                                         synthetic data: contrast recovery per lesion; all splits or none)
    {split}-recon1.npy     (N, 1, H, W)  optional: a reconstruction shipped with the data (e.g. the vendor's
    {split}-recon2.npy                   OSEM), in actMap's units — evaluated as extra methods

``dataset.json`` keys: format_version (1), geometry (ParallelGeometry.to_dict()), splits
({name: N}), sino_channels, units ({kind: str}), scales ({kind: float}, suggested multiplicative
normalisation to O(1)), optional files ({kind: pattern with "{split}"}), optional names ({recon1|recon2:
display name, e.g. "vendor OSEM"}), optional extra (free-form provenance, e.g. the synthetic generator's
arguments).  Anything else is an error, so a typo in a
hand-written dataset.json does not silently fall back to a default.

Every validation failure raises :class:`DataError` with one line naming the file, what was
expected (and where that expectation comes from) and what was found.
"""
from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import NamedTuple

import numpy as np

from shared.files.atomic import atomic_write
from shared.physics.projector import ParallelGeometry

from .orientation import ORIENTATIONS, OrientedArray
from .scan import row_digest, scan_rows
from shared.errors import InputError

FORMAT_VERSION = 1
META_NAME = "dataset.json"
RECON_KINDS = ("recon1", "recon2")  # the data's own reconstructions (evaluated beside FBP and MLEM)
KINDS = ("actSino", "actMap", "attenMap", "attenSino", "lesionMap", *RECON_KINDS)
SINO_KINDS = ("actSino", "attenSino")
REQUIRED_KINDS = ("actSino", "actMap", "attenMap")
OPTIONAL_KINDS = ("attenSino", "lesionMap", *RECON_KINDS)  # each present in all splits or in none
NONNEGATIVE_KINDS = ("actMap", "attenMap", "lesionMap")  # physical quantities; sinograms may be corrected/negative
DEFAULT_FILES = {k: "{split}-" + k + ".npy" for k in KINDS}
REQUIRED_KEYS = ("format_version", "geometry", "splits", "sino_channels", "units", "scales")
OPTIONAL_KEYS = ("files", "extra", "calibration", "atten_calibration", "names")
# optional geometry entries: how stored sinograms relate to the projector's (shared.data.orientation) and
# the size they are stored at when it is not the working one (shared.data.resample)
ORIENTATION_KEYS = ("orientation", "angle_offset", "resize")


class DataError(InputError):
    """A dataset folder that does not match its dataset.json (or the format itself)."""


class SplitArrays(NamedTuple):
    """The (memory-mapped) arrays of one split; an optional kind is None when the dataset has none."""

    actSino: np.ndarray
    actMap: np.ndarray
    attenMap: np.ndarray
    attenSino: np.ndarray | None
    lesionMap: np.ndarray | None
    n: int
    recon1: np.ndarray | None = None
    recon2: np.ndarray | None = None


def _sample_rows(n: int, k: int) -> list[int]:
    """Up to k row indices spread evenly over 0..n-1, always including the first and last."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, k))}) if n > 0 else []


def _check_meta(meta, where: str) -> None:
    """Structure and types of dataset.json; raises DataError naming the offending key."""
    if not isinstance(meta, dict):
        raise DataError(f"{where}: expected a JSON object at top level, found {type(meta).__name__}")
    for key in meta:
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            raise DataError(f"{where}: unknown key {key!r} (allowed: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise DataError(f"{where}: missing required key {key!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(f"{where}: format_version: expected {FORMAT_VERSION}, found {meta['format_version']!r}")
    if not isinstance(meta["geometry"], dict):
        raise DataError(f"{where}: geometry: expected an object, found {meta['geometry']!r}")
    known = {f for f in ParallelGeometry.__dataclass_fields__} | set(ORIENTATION_KEYS)
    for key in meta["geometry"]:
        if key not in known:
            raise DataError(f"{where}: geometry.{key}: unknown key (allowed: {', '.join(sorted(known))})")
    orientation = meta["geometry"].get("orientation", "identity")
    if orientation not in ORIENTATIONS:
        raise DataError(f"{where}: geometry.orientation: expected one of {list(ORIENTATIONS)}, found {orientation!r}")
    offset = meta["geometry"].get("angle_offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise DataError(f"{where}: geometry.angle_offset: expected an int (angle bins), found {offset!r}")
    for key, model in (("calibration", "E[actSino] = calibration · exp(-P attenMap) · P actMap"),
                       ("atten_calibration", "attenSino = atten_calibration · P attenMap")):
        c = meta.get(key, 1.0)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not np.isfinite(c) or c <= 0:
            raise DataError(f"{where}: {key}: expected a finite number > 0 ({model}), found {c!r}")
    resize = meta["geometry"].get("resize")
    if resize is not None:
        from .resample import METHODS

        ok = (isinstance(resize, dict) and set(resize) == {"from", "method"} and resize["method"] in METHODS
              and isinstance(resize["from"], list) and len(resize["from"]) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize["from"]))
        if not ok:
            raise DataError(f"{where}: geometry.resize: expected {{\"from\": [n_radial, n_angles] as stored, "
                            f"\"method\": one of {list(METHODS)}}}, found {resize!r}")
    try:
        g = ParallelGeometry.from_dict(meta["geometry"])
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise DataError(f"{where}: geometry: not a valid ParallelGeometry dict ({e})") from None
    for name, value in g.to_dict().items():
        integral = name in ("image_size", "n_radial", "n_angles")
        if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
            raise DataError(f"{where}: geometry.{name}: expected {'an int' if integral else 'a number'}, "
                            f"found {value!r}")
    splits = meta["splits"]
    if not isinstance(splits, dict) or not splits:
        raise DataError(f"{where}: splits: expected a non-empty object {{name: N}}, found {splits!r}")
    for name, n in splits.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise DataError(f"{where}: splits: split name must be an identifier like 'train', found {name!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"{where}: splits.{name}: expected a sample count (int >= 0), found {n!r}")
        if n == 0:
            raise DataError(f"{where}: splits.{name}: split has 0 samples; drop it from splits instead")
    sc = meta["sino_channels"]
    if isinstance(sc, bool) or not isinstance(sc, int) or sc not in (1, 3):
        raise DataError(f"{where}: sino_channels: expected 1 or 3, found {meta['sino_channels']!r}")
    for key, check, what in (("units", lambda x: isinstance(x, str), "a string"),
                             ("scales", lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
                              and np.isfinite(x) and x > 0, "a finite number > 0")):
        table = meta[key]
        if not isinstance(table, dict):
            raise DataError(f"{where}: {key}: expected an object {{kind: value}}, found {table!r}")
        for kind, value in table.items():
            if kind not in KINDS:
                raise DataError(f"{where}: {key}.{kind}: unknown array kind (known: {', '.join(KINDS)})")
            if not check(value):
                raise DataError(f"{where}: {key}.{kind}: expected {what}, found {value!r}")
        for kind in REQUIRED_KINDS:
            if kind not in table:
                raise DataError(f"{where}: {key}: missing entry for {kind!r}")
    names = meta.get("names", {})
    if not isinstance(names, dict) or any(k not in RECON_KINDS for k in names):
        raise DataError(f"{where}: names: expected an object {{recon1|recon2: display name}}, found {names!r}")
    for kind, name in names.items():
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where}: names.{kind}: expected a display name (e.g. \"vendor OSEM\"), found {name!r}")
    for kind in RECON_KINDS:  # compared with actMap pixel by pixel: the same units or nothing
        unit = meta["units"].get(kind)
        if unit is not None and unit != meta["units"].get("actMap"):
            raise DataError(f"{where}: units.{kind}={unit!r} but units.actMap={meta['units'].get('actMap')!r}: a "
                            f"reconstruction is compared with actMap pixel by pixel, so store it in actMap's units")
    files = meta.get("files", {})
    if not isinstance(files, dict):
        raise DataError(f"{where}: files: expected an object {{kind: pattern}}, found {files!r}")
    for kind, pattern in files.items():
        if kind not in KINDS:
            raise DataError(f"{where}: files.{kind}: unknown array kind (known: {', '.join(KINDS)})")
        if (not isinstance(pattern, str) or "/" in pattern or "\\" in pattern
                or _pattern_fields(pattern) != {"split"}):
            raise DataError(f"{where}: files.{kind}: expected a file name whose only placeholder is '{{split}}' "
                            f"(braces elsewhere doubled: '{{{{' '}}}}'), found {pattern!r}")


def _pattern_fields(pattern: str) -> set | None:
    """The placeholders of a str.format pattern, None when it is not a valid one ("{0}", "{x!r}" → bad)."""
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError:
        return None
    fields = {name for _, name, spec, conv in parts if name is not None}
    if any((spec or conv) for _, name, spec, conv in parts if name is not None):
        return None
    return fields


def expected_shape(meta: dict, split: str, kind: str) -> tuple[tuple, str]:
    """(shape, where the numbers come from) of one array, from a checked dataset.json dict."""
    g, n, c = ParallelGeometry.from_dict(meta["geometry"]), meta["splits"][split], meta["sino_channels"]
    src_n = f"N from dataset.json splits.{split}"
    resize = meta["geometry"].get("resize")
    R, A = resize["from"] if resize else (g.n_radial, g.n_angles)
    size = "R x A from geometry.resize.from" if resize else "R x A from geometry.n_radial x n_angles"
    if kind == "actSino":
        return (n, c, R, A), f"{src_n}, C from sino_channels, {size}"
    if kind == "attenSino":
        return (n, 1, R, A), f"{src_n}, {size}"
    return (n, 1, g.image_size, g.image_size), f"{src_n}, image {g.image_size} from geometry.image_size"


class Dataset:
    """A validated dataset folder.  Arrays are read-only memory maps; nothing is loaded eagerly.

    Pickling (e.g. into DataLoader workers) drops the memory maps and reopens them on unpickle,
    so no array data is copied between processes.
    """

    def __init__(self, root, meta: dict, check_finite: bool = True):
        self.root = Path(root)
        self.meta = meta
        self.geometry = ParallelGeometry.from_dict(meta["geometry"])
        self.splits = tuple(meta["splits"])
        self.scales = dict(meta["scales"])
        self.units = dict(meta["units"])
        self.sino_channels = int(meta["sino_channels"])
        # how stored sinograms relate to the projector (applied on read) and the declared count scale
        self.orientation = meta["geometry"].get("orientation", "identity")
        self.angle_offset = int(meta["geometry"].get("angle_offset", 0))
        self.calibration = meta.get("calibration")  # None: not declared (frozenflow check-data fits it)
        self.atten_calibration = float(meta.get("atten_calibration", 1.0))  # attenSino in its file's units
        self.resize = meta["geometry"].get("resize")
        self._fingerprint = None
        self._arrays = {name: self._open_split(name, check_finite) for name in self.splits}
        for kind in OPTIONAL_KINDS:
            have = {name: getattr(self._arrays[name], kind) is not None for name in self.splits}
            if any(have.values()) and not all(have.values()):
                name = next(n for n, h in have.items() if not h)
                raise DataError(f"{self.path(name, kind)}: missing, but other splits have {kind} "
                                "(it must be present in all splits or none)")
        self.has_atten_sino = self._arrays[self.splits[0]].attenSino is not None
        self.has_lesions = self._arrays[self.splits[0]].lesionMap is not None
        names = meta.get("names", {})
        # the data's own reconstructions present: kind → display name
        self.recons = {k: names.get(k, k) for k in RECON_KINDS if getattr(self._arrays[self.splits[0]], k) is not None}
        unnamed = [k for k in names if k not in self.recons]
        if unnamed:
            raise DataError(f"{self.root / META_NAME}: names.{unnamed[0]} given but there are no {unnamed[0]} files "
                            f"({self.path(self.splits[0], unnamed[0]).name})")

    # ---------------------------------------------------------------- files
    def path(self, split: str, kind: str) -> Path:
        pattern = self.meta.get("files", {}).get(kind, DEFAULT_FILES[kind])
        return self.root / pattern.format(split=split)

    def _open_split(self, split: str, check_finite: bool) -> SplitArrays:
        arrays = {}
        for kind in KINDS:
            path = self.path(split, kind)
            if not path.exists():
                if kind in REQUIRED_KINDS:
                    raise DataError(f"{path}: missing (required {kind} array of split {split!r})")
                arrays[kind] = None
                continue
            arrays[kind] = self._open_array(path, split, kind, check_finite)
        return SplitArrays(n=self.meta["splits"][split], **arrays)

    def _open_array(self, path: Path, split: str, kind: str, check_finite: bool) -> np.ndarray:
        if not path.is_file():  # a FIFO or device would block the reader forever; a folder is no array
            raise DataError(f"{path}: not a regular file (a .npy array is expected here)")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # truncated file, bad header, object array, not an .npy at all
            reason = " ".join(str(e).split())  # keep the message on one line
            raise DataError(f"{path}: cannot open as .npy (truncated or corrupt?): {reason}") from None
        if not isinstance(arr, np.ndarray):
            raise DataError(f"{path}: expected a single .npy array, found {type(arr).__name__}")
        if arr.dtype.kind not in "fiu" or arr.dtype.itemsize > 8 or arr.dtype.byteorder not in "=|<":
            raise DataError(f"{path}: dtype {arr.dtype}: expected real floats or integers (little-endian; float32 "
                            f"is read as is, others are cast to float32 on read)")
        shape, why = expected_shape(self.meta, split, kind)
        if arr.shape != shape:
            raise DataError(f"{path}: expected shape {shape} ({why}), found {arr.shape}")
        if check_finite:  # every row, once per file version (the clean verdict is cached); other dtypes: in range
            scan_rows(path, arr, kind in NONNEGATIVE_KINDS, kind, DataError)
        return self._as_read(arr, kind)

    def _as_read(self, arr: np.ndarray, kind: str):
        """The file's array as the pipeline reads it: float32 (in the units of the forward model), at the
        working sinogram size, in the projector's orientation (``shared.data.resample``, ``.orientation``)."""
        from .resample import AsFloat32, Resampled

        factor = 1.0 / self.atten_calibration if kind == "attenSino" else 1.0
        out = arr if arr.dtype == np.float32 and factor == 1.0 else AsFloat32(arr, factor)
        if kind in SINO_KINDS and self.resize:
            out = Resampled(out, self.geometry.n_radial, self.geometry.n_angles, self.resize["method"])
        if kind in SINO_KINDS and (self.orientation != "identity" or self.angle_offset):
            out = OrientedArray(out, self.orientation, self.angle_offset)
        return out

    # ---------------------------------------------------------------- access
    def split(self, name: str) -> SplitArrays:
        if name not in self._arrays:
            raise DataError(f"{self.root / META_NAME}: split {name!r} not in splits "
                            f"(have: {', '.join(self.splits)})")
        return self._arrays[name]

    def __getitem__(self, name: str) -> SplitArrays:
        return self.split(name)

    def fingerprint(self) -> str:
        """sha256 of canonical dataset.json and every row of every file (``scan.row_digest``).

        Any edit — a row replaced, two rows swapped — changes it, so a store or checkpoint made from
        other data is refused. The row digests are computed in the open's row scan and cached per
        file version, so this costs one streaming pass per file version, then nothing.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.meta, sort_keys=True, separators=(",", ":")).encode())
            for split in sorted(self.splits):
                for kind in KINDS:
                    arr = getattr(self._arrays[split], kind)
                    if arr is None:
                        continue
                    h.update(f"|{split}/{kind}:{row_digest(self.path(split, kind), on_file(arr))}|".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __getstate__(self):
        return {"root": str(self.root), "meta": self.meta, "fingerprint": self._fingerprint}

    def __setstate__(self, state):
        # reopen the maps in the new process; shapes/dtypes are rechecked, values were checked already
        self.__init__(state["root"], state["meta"], check_finite=False)
        self._fingerprint = state["fingerprint"]

    def __repr__(self):
        sizes = ", ".join(f"{s}={n}" for s, n in self.meta["splits"].items())
        g = self.geometry
        return (f"Dataset({str(self.root)!r}, {sizes}, image {g.image_size}, sino {g.n_radial}x{g.n_angles}"
                f"x{self.sino_channels}ch, attenSino={'yes' if self.has_atten_sino else 'no'}"
                f"{', lesions' if self.has_lesions else ''}"
                f"{''.join(f', {k}={n!r}' if n != k else f', {k}' for k, n in self.recons.items())})")


def on_file(arr) -> np.ndarray:
    """The file's own array (memory map) under the views that read it (``Dataset._as_read``)."""
    while not isinstance(arr, np.ndarray):
        arr = arr.base
    return arr


def read_rows(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a memory-mapped .npy as a fresh array, read with a plain file read.

    Slicing the memory map instead leaves every touched page mapped and counted in the process's
    RSS, which then grows with the dataset in a one-pass job such as the feature export.
    """
    if not isinstance(arr, np.memmap) or arr.filename is None or not arr.flags.c_contiguous:
        return np.array(arr[start:stop])
    row = int(np.prod(arr.shape[1:], dtype=np.int64))
    stop = min(stop, arr.shape[0])
    out = np.fromfile(arr.filename, dtype=arr.dtype, count=max(0, stop - start) * row,
                      offset=arr.offset + start * row * arr.itemsize)
    return out.reshape((max(0, stop - start),) + arr.shape[1:])


def read_meta(folder) -> dict:
    path = Path(folder) / META_NAME
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: not a regular file (dataset.json is expected here)")
    if not path.is_file():
        raise DataError(f"{path}: missing (not a dataset folder?)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON: {' '.join(str(e).split())}") from None
    _check_meta(meta, str(path))
    return meta


def as_dataset(data) -> Dataset:
    """An opened :class:`Dataset` as is, or a folder opened (and validated)."""
    return data if isinstance(data, Dataset) else open_dataset(data)


def open_dataset(folder, check_finite: bool = True) -> Dataset:
    """Open and validate a dataset folder.

    ``check_finite`` rejects NaN/Inf anywhere, and negative values in actMap/attenMap, naming the
    file and row (``shared.data.scan``: every row, once per file version); switch it off only for
    data that was already checked.
    """
    return Dataset(folder, read_meta(folder), check_finite=check_finite)


def write_dataset(folder, geometry: ParallelGeometry, arrays: dict, units: dict, scales: dict,
                  extra: dict | None = None) -> Dataset:
    """Write ``arrays[split][kind]`` as a dataset folder and return it opened (and validated).

    Arrays are stored as float32 (other float dtypes are converted).  dataset.json is removed
    first and written last, so an interrupted write leaves a folder that refuses to open instead
    of one that mixes old and new files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / META_NAME
    splits, channels = {}, set()
    for split, kinds in arrays.items():
        missing = [k for k in REQUIRED_KINDS if k not in kinds]
        unknown = [k for k in kinds if k not in KINDS]
        if missing or unknown:
            raise DataError(f"write_dataset: split {split!r}: missing kinds {missing}, unknown kinds {unknown}")
        splits[split] = int(kinds["actSino"].shape[0])
        channels.add(int(kinds["actSino"].shape[1]))
    if len(channels) != 1:
        raise DataError(f"write_dataset: actSino channel counts differ between splits: {sorted(channels)}")
    meta = {
        "format_version": FORMAT_VERSION,
        "geometry": geometry.to_dict(),
        "splits": splits,
        "sino_channels": channels.pop(),
        "units": dict(units),
        "scales": {k: float(v) for k, v in scales.items()},
    }
    if extra is not None:
        meta["extra"] = extra
    _check_meta(meta, f"write_dataset({folder})")
    for split, kinds in arrays.items():  # refuse before touching the folder
        for kind, arr in kinds.items():
            shape, why = expected_shape(meta, split, kind)
            if tuple(arr.shape) != shape:
                raise DataError(f"write_dataset: arrays[{split!r}][{kind!r}]: expected shape {shape} ({why}), "
                                f"found {tuple(arr.shape)}")
    meta_path.unlink(missing_ok=True)
    for split, kinds in arrays.items():
        for kind in KINDS:  # a stale optional file from an earlier write would be picked up on open
            if kind not in kinds:
                (folder / DEFAULT_FILES[kind].format(split=split)).unlink(missing_ok=True)
        for kind, arr in kinds.items():
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            atomic_write(folder / DEFAULT_FILES[kind].format(split=split), lambda f, a=arr: np.save(f, a))
    text = json.dumps(meta, indent=2, sort_keys=False) + "\n"
    atomic_write(meta_path, text)
    return open_dataset(folder)
