"""What a feature store holds, read once from its root attributes (docs/DESIGN.md §5).

``open_store(path) -> StoreManifest``: splits and their state, taps and their (C, H, W), the
teacher's hash and config, the dataset fingerprint and the export settings.  Everything outside
``feature_store`` asks the manifest; only this package touches Zarr.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from . import layout as L

# The attributes that make two exports interchangeable: a store differing in any is refused.
IDENTITY_KEYS = ("format_version", "teacher_sha256", "dataset_fingerprint", "levels", "taps", "dtype", "codec",
                 "shard_size", "range_size", "variants")
# The subset that identifies a store's content for the student (layout choices excluded).
CONTENT_KEYS = ("format_version", "teacher_sha256", "dataset_fingerprint", "levels", "dtype", "variants")


@dataclasses.dataclass(frozen=True)
class SplitState:
    n: int
    status: str  # "writing" | "complete"
    completed: str | None = None


@dataclasses.dataclass(frozen=True)
class StoreManifest:
    path: str
    attrs: dict  # the raw root attributes, for the few callers that print them whole
    splits: dict[str, SplitState]
    tap_shapes: dict[str, tuple[int, int, int]]

    # ------------------------------------------------------------- fields
    def _a(self, key, default=None):
        return self.attrs.get(key, default)

    format_version = property(lambda self: self._a("format_version"))
    teacher_sha256 = property(lambda self: self._a("teacher_sha256"))
    teacher_config = property(lambda self: self._a("teacher_config") or {})
    teacher_metrics = property(lambda self: self._a("teacher_metrics") or {})
    dataset_fingerprint = property(lambda self: self._a("dataset_fingerprint"))
    geometry = property(lambda self: self._a("geometry"))
    levels = property(lambda self: list(self._a("levels") or []))
    taps = property(lambda self: list(self._a("taps") or []))
    dtype = property(lambda self: self._a("dtype"))
    codec = property(lambda self: self._a("codec"))
    shard_size = property(lambda self: self._a("shard_size"))
    range_size = property(lambda self: self._a("range_size"))
    variants = property(lambda self: self._a("variants", "none"))
    created = property(lambda self: self._a("created"))

    @property
    def teacher_kind(self):
        """The frozen network's kind and direction (``shared.data.views.TeacherKind``; a store made before
        teacher kinds holds an attenuation IS teacher's features)."""
        from shared.data.views import TeacherKind

        return TeacherKind.of(self._a("teacher_kind"))

    @property
    def n_variants(self) -> int:
        return L.VARIANTS.get(self.variants, 1)

    def identity(self) -> dict:
        return {k: self.attrs.get(k) for k in IDENTITY_KEYS}

    @property
    def fingerprint(self) -> str:
        """Identifies the content: teacher, dataset and export settings (not the creation time or layout)."""
        return content_fingerprint(self.attrs)

    # ------------------------------------------------------------- checks
    def require(self, split: str, *, taps=None, teacher_sha256=None, dataset_fingerprint=None, n=None,
                variants=None, tap_shapes=None) -> SplitState:
        """Refuse a split that is not what the caller expects; one clear message per mismatch."""
        where = self.path
        if self.format_version != L.FORMAT_VERSION:
            raise L.StoreError(f"{where}: format_version {self.format_version!r}, this FrozenFlow reads "
                               f"{L.FORMAT_VERSION}")
        state = self.splits.get(split)
        if state is None:
            raise L.StoreError(f"{where}: has no split {split!r} (has: {', '.join(self.splits) or 'none'})")
        if state.status != "complete":
            raise L.StoreError(f"{where}: split {split!r} is incomplete (status {state.status!r}); "
                               f"rerun the export command to finish it")
        if teacher_sha256 is not None and self.teacher_sha256 != teacher_sha256:
            raise L.StoreError(f"{where}: made by teacher {str(self.teacher_sha256)[:12]}…, expected "
                               f"{teacher_sha256[:12]}…")
        if dataset_fingerprint is not None and self.dataset_fingerprint != dataset_fingerprint:
            raise L.StoreError(f"{where}: exported from another dataset (fingerprint "
                               f"{str(self.dataset_fingerprint)[:12]}…, this dataset {dataset_fingerprint[:12]}…)")
        missing = [t for t in (taps or []) if t not in self.taps]
        if missing:
            raise L.StoreError(f"{where}: missing tap(s) {missing} (store levels {self.levels}); "
                               f"re-export with --levels including them")
        if n is not None and state.n != n:
            raise L.StoreError(f"{where}: split {split!r} has {state.n} samples, the dataset has {n}")
        if variants is not None and self.variants != variants:
            raise L.StoreError(f"{where}: stored variants {self.variants!r}, expected {variants!r}")
        for tap, shape in (tap_shapes or {}).items():
            if tuple(self.tap_shapes.get(tap, ())) != tuple(shape):
                raise L.StoreError(f"{where}: {split}/{tap} has (C,H,W) {self.tap_shapes.get(tap)}, expected "
                                   f"{tuple(shape)}")
        return state


def content_fingerprint(attrs: dict) -> str:
    return hashlib.sha256(json.dumps({k: attrs.get(k) for k in CONTENT_KEYS}, sort_keys=True).encode()).hexdigest()


def manifest_of(root, store) -> StoreManifest:
    """The manifest of an already opened root group."""
    attrs = root.attrs.asdict()
    splits = {}
    for name, s in (attrs.get("splits") or {}).items():
        splits[name] = SplitState(n=int(s.get("n", 0)), status=str(s.get("status")), completed=s.get("completed"))
    shapes = {}
    for name in splits:
        if name in root:
            g = root[name]
            shapes = {t: tuple(int(x) for x in g[t].shape[-3:]) for t in attrs.get("taps", []) if t in g}
            break
    return StoreManifest(path=str(store), attrs=attrs, splits=splits, tap_shapes=shapes)


def open_store(store: str | Path) -> StoreManifest:
    """Read a store's manifest (read-only); a missing or foreign store raises StoreError naming the path."""
    return manifest_of(L.open_root(store, mode="r"), store)
