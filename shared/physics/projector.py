"""2D parallel-beam projector: forward (A) and adjoint (Aᵀ) as a torch operator.

The default backend asks astra-toolbox once for the sparse system matrix of its CPU 'linear'
projector (Joseph interpolation; ``model="line"`` gives astra's Siddon exact-intersection model,
which the synthetic-data simulator uses on a finer grid so that its data are not made by the
reconstruction model), caches it on disk keyed by a geometry hash, and applies it with a torch sparse CSR
matmul on the images' device (batched, differentiable, adjoint = transpose).  parallelproj is
used instead when it is importable and asked for (``backend="parallelproj"``).

Conventions: images are [B, 1, H, W] (row = y, column = x), sinograms are
[B, 1, n_radial, n_angles] with angles k·180°/n_angles; line integrals are in cm, so a μ-map in
1/cm projects to ∫μ dl.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from shared.files.atomic import atomic_write
from shared.files.cache import cache_dir
from shared.errors import InputError

MATRIX_FORMAT = 2  # bump when the cached matrix layout changes
MODELS = ("linear", "line")  # astra projector types: Joseph (reconstruction), Siddon (simulation)
_INT32_MAX = np.iinfo(np.int32).max


def default_cache_dir() -> Path:
    return cache_dir("projector")


@dataclasses.dataclass(frozen=True)
class ParallelGeometry:
    """Image and sinogram sampling; image and radial bins are centred on the rotation axis."""

    image_size: int
    pixel_mm: float
    n_radial: int
    n_angles: int
    radial_mm: float | None = None

    def __post_init__(self):
        if self.radial_mm is None:
            object.__setattr__(self, "radial_mm", float(self.pixel_mm))
        for name in ("image_size", "n_radial", "n_angles"):
            if int(getattr(self, name)) <= 0:
                raise InputError(f"ParallelGeometry.{name} must be positive, got {getattr(self, name)}")
        if not (math.isfinite(self.pixel_mm) and math.isfinite(self.radial_mm)) or self.pixel_mm <= 0 or self.radial_mm <= 0:
            raise InputError(f"ParallelGeometry: pixel_mm and radial_mm must be finite and positive, got {self.pixel_mm}, {self.radial_mm}")

    @property
    def angles_rad(self) -> np.ndarray:
        return np.arange(self.n_angles) * np.pi / self.n_angles

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    @property
    def sino_shape(self) -> tuple[int, int]:
        return (self.n_radial, self.n_angles)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ParallelGeometry":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def key(self, model: str = "linear") -> str:
        payload = json.dumps({**self.to_dict(), "format": MATRIX_FORMAT, "model": f"astra-{model}"}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise InputError(f"projector model must be one of {MODELS}, got {model!r}")


def astra_system_matrix(geometry: ParallelGeometry, model: str = "linear"):
    """scipy CSR matrix (n_radial·n_angles) × (H·W), rows ordered radial-major, values in cm."""
    import astra

    g = geometry
    vol = astra.create_vol_geom(g.image_size, g.image_size)
    # astra works in pixel units: detector spacing relative to the pixel, lengths come out in pixels.
    proj = astra.create_proj_geom("parallel", g.radial_mm / g.pixel_mm, g.n_radial, g.angles_rad)
    _check_model(model)
    pid = astra.create_projector(model, proj, vol)
    mid = astra.projector.matrix(pid)
    try:
        W = astra.matrix.get(mid).tocsr().astype(np.float32)
    finally:
        astra.matrix.delete(mid)
        astra.projector.delete(pid)
    W = W * np.float32(g.pixel_mm / 10.0)  # pixel units → cm
    # astra orders rows angle-major (angle, radial); reorder to (radial, angle) so a row-major
    # reshape gives the [n_radial, n_angles] sinogram directly.
    a, r = np.divmod(np.arange(g.n_angles * g.n_radial), g.n_radial)
    perm = np.empty_like(a)
    perm[r * g.n_angles + a] = np.arange(a.size)
    return W[perm].tocsr()


def _valid_system_matrix(W, geometry: ParallelGeometry) -> bool:
    """Cheap structural check of a (cached) matrix before torch trusts it without invariant checks."""
    g = geometry
    if W.shape != (g.n_radial * g.n_angles, g.image_size * g.image_size):
        return False
    try:
        W.check_format(full_check=True)  # indptr monotone, indices in range, lengths consistent
    except ValueError:
        return False
    return bool(np.isfinite(W.data).all())


def load_system_matrix(geometry: ParallelGeometry, cache_dir: str | Path | None = None, model: str = "linear"):
    """System matrix from the disk cache, computing and storing it atomically on a miss.

    A cache entry that cannot be read, or does not describe this geometry, is rebuilt.
    """
    import scipy.sparse as sp

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    _check_model(model)
    path = cache / f"astra_{model}_{geometry.key(model)}.npz"
    if path.exists():
        try:
            W = sp.load_npz(path).tocsr()
            if _valid_system_matrix(W, geometry):
                W.sum_duplicates()  # canonical: sorted column indices, no duplicates (no-op when already so)
                return W
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
        path.unlink(missing_ok=True)
    W = astra_system_matrix(geometry, model)
    W.sum_duplicates()
    # through the open handle: given a *name*, save_npz would append ".npz"
    atomic_write(path, lambda f: sp.save_npz(f, W, compressed=False))
    return W


def _torch_csr(W) -> torch.Tensor:
    """torch CSR copy of a canonical scipy CSR matrix (float32 values).

    int32 indices when they fit: the CPU kernel is about twice as fast with them (less memory traffic).
    The structure was checked on load (``_valid_system_matrix``), so torch's own invariant check is off.
    """
    idx = np.int32 if W.nnz <= _INT32_MAX and max(W.shape) <= _INT32_MAX else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(np.ascontiguousarray(W.indptr, dtype=idx)),
            torch.from_numpy(np.ascontiguousarray(W.indices, dtype=idx)),
            torch.from_numpy(np.ascontiguousarray(W.data, dtype=np.float32)),
            size=W.shape,
            check_invariants=False,
        )


class _SparseApply(torch.autograd.Function):
    """y = M x for x of shape [n, B]; the gradient is Mᵀ g (the other matrix of the pair)."""

    @staticmethod
    def forward(ctx, x, M, Mt):
        ctx.Mt = Mt
        return torch.sparse.mm(M, x)

    @staticmethod
    def backward(ctx, g):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return torch.sparse.mm(ctx.Mt, g.contiguous()), None, None


class _OperatorApply(torch.autograd.Function):
    """y = op(x) for a linear op given as a pair of callables (apply, adjoint) on whole tensors."""

    @staticmethod
    def forward(ctx, x, apply, adjoint):
        ctx.adjoint = adjoint
        return apply(x)

    @staticmethod
    def backward(ctx, g):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return ctx.adjoint(g.contiguous()), None, None


class Projector:
    """A and Aᵀ for one geometry.  ``forward(images[B,1,H,W]) -> sinograms[B,1,R,A]``.

    ``backend``: ``"matrix"`` (astra-toolbox system matrix, cached on disk, torch sparse matmul),
    ``"parallelproj"`` (needs parallelproj from conda-forge) or ``"auto"`` (= ``"matrix"``, the
    backend the reference numbers were produced with).  Both are differentiable; outputs have the
    input's dtype and device (the arithmetic is float32).  ``model`` picks the matrix backend's
    astra projector (see ``MODELS``); everything except the simulator uses the default.
    """

    BACKENDS = ("auto", "matrix", "parallelproj")

    def __init__(self, geometry: ParallelGeometry, backend: str = "auto", cache_dir: str | Path | None = None,
                 model: str = "linear"):
        self.geometry = geometry
        if backend not in self.BACKENDS:
            raise InputError(f"Projector backend must be one of {self.BACKENDS}, got {backend!r}")
        _check_model(model)
        if backend == "parallelproj" and model != "linear":
            raise InputError("Projector: model applies to backend='matrix' only")
        if backend == "auto":
            backend = "matrix"
        if backend == "parallelproj":
            self._impl = _ParallelprojBackend(geometry)
        else:
            self._impl = _MatrixBackend(geometry, cache_dir, model)
        self.backend = backend

    def _check(self, x: torch.Tensor, shape: tuple[int, int], what: str):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Projector.{what}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != shape:
            raise InputError(f"Projector.{what}: expected a tensor [B, 1, {shape[0]}, {shape[1]}], got {list(x.shape)}")
        if not x.is_floating_point():
            raise InputError(f"Projector.{what}: expected a floating-point tensor, got {x.dtype}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images, self.geometry.image_shape, "forward")
        return self._impl.forward(images)

    def adjoint(self, sinograms: torch.Tensor) -> torch.Tensor:
        self._check(sinograms, self.geometry.sino_shape, "adjoint")
        return self._impl.adjoint(sinograms)

    __call__ = forward
    A = forward
    A_adjoint = adjoint

    def system_matrix(self) -> torch.Tensor | None:
        """The CPU system matrix A (torch sparse CSR, rows = sinogram bins radial-major), or None for a
        backend without one (parallelproj)."""
        return self._impl.matrices[0] if isinstance(self._impl, _MatrixBackend) else None

    def angle_subset_matrices(self, columns: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """For each set of angle columns, the rows of A restricted to them and its transpose (torch CSR on
        CPU): what OSEM's subset iterations apply (1/S of a full one's work). None without a matrix."""
        W = self.system_matrix()
        if W is None:
            return None
        import scipy.sparse as sp

        g = self.geometry
        Wsp = sp.csr_matrix((W.values().numpy(), W.col_indices().numpy(), W.crow_indices().numpy()),
                            shape=tuple(W.shape))
        out = []
        for c in columns:
            rows = (np.arange(g.n_radial)[:, None] * g.n_angles + np.asarray(c)[None, :]).ravel()
            Ws = Wsp[rows].tocsr()
            Ws.sum_duplicates()
            Wst = Ws.T.tocsr()
            Wst.sum_duplicates()
            out.append((_torch_csr(Ws), _torch_csr(Wst)))
        return out


class _MatrixBackend:
    def __init__(self, geometry: ParallelGeometry, cache_dir, model: str = "linear"):
        self.g = geometry
        W = load_system_matrix(geometry, cache_dir, model)
        Wt = W.T.tocsr()
        Wt.sum_duplicates()  # sorted column indices
        self.matrices = (_torch_csr(W), _torch_csr(Wt))  # CPU copies; per device below
        self._by_device = {torch.device("cpu"): self.matrices}

    def _mats(self, device: torch.device):
        if device not in self._by_device:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)
                self._by_device[device] = tuple(m.to(device) for m in self.matrices)
        return self._by_device[device]

    def _apply(self, x: torch.Tensor, transpose: bool, out_shape: tuple[int, int]) -> torch.Tensor:
        W, Wt = self._mats(x.device)
        M, Mt = (Wt, W) if transpose else (W, Wt)
        B = x.shape[0]
        # Columns layout [n, B]: CSR × dense-with-B-columns is torch's fast sparse path (MKL on CPU,
        # cuSPARSE on GPU); dense × sparse (x @ Wᵀ) is an order of magnitude slower on CPU.
        cols = x.reshape(B, -1).to(torch.float32).t().contiguous()
        y = _SparseApply.apply(cols, M, Mt)
        return y.t().reshape(B, 1, *out_shape).to(x.dtype)

    def forward(self, images):
        return self._apply(images, False, self.g.sino_shape)

    def adjoint(self, sinos):
        return self._apply(sinos, True, self.g.image_shape)


class _ParallelprojBackend:
    """parallelproj (conda-forge only) as an alternative backend; same conventions, in cm.

    Uses ``parallelproj.ParallelViewProjector2D(image_shape, radial_positions, view_angles, radius,
    image_origin, voxel_size)`` (parallelproj ≥ 1.x; unchanged in 2.x): lengths in mm, image_origin
    = world coordinates of the centre of voxel [0, 0], the array namespace and device taken from
    ``radial_positions`` (torch tensors work through array-api-compat), float32 throughout.  Its
    LORs at view φ and radial position s are the points with x₀·cos φ − x₁·sin φ = s, where xᵢ is
    the world coordinate along image axis i; with image axis 0 = our column (x) and axis 1 = our
    row (y, pointing down) that is skimage's/astra's s = x·cos θ − y·sin θ.  So images are handed
    over transposed, and the [n_radial, n_views] output is already our sinogram layout.  The
    operator handles one image at a time; ``op(x)`` is A, ``op.adjoint(y)`` is Aᵀ.
    """

    def __init__(self, geometry: ParallelGeometry):
        try:
            import parallelproj
        except ImportError as e:
            raise ImportError("backend='parallelproj' needs the parallelproj package, which is distributed on "
                              "conda-forge only (conda install -c conda-forge parallelproj); "
                              "use backend='matrix' (astra-toolbox, the default) instead") from e
        self._pp = parallelproj
        self.g = geometry
        self._ops = {}

    def _op(self, device: torch.device):
        if device not in self._ops:
            g = self.g
            radial = torch.as_tensor((np.arange(g.n_radial) - (g.n_radial - 1) / 2) * g.radial_mm,
                                     dtype=torch.float32, device=device)
            angles = torch.as_tensor(g.angles_rad, dtype=torch.float32, device=device)
            half = (g.image_size - 1) / 2 * g.pixel_mm
            # LOR end points must lie outside the image: radius ≥ half the image diagonal (√2/2·N·d).
            radius = float(g.image_size * g.pixel_mm)
            self._ops[device] = self._pp.ParallelViewProjector2D(
                (g.image_size, g.image_size), radial, angles, radius, (-half, -half), (g.pixel_mm, g.pixel_mm))
        return self._ops[device]

    def _fwd(self, x):  # [B, 1, N, N] float32 → [B, 1, R, A], cm
        op = self._op(x.device)
        return torch.stack([op(im[0].detach().T.contiguous()) for im in x])[:, None] / 10.0

    def _adj(self, y):  # [B, 1, R, A] float32 → [B, 1, N, N]
        op = self._op(y.device)
        return torch.stack([op.adjoint(s[0].detach().contiguous()).T for s in y])[:, None].contiguous() / 10.0

    def forward(self, images):
        x = images.to(torch.float32)
        return _OperatorApply.apply(x, self._fwd, self._adj).to(images.dtype)

    def adjoint(self, sinos):
        y = sinos.to(torch.float32)
        return _OperatorApply.apply(y, self._adj, self._fwd).to(sinos.dtype)


# ---------------------------------------------------------------- padding to the network size
def pad_sinogram(sino: torch.Tensor, size: int, mode: str = "sino") -> torch.Tensor:
    """Pad [..., R, A] sinograms to [..., size, size], centred.

    Radial padding is zeros (outside the field of view).  Angle padding with ``mode="sino"`` wraps
    the angle axis using p(r, θ+180°) = p(−r, θ): wrapped columns are flipped radially, so the
    padded sinogram stays a continuous function of angle.  ``mode="zeros"`` pads with zeros.
    """
    R, A = sino.shape[-2:]
    if R > size or A > size:
        raise InputError(f"pad_sinogram: sinogram {R}x{A} is larger than the network size {size}")
    r0, a0 = (size - R) // 2, (size - A) // 2
    r1, a1 = size - R - r0, size - A - a0
    out = torch.nn.functional.pad(sino, (0, 0, r0, r1))
    if mode == "zeros":
        return torch.nn.functional.pad(out, (a0, a1, 0, 0))
    if mode != "sino":
        raise InputError(f"pad_sinogram: mode must be 'sino' or 'zeros', got {mode!r}")
    if a0 > A or a1 > A:
        raise InputError(f"pad_sinogram: cannot wrap {A} angles to {size} (needs at least size/3 angles)")
    # The radial flip must be about the sinogram's own centre: flip the padded column as a whole
    # only when the radial padding is symmetric; otherwise flip the unpadded data and re-pad.
    flipped = torch.nn.functional.pad(sino.flip(-2), (0, 0, r0, r1))
    left = flipped[..., A - a0:] if a0 else out[..., :0]
    right = flipped[..., :a1]
    return torch.cat([left, out, right], dim=-1)


def crop_sinogram(padded: torch.Tensor, n_radial: int, n_angles: int) -> torch.Tensor:
    """Inverse of :func:`pad_sinogram`: the centred [..., n_radial, n_angles] block."""
    S1, S2 = padded.shape[-2:]
    r0, a0 = (S1 - n_radial) // 2, (S2 - n_angles) // 2
    return padded[..., r0:r0 + n_radial, a0:a0 + n_angles]
