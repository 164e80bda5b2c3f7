"""Seeded procedural renderer of H&E-like tissue with a ground-truth tumour mask.

:class:`TissueModel` draws a slide layout from a seed -- an irregular tissue outline on glass,
tumour nests, lymphocyte aggregates and fat lobules -- as low-frequency fields defined in
microns over the whole slide, and renders any level-0 region of it on demand:

* pink eosinophilic stroma with oriented collagen streaks and sparse spindle nuclei,
* purple tumour nests: crowded, large (10-14 um), irregular hyperchromatic nuclei on pale
  purple cytoplasm, cut by thin stromal septa,
* lymphocyte aggregates (a confounder, not cancer): dense small (6-8 um) dark round nuclei,
* fat: empty polygonal adipocytes (~70 um) with thin pink membranes,
* glass (about RGB 240) around the tissue.

Every random choice is a hash of (seed, integer lattice or cell index), evaluated at absolute
coordinates, so separately rendered tiles agree bit for bit with a larger region. The
anatomy is defined in microns: ``mpp`` changes the resolution, not the layout. Colour is
Beer-Lambert: optical density ``H * h_vec + E * e_vec`` (Macenko's reference stain vectors,
close to Ruifrok's), ``rgb = 255 * exp(-OD)`` through a lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "FAT",
    "LYMPHOCYTES",
    "STROMA",
    "TUMOUR",
    "TissueModel",
]

#: Codes of :meth:`TissueModel.class_map`.
BACKGROUND, STROMA, TUMOUR, LYMPHOCYTES, FAT = 0, 1, 2, 3, 4
CLASS_NAMES = ("background", "stroma", "tumour", "lymphocytes", "fat")

# Optical density per unit stain (R, G, B), unit vectors between Ruifrok's H (0.65, 0.70, 0.29)
# / E (0.07, 0.99, 0.11) and Macenko's reference (0.56, 0.72, 0.41) / (0.22, 0.80, 0.56):
# Ruifrok's eosin alone renders magenta, Macenko's lilac; this reads as scanned H&E pink.
H_OD = np.array([0.60, 0.72, 0.35], np.float32) / np.float32(np.sqrt(0.60**2 + 0.72**2 + 0.35**2))
E_OD = np.array([0.13, 0.87, 0.42], np.float32) / np.float32(np.sqrt(0.13**2 + 0.87**2 + 0.42**2))
GLASS_OD = 0.062  # 255 * exp(-0.062) = 240: the slide's empty glass

TISSUE_FRACTION = 0.8  # of the slide
LYMPH_FRACTION = 0.06  # of the tissue
FAT_FRACTION = 0.12  # of the tissue
# Lymphocyte aggregates and fat only where the nest field without its two finest octaves stays
# GAP_MARGIN below what could reach the tumour threshold: tens of microns off any nest.
GAP_MARGIN = 0.08
NEST_OCTAVES, NEST_GAIN = 5, 0.55
_NEST_AMPS = [NEST_GAIN**o for o in range(NEST_OCTAVES)]
_NEST_COARSE_SHARE = sum(_NEST_AMPS[:-2]) / sum(_NEST_AMPS)
NEST_FINE_AMP = 0.65 * sum(_NEST_AMPS[-2:]) / sum(_NEST_AMPS)
SEPTUM_HALF_WIDTH = 0.035  # in units of the septum noise field
FAT_CELL_UM = 70.0
N_ORIENT = 8  # collagen textures, one per 22.5 degrees
BLOCK = 1024  # region() renders in blocks of this many pixels a side (bounded memory)

_U64 = (1 << 64) - 1
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return x ^ (x >> 31)


def _mix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _S30)
    h = h * _M1
    h = h ^ (h >> _S27)
    h = h * _M2
    return h ^ (h >> _S31)


def _hash01(key: int, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float64 from (key, integer ix, integer iy); broadcasts ix against iy."""
    ux = np.asarray(ix, np.int64).astype(np.uint64)
    uy = np.asarray(iy, np.int64).astype(np.uint64)
    h = _mix64((ux * _K1) ^ np.uint64(key))
    h = _mix64(h + uy * _K2)
    return (h >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def _fade(t: np.ndarray) -> np.ndarray:
    return (t * t * t * (t * (t * 6.0 - 15.0) + 10.0)).astype(np.float32)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _noise_grid(key: int, xs: np.ndarray, ys: np.ndarray, scale: float) -> np.ndarray:
    """Value noise in [-1, 1] on the grid ys x xs (um), float32 (len(ys), len(xs))."""
    tx, ty = xs / scale, ys / scale
    fx, fy = np.floor(tx), np.floor(ty)
    sx, sy = _fade(tx - fx), _fade(ty - fy)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    gx = np.arange(ix.min(), ix.max() + 2)
    gy = np.arange(iy.min(), iy.max() + 2)
    g = (_hash01(key, gx[None, :], gy[:, None]) * 2.0 - 1.0).astype(np.float32)
    jx, jy = ix - gx[0], iy - gy[0]
    ax = _lerp(g[:, jx], g[:, jx + 1], sx)  # (len(gy), len(xs))
    return _lerp(ax[jy], ax[jy + 1], sy[:, None])


def _noise_pts(key: int, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """Value noise at points (same arithmetic as :func:`_noise_grid`, so the same values)."""
    tx, ty = x / scale, y / scale
    fx, fy = np.floor(tx), np.floor(ty)
    sx, sy = _fade(tx - fx), _fade(ty - fy)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)

    def g(dx: int, dy: int) -> np.ndarray:
        return (_hash01(key, ix + dx, iy + dy) * 2.0 - 1.0).astype(np.float32)

    a0 = _lerp(g(0, 0), g(1, 0), sx)
    a1 = _lerp(g(0, 1), g(1, 1), sx)
    return _lerp(a0, a1, sy)


def _tile(
    rng: np.random.Generator, size: int, mpp: float, *scales: tuple[float, float, float]
) -> np.ndarray:
    """A periodic (size x size px) Gaussian texture, zero mean, unit std, float32.

    Each ``(l_par, l_perp, theta)`` is an anisotropic Gaussian filter with correlation lengths
    in um along the direction ``theta`` and across it; the filters, each normalised to unit
    power, are summed and applied to one white noise.
    """
    spec = np.fft.rfft2(rng.standard_normal((size, size), dtype=np.float32))
    ky = np.fft.fftfreq(size, d=mpp).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(size, d=mpp).astype(np.float32)[None, :]
    total = None
    for l_par, l_perp, theta in scales:
        c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
        k_par = (kx * c + ky * s) * np.float32(l_par)
        k_perp = (ky * c - kx * s) * np.float32(l_perp)
        g = np.exp(np.float32(-2.0 * np.pi**2) * (k_par * k_par + k_perp * k_perp))
        g /= np.float32(np.sqrt(max(float(np.sum(g.astype(np.float64) ** 2)), 1e-30)))
        total = g if total is None else total + g
    t = np.fft.irfft2(spec * total, s=(size, size))
    t -= t.mean()
    return (t / max(float(t.std()), 1e-12)).astype(np.float32)


def _tile_px(um: float, mpp: float) -> int:
    return int(min(2048, max(64, round(um / mpp))))


@dataclass(frozen=True)
class _Pop:
    """A population of nuclei: one candidate per cell of a jittered grid."""

    salt: int
    cell: float  # grid spacing, um
    jitter: float  # fraction of the cell the centre may move
    r_lo: float  # semi-major axis range, um
    r_hi: float
    aspect_lo: float  # semi-major / semi-minor
    aspect_hi: float
    irregular: float  # amplitude of the 2nd/3rd harmonic contour wobble
    h_lo: float  # haematoxylin density range
    h_hi: float
    texture: float  # how much the chromatin texture modulates it
    rim: float  # extra density at the nuclear membrane
    giant: float = 0.0  # share of nuclei 1.35x larger

    @property
    def r_max(self) -> float:
        # The four contour harmonics reach +-1.7 * irregular each.
        return self.r_hi * (1.35 if self.giant else 1.0) * (1.0 + 6.8 * self.irregular)


_TUMOUR = _Pop(101, 11.5, 0.75, 5.0, 7.0, 1.0, 1.45, 0.05, 1.2, 1.9, 0.6, 0.25, giant=0.06)
_LYMPH = _Pop(102, 7.6, 0.55, 2.9, 3.7, 1.0, 1.12, 0.02, 2.4, 3.0, 0.15, 0.05)
_SPINDLE = _Pop(103, 24.0, 0.9, 4.5, 5.5, 2.2, 2.9, 0.04, 1.6, 2.2, 0.2, 0.05)


@dataclass
class _Points:
    """Fields and classes at scattered points (nucleus centres, adipocyte seeds)."""

    tissue: np.ndarray
    tumour: np.ndarray
    septum: np.ndarray
    lymph: np.ndarray  # inside an aggregate
    lymph_soft: np.ndarray  # 0..1 ramp over the aggregate's fringe (stroma side)
    near_tumour: np.ndarray  # inside the gap kept free of lymph aggregates and fat


class TissueModel:
    """A procedural H&E slide: layout drawn from ``seed``; any region rendered on demand.

    ``width`` x ``height`` are level-0 pixels of ``mpp`` microns. ``tumour_fraction`` is the
    target share of the tissue area inside the tumour mask.
    """

    def __init__(
        self,
        width: int,
        height: int,
        mpp: float = 1.0,
        seed: int = 0,
        tumour_fraction: float = 0.25,
    ) -> None:
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"slide size must be positive, got {width} x {height}")
        if not mpp > 0:
            raise ValueError(f"mpp must be positive, got {mpp}")
        if not 0.0 <= tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction must be in [0, 1], got {tumour_fraction}")
        self.width, self.height = int(width), int(height)
        self.mpp = float(mpp)
        self.seed = int(seed)
        self.tumour_fraction = float(tumour_fraction)
        self.width_um, self.height_um = self.width * self.mpp, self.height * self.mpp
        self._size_um = max(self.width_um, self.height_um)
        self._calibrate()
        self._make_textures()

    # ------------------------------------------------------------------ keys and fields
    def _key(self, salt: int) -> int:
        return _splitmix((self.seed & _U64) ^ _splitmix(salt))

    def _fbm(
        self,
        salt: int,
        x: np.ndarray,
        y: np.ndarray,
        scale: float,
        octaves: int,
        grid: bool,
        gain: float = 0.5,
    ) -> np.ndarray:
        return self._fbm_parts(salt, x, y, scale, octaves, grid, gain)[-1]

    def _fbm_parts(
        self,
        salt: int,
        x: np.ndarray,
        y: np.ndarray,
        scale: float,
        octaves: int,
        grid: bool,
        gain: float = 0.5,
    ) -> list[np.ndarray]:
        """Fractal value noise, normalised after each octave: [1 octave, 2 octaves, ...]."""
        noise = _noise_grid if grid else _noise_pts
        total, amp, norm, parts = None, 1.0, 0.0, []
        for o in range(octaves):
            n = noise(self._key(salt * 64 + o), x, y, scale / 2.0**o) * np.float32(amp)
            total = n if total is None else total + n
            norm += amp
            amp *= gain
            parts.append(total * np.float32(1.0 / norm))
        return parts

    def _tissue_field(self, x: np.ndarray, y: np.ndarray, grid: bool) -> np.ndarray:
        n = self._fbm(1, x, y, self._size_um / 2.5, 5, grid, gain=0.55)
        u = (2.0 * x / self.width_um - 1.0).astype(np.float32)
        v = (2.0 * y / self.height_um - 1.0).astype(np.float32)
        u2, v2 = u * u, v * v
        edge = (u2 * u2)[None, :] + (v2 * v2)[:, None] if grid else u2 * u2 + v2 * v2
        return n - np.float32(0.35) * edge

    def _nest_field(
        self, x: np.ndarray, y: np.ndarray, grid: bool, low: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Tumour nest field (tumour where > t_nest); with ``low``, also the field less its
        two finest octaves, which differ from it by at most NEST_FINE_AMP."""
        parts = self._fbm_parts(2, x, y, 380.0, NEST_OCTAVES, grid, gain=NEST_GAIN)
        far = np.float32(0.35) * self._fbm(3, x, y, 1500.0, 2, grid)
        full = np.float32(0.65) * parts[-1] + far
        if not low:
            return full
        return full, np.float32(0.65 * _NEST_COARSE_SHARE) * parts[-3] + far

    def _lymph_field(self, x: np.ndarray, y: np.ndarray, grid: bool) -> np.ndarray:
        return self._fbm(4, x, y, 260.0, 4, grid)

    def _fat_field(self, x: np.ndarray, y: np.ndarray, grid: bool) -> np.ndarray:
        return self._fbm(5, x, y, 700.0, 3, grid)

    def _septum_field(self, x: np.ndarray, y: np.ndarray, grid: bool) -> np.ndarray:
        return self._fbm(6, x, y, 90.0, 2, grid, gain=0.4)

    def _calibrate(self) -> None:
        """Thresholds from quantiles of the fields on a coarse grid over the whole slide."""
        step = max(6.0, self._size_um / 400.0)
        xs = (np.arange(max(2, int(np.ceil(self.width_um / step)))) + 0.5) * step
        ys = (np.arange(max(2, int(np.ceil(self.height_um / step)))) + 0.5) * step
        xs, ys = xs[xs < self.width_um], ys[ys < self.height_um]
        if xs.size == 0:
            xs = np.array([self.width_um / 2])
        if ys.size == 0:
            ys = np.array([self.height_um / 2])
        t = self._tissue_field(xs, ys, True)
        self.t_tissue = float(np.quantile(t, 1.0 - TISSUE_FRACTION))
        tissue = t > self.t_tissue
        if not tissue.any():
            tissue = t >= t.max()
        n, nl = self._nest_field(xs, ys, True, low=True)
        n, nl = n[tissue], nl[tissue]
        tf = self.tumour_fraction
        self.t_nest = float(np.quantile(n, 1.0 - tf)) if tf > 0 else np.inf
        if tf >= 1.0:
            self.t_nest = -np.inf
        self.t_free = self.t_nest - NEST_FINE_AMP - GAP_MARGIN
        free = nl < self.t_free
        lym = self._lymph_field(xs, ys, True)[tissue]
        self.t_lymph = self._threshold(lym[free], LYMPH_FRACTION * tissue.sum())
        free &= lym <= self.t_lymph
        fat = self._fat_field(xs, ys, True)[tissue]
        self.t_fat = self._threshold(fat[free], FAT_FRACTION * tissue.sum())

    @staticmethod
    def _threshold(values: np.ndarray, count: float) -> float:
        """The value above which ``count`` of ``values`` lie (inf if there are none)."""
        if values.size == 0 or count <= 0:
            return float("inf")
        q = 1.0 - min(1.0, count / values.size)
        return float(np.quantile(values, q))

    def _make_textures(self) -> None:
        rng = np.random.default_rng([self.seed & _U64, 7])
        mpp = self.mpp
        self._fibres = []
        for k in range(N_ORIENT):
            size = _tile_px(400.0 + 23.0 * k, mpp)
            theta = k * np.pi / N_ORIENT
            self._fibres.append(_tile(rng, size, mpp, (28.0, 1.4, theta), (70.0, 7.0, theta)))
        self._chromatin = _tile(rng, _tile_px(230.0, mpp), mpp, (0.7, 0.7, 0.0))
        self._mottle = _tile(rng, _tile_px(310.0, mpp), mpp, (3.0, 3.0, 0.0))
        self._grain = rng.standard_normal((1031, 1031)).astype(np.float32)
        od = np.arange(8192, dtype=np.float64) / 1024.0
        self._lut = np.clip(np.rint(255.0 * np.exp(-od)), 0, 255).astype(np.uint8)

    @staticmethod
    def _sample(tile: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Periodic texture at integer pixel columns ``px`` and rows ``py`` (a grid)."""
        size = tile.shape[0]
        return tile[(py % size)[:, None], (px % size)[None, :]]

    # ------------------------------------------------------------------ classes
    def _points(self, x: np.ndarray, y: np.ndarray) -> _Points:
        """The layout at scattered points (um), by the same rules as :meth:`_classes`."""
        tissue = self._tissue_field(x, y, False) > self.t_tissue
        tissue &= (x >= 0) & (x < self.width_um) & (y >= 0) & (y < self.height_um)
        nest, nl = self._nest_field(x, y, False, low=True)
        tumour = tissue & (nest > self.t_nest)
        septum = tumour & (np.abs(self._septum_field(x, y, False)) < SEPTUM_HALF_WIDTH)
        near = nl >= self.t_free
        lym = self._lymph_field(x, y, False)
        lymph = tissue & ~near & (lym > self.t_lymph)
        soft = np.clip((lym - (self.t_lymph - 0.05)) / 0.05, 0.0, 1.0)
        soft = np.where(tissue & ~near & ~tumour, soft, 0.0)
        return _Points(tissue, tumour, septum, lymph, soft, near)

    def _fat_cells(self, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, ...]:
        """Adipocyte seeds (um) and fat flags of the cells gy x gx."""
        c = FAT_CELL_UM
        sx = (gx[None, :] + 0.1 + 0.8 * _hash01(self._key(9001), gx[None, :], gy[:, None])) * c
        sy = (gy[:, None] + 0.1 + 0.8 * _hash01(self._key(9002), gx[None, :], gy[:, None])) * c
        p = self._points(sx, sy)
        fat = p.tissue & ~p.tumour & ~p.near_tumour & ~p.lymph
        fat &= self._fat_field(sx, sy, False) > self.t_fat
        return sx, sy, fat

    def _worley(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fat flag of the nearest adipocyte seed of each point (um; same-shape arrays)."""
        c = FAT_CELL_UM
        cx, cy = np.floor(x / c).astype(np.int64), np.floor(y / c).astype(np.int64)
        gx = np.arange(cx.min() - 1, cx.max() + 2)
        gy = np.arange(cy.min() - 1, cy.max() + 2)
        sxs, sys_, flags = self._fat_cells(gx, gy)
        if not flags.any():
            return np.zeros(x.shape, bool)
        x32, y32 = x.astype(np.float32), y.astype(np.float32)
        d1 = np.full(x.shape, np.inf, np.float32)
        f1 = np.zeros(x.shape, bool)
        for dy in (-1, 0, 1):
            ry = cy + (dy - gy[0])
            for dx in (-1, 0, 1):
                rx = cx + (dx - gx[0])
                ex = x32 - sxs[ry, rx].astype(np.float32)
                ey = y32 - sys_[ry, rx].astype(np.float32)
                d = ex * ex + ey * ey
                closer = d < d1
                f1 = np.where(closer, flags[ry, rx], f1)
                d1 = np.where(closer, d, d1)
        return f1

    def _worley_grid(
        self, xs: np.ndarray, ys: np.ndarray, membrane: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_worley` on the grid ys x xs, plus (with ``membrane``) the distance in um
        to the cell wall, (d2 - d1) / 2 of the two nearest seeds. A band of rows sharing a
        cell row at a time: 1-D seed look-ups instead of 2-D gathers."""
        c = FAT_CELL_UM
        f32 = np.float32
        cx, cy = np.floor(xs / c).astype(np.int64), np.floor(ys / c).astype(np.int64)
        gx = np.arange(cx.min() - 1, cx.max() + 2)
        gy = np.arange(cy.min() - 1, cy.max() + 2)
        sxs, sys_, flags = self._fat_cells(gx, gy)
        h, w = ys.size, xs.size
        isfat = np.zeros((h, w), bool)
        if not flags.any():
            return isfat, None
        wall = np.zeros((h, w), f32) if membrane else None
        x32, y32 = xs.astype(f32), ys.astype(f32)
        bounds = [0, *(np.flatnonzero(np.diff(cy)) + 1).tolist(), h]
        for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
            row0 = int(cy[r0] - gy[0])
            if not flags[row0 - 1 : row0 + 2].any():
                continue
            yb = y32[r0:r1, None]
            d1 = np.full((r1 - r0, w), np.inf, f32)
            d2 = np.full((r1 - r0, w), np.inf, f32)
            f1 = np.zeros((r1 - r0, w), bool)
            for row in (row0 - 1, row0, row0 + 1):
                for dx in (-1, 0, 1):
                    rx = cx + (dx - gx[0])
                    ex = x32 - sxs[row, rx].astype(f32)
                    ey = yb - sys_[row, rx].astype(f32)[None, :]
                    d = (ex * ex)[None, :] + ey * ey
                    closer = d < d1
                    if membrane:
                        d2 = np.where(closer, d1, np.minimum(d2, d))
                    f1 = np.where(closer, flags[row, rx][None, :], f1)
                    d1 = np.where(closer, d, d1)
            isfat[r0:r1] = f1
            if membrane:
                wall[r0:r1] = f32(0.5) * (np.sqrt(d2) - np.sqrt(d1))
        return isfat, wall

    def _classes(
        self, xs: np.ndarray, ys: np.ndarray, membrane: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Class map (uint8) on the grid ys x xs (um), the tissue mask and (with ``membrane``,
        where there is fat) the distance to the adipocyte walls."""
        tissue = self._tissue_field(xs, ys, True) > self.t_tissue
        tissue &= ((ys >= 0) & (ys < self.height_um))[:, None]
        tissue &= ((xs >= 0) & (xs < self.width_um))[None, :]
        nest, nl = self._nest_field(xs, ys, True, low=True)
        tumour = tissue & (nest > self.t_nest)
        cls = np.where(tissue, np.uint8(STROMA), np.uint8(BACKGROUND))
        cls[tumour] = TUMOUR
        free = tissue & (nl < self.t_free)
        lymph = free & (self._lymph_field(xs, ys, True) > self.t_lymph)
        cls[lymph] = LYMPHOCYTES
        wall = None
        if (free & ~lymph).any():
            isfat, wall = self._worley_grid(xs, ys, membrane)
            cls[isfat & free & ~lymph] = FAT
        return cls, tissue, wall

    def _whole(self, downsample: int, what: str) -> np.ndarray:
        """``what`` ("tissue", "tumour" or "class") of the whole slide at 1/``downsample``,
        sampled at the centres of the downsample x downsample blocks, in strips of rows."""
        ds = int(downsample)
        if ds < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        nx, ny = max(1, self.width // ds), max(1, self.height // ds)
        # Block centres in um; for ds = 1 exactly region()'s pixel centres (i + 0.5) * mpp.
        xs = (np.arange(nx, dtype=np.float64) * ds + 0.5 * ds) * self.mpp
        ys_all = (np.arange(ny, dtype=np.float64) * ds + 0.5 * ds) * self.mpp
        out = np.zeros((ny, nx), np.uint8 if what == "class" else bool)
        rows = max(1, (1 << 20) // nx)
        for r0 in range(0, ny, rows):
            ys = ys_all[r0 : r0 + rows]
            if what == "class":
                out[r0 : r0 + rows] = self._classes(xs, ys)[0]
                continue
            t = self._tissue_field(xs, ys, True) > self.t_tissue
            if what == "tumour":
                t &= self._nest_field(xs, ys, True) > self.t_nest
            out[r0 : r0 + rows] = t
        return out

    # ------------------------------------------------------------------ public masks
    def tumour_mask(self, downsample: int = 1) -> np.ndarray:
        """Tumour truth (bool) of the whole slide at level 0 / ``downsample``.

        Shape ``(height // downsample, width // downsample)``; each pixel samples the centre
        of its ``downsample`` x ``downsample`` block. No texture is rendered: cheap.
        """
        return self._whole(downsample, "tumour")

    def tissue_mask(self, downsample: int = 1) -> np.ndarray:
        """Tissue (bool, anything but glass; fat included) of the whole slide, like
        :meth:`tumour_mask`."""
        return self._whole(downsample, "tissue")

    def class_map(self, downsample: int = 1) -> np.ndarray:
        """Tissue classes (uint8: BACKGROUND, STROMA, TUMOUR, LYMPHOCYTES, FAT) of the whole
        slide, like :meth:`tumour_mask`."""
        return self._whole(downsample, "class")

    def lymph_mask(self, downsample: int = 1) -> np.ndarray:
        """Lymphocyte aggregates (bool; never tumour), like :meth:`tumour_mask`."""
        return self.class_map(downsample) == LYMPHOCYTES

    # ------------------------------------------------------------------ rendering
    def region(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (h, w, 3) and tumour mask bool (h, w) of the level-0 region.

        Regions rendered separately agree exactly with the same pixels of a larger region:
        all randomness is a function of (seed, absolute coordinates). Pixels outside the
        slide are glass.
        """
        x, y, w, h = int(x), int(y), int(w), int(h)
        if w < 1 or h < 1:
            raise ValueError(f"region size must be positive, got {w} x {h}")
        rgb = np.empty((h, w, 3), np.uint8)
        mask = np.empty((h, w), bool)
        for by in range(0, h, BLOCK):
            for bx in range(0, w, BLOCK):
                bw, bh = min(BLOCK, w - bx), min(BLOCK, h - by)
                c, m = self._render(x + bx, y + by, bw, bh)
                rgb[by : by + bh, bx : bx + bw] = c
                mask[by : by + bh, bx : bx + bw] = m
        return rgb, mask

    def _render(self, x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        mpp = self.mpp
        px = np.arange(x0, x0 + w, dtype=np.int64)
        py = np.arange(y0, y0 + h, dtype=np.int64)
        xs, ys = (px + 0.5) * mpp, (py + 0.5) * mpp
        cls, tissue, wall = self._classes(xs, ys, membrane=True)
        tumour = cls == TUMOUR
        f32 = np.float32
        septum = tumour & (np.abs(self._septum_field(xs, ys, True)) < f32(SEPTUM_HALF_WIDTH))

        # Stroma: collagen streaks along a slowly turning orientation (a doubled-angle field,
        # so no trigonometry per pixel), denser and looser patches.
        fib = self._fibre(xs, ys, px, py)
        dens = self._fbm(8, xs, ys, 160.0, 2, True)
        mottle = self._sample(self._mottle, px, py)
        # Eosin around 0.5, streaked +-25 %, with pale clefts between bundles.
        e_str = (f32(0.46) + f32(0.12) * dens) * (f32(1) + f32(0.2) * fib)
        cleft = np.clip((fib + f32(2.3)) * f32(1.4), f32(0.2), f32(1))
        e_str = e_str * cleft
        h_str = f32(0.09) * cleft
        e0 = np.where(tissue, e_str, f32(0))
        h0 = np.where(tissue, h_str, f32(0))
        nest_bg = tumour & ~septum
        e0 = np.where(nest_bg, f32(0.30) + f32(0.06) * mottle, e0)
        h0 = np.where(nest_bg, f32(0.24) + f32(0.05) * mottle, h0)
        lym = cls == LYMPHOCYTES
        e0 = np.where(lym, f32(0.16) + f32(0.04) * mottle, e0)
        h0 = np.where(lym, f32(0.16) + f32(0.04) * mottle, h0)
        fat = cls == FAT
        if fat.any():
            # Walls a little wavy and uneven: the distance to the Voronoi edge, perturbed.
            wall = wall + f32(0.25) * mottle
            memb = np.clip(f32(1.8) - wall / f32(max(0.6, 0.6 * mpp)), f32(0), f32(1))
            e0 = np.where(fat, f32(0.6) * memb, e0)
            h0 = np.where(fat, f32(0.04) * memb, h0)

        cov, hn, tn = self._nuclei(x0, y0, w, h, xs, ys)
        # Nuclei centred in tissue but hanging over its edge are cut there: glass stays glass.
        cov, hn, tn = (np.where(tissue, a, f32(0)) for a in (cov, hn, tn))
        chrom = self._sample(self._chromatin, px, py)
        keep = f32(1) - f32(0.65) * cov
        hh = h0 * keep + hn + tn * f32(0.35) * chrom
        # Vesicular tumour chromatin takes up some eosin (purple); lymphocytes stay blue-black.
        ee = e0 * keep + cov * np.where(tumour, f32(0.28), f32(0.06))
        grain = self._sample(self._grain, px, py)
        # Stain intensity drifts a little across the slide; grain on top. Glass has no stain,
        # so only its small neutral density (and a trace of grain) remains there.
        drift = f32(1) + f32(0.08) * self._fbm(11, xs, ys, 1500.0, 2, True)
        od = hh[..., None] * H_OD + ee[..., None] * E_OD
        od = od * (drift + f32(0.035) * grain)[..., None]
        od += f32(GLASS_OD) + f32(0.004) * grain[..., None]
        idx = np.clip(od * f32(1024.0) + f32(0.5), 0, self._lut.size - 1).astype(np.int32)
        return self._lut[idx], tumour

    def _fibre(self, xs: np.ndarray, ys: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Oriented collagen texture (zero mean, about unit std) on the block grid.

        N_ORIENT periodic textures streaked at k * 180 / N_ORIENT degrees, cross-faded by the
        local orientation: each weighs max(0, cos 2(t - t_k) - cos(360 / N_ORIENT)), so at
        most two blend at a pixel and the streaks turn smoothly.
        """
        c2, s2 = self._orientation(xs, ys, True)
        f32 = np.float32
        floor = f32(np.cos(np.pi / N_ORIENT * 2))
        acc, w2 = None, None
        for k, tile in enumerate(self._fibres):
            a = 2.0 * np.pi * k / N_ORIENT
            wk = np.maximum(c2 * f32(np.cos(a)) + s2 * f32(np.sin(a)) - floor, f32(0))
            if not wk.any():
                continue
            tk = self._sample(tile, px, py) * wk
            acc = tk if acc is None else acc + tk
            w2 = wk * wk if w2 is None else w2 + wk * wk
        return acc / np.sqrt(np.maximum(w2, f32(1e-12)))

    def _orientation(self, x: np.ndarray, y: np.ndarray, grid: bool) -> tuple[np.ndarray, ...]:
        """Unit doubled-angle vector (cos 2t, sin 2t) of the local collagen direction t."""
        a = self._fbm(9, x, y, 600.0, 3, grid)
        b = self._fbm(10, x, y, 600.0, 3, grid)
        n = np.sqrt(a * a + b * b) + np.float32(1e-6)
        return a / n, b / n

    # ------------------------------------------------------------------ nuclei
    def _candidates(
        self, pop: _Pop, lo: tuple[float, float], hi: tuple[float, float]
    ) -> dict[str, np.ndarray]:
        """Candidate nuclei of the cells covering [lo, hi] (um), in row-major cell order."""
        c = pop.cell
        gx = np.arange(int(np.floor(lo[0] / c)), int(np.floor(hi[0] / c)) + 1)
        gy = np.arange(int(np.floor(lo[1] / c)), int(np.floor(hi[1] / c)) + 1)
        ix = np.broadcast_to(gx[None, :], (gy.size, gx.size)).ravel()
        iy = np.broadcast_to(gy[:, None], (gy.size, gx.size)).ravel()

        def u(k: int) -> np.ndarray:
            return _hash01(self._key(pop.salt * 64 + k), ix, iy)

        j = pop.jitter
        out = {
            "x": (ix + 0.5 + j * (u(0) - 0.5)) * c,
            "y": (iy + 0.5 + j * (u(1) - 0.5)) * c,
            "keep": u(2),
        }
        r = pop.r_lo + (pop.r_hi - pop.r_lo) * u(3)
        if pop.giant:
            r = np.where(u(4) < pop.giant, r * 1.35, r)
        out["a"] = r
        out["b"] = r / (pop.aspect_lo + (pop.aspect_hi - pop.aspect_lo) * u(5))
        # Random direction without trigonometry: a normalised vector.
        dx, dy = u(6) - 0.5, u(7) - 0.5
        n = np.sqrt(dx * dx + dy * dy) + 1e-9
        out["ca"], out["sa"] = dx / n, dy / n
        for k, name in enumerate(("c2", "s2", "c3", "s3")):
            out[name] = pop.irregular * 2.0 * (u(8 + k) - 0.5) * 1.7
        out["h"] = pop.h_lo + (pop.h_hi - pop.h_lo) * u(12)
        return out

    def _nuclei(
        self, x0: int, y0: int, w: int, h: int, xs: np.ndarray, ys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nuclear coverage, haematoxylin density and its chromatin-textured share (float32,
        h x w) of the block."""
        cov = np.zeros(h * w, np.float64)
        hn = np.zeros(h * w, np.float64)
        tn = np.zeros(h * w, np.float64)
        for pop in (_TUMOUR, _LYMPH, _SPINDLE):
            m = pop.r_max + pop.cell
            nuc = self._candidates(pop, (xs[0] - m, ys[0] - m), (xs[-1] + m, ys[-1] + m))
            p = self._points(nuc["x"], nuc["y"])
            k = nuc["keep"]
            if pop is _TUMOUR:
                keep = p.tumour & ~p.septum & (k < 0.84)
            elif pop is _LYMPH:
                prob = np.where(p.lymph, 0.93, 0.006 + 0.6 * p.lymph_soft)
                prob = np.where(p.tumour, 0.035, np.where(p.tissue, prob, 0.0))
                keep = k < prob
            else:
                stroma = p.tissue & ~p.tumour & ~p.lymph
                keep = (stroma & (k < 0.32)) | (p.septum & (k < 0.25))
            sel = {key: v[keep] for key, v in nuc.items()}
            if pop is not _TUMOUR and keep.any():
                sel = self._drop_fat(sel)
            if pop is _SPINDLE and sel["x"].size:
                # Spindle nuclei lie along the collagen.
                c2, s2 = self._orientation(sel["x"], sel["y"], False)
                c2, s2 = c2.astype(np.float64), s2.astype(np.float64)
                ca = np.sqrt(np.maximum(0.5 * (1.0 + c2), 0.0))
                sa = np.sqrt(np.maximum(0.5 * (1.0 - c2), 0.0)) * np.where(s2 < 0, -1.0, 1.0)
                wob = 0.25 * (sel["keep"] / 0.32 - 0.5)
                ca, sa = ca - wob * sa, sa + wob * ca
                n = np.sqrt(ca * ca + sa * sa)
                sel["ca"], sel["sa"] = ca / n, sa / n
            if sel["x"].size:
                self._splat(pop, sel, x0, y0, w, h, cov, hn, tn)
        cov = np.minimum(cov, 1.0).astype(np.float32).reshape(h, w)
        hn = np.minimum(hn, 3.4).astype(np.float32).reshape(h, w)
        tn = np.minimum(tn, 3.4).astype(np.float32).reshape(h, w)
        return cov, hn, tn

    def _drop_fat(self, sel: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The nuclei not centred in fat (the class map's rule, at points)."""
        isfat = self._worley(sel["x"], sel["y"])
        if isfat.any():
            p = self._points(sel["x"], sel["y"])
            isfat &= p.tissue & ~p.tumour & ~p.near_tumour & ~p.lymph
        return {key: v[~isfat] for key, v in sel.items()}

    def _splat(
        self,
        pop: _Pop,
        nuc: dict[str, np.ndarray],
        x0: int,
        y0: int,
        w: int,
        h: int,
        cov: np.ndarray,
        hn: np.ndarray,
        tn: np.ndarray,
    ) -> None:
        """Add the nuclei's soft elliptical, wobbly-contoured footprints to the block.

        Sums run in the nuclei's global (row-major cell) order, so every block that holds a
        pixel adds the same terms in the same order: bit-identical tiles.
        """
        mpp = self.mpp
        f32 = np.float32
        rad = int(np.ceil(pop.r_max / mpp)) + 1
        off = np.arange(-rad, rad + 1, dtype=np.int64)
        qx = np.floor(nuc["x"] / mpp).astype(np.int64)[:, None] + off  # (n, B)
        qy = np.floor(nuc["y"] / mpp).astype(np.int64)[:, None] + off
        vx = (qx >= x0) & (qx < x0 + w)
        vy = (qy >= y0) & (qy < y0 + h)
        live = vx.any(1) & vy.any(1)
        if not live.any():
            return
        qx, qy, vx, vy = qx[live], qy[live], vx[live], vy[live]
        p = {k: v[live][:, None, None].astype(np.float32) for k, v in nuc.items()}
        dx = ((qx + 0.5) * mpp - nuc["x"][live][:, None]).astype(np.float32)[:, None, :]
        dy = ((qy + 0.5) * mpp - nuc["y"][live][:, None]).astype(np.float32)[:, :, None]
        un = (dx * p["ca"] + dy * p["sa"]) / p["a"]
        vn = (dy * p["ca"] - dx * p["sa"]) / p["b"]
        r = np.sqrt(un * un + vn * vn)
        inv = f32(1) / np.maximum(r, f32(1e-6))
        c, s = un * inv, vn * inv
        cc, ss = c * c, s * s
        rb = (
            f32(1)
            + p["c2"] * (cc - ss)
            + p["s2"] * (f32(2) * c * s)
            + p["c3"] * c * (f32(4) * cc - f32(3))
            + p["s3"] * s * (f32(3) - f32(4) * ss)
        )
        soft = f32(max(0.45, 0.7 * mpp))
        edge = np.clip((rb - r) * (p["b"] / soft) + f32(0.5), f32(0), f32(1))
        q = r / rb
        q2 = q * q
        prof = f32(1 - pop.rim) + f32(pop.rim) * q2 * q2
        valid = vy[:, :, None] & vx[:, None, :] & (edge > 0)
        flat = (qy - y0)[:, :, None] * w + (qx - x0)[:, None, :]
        idx = flat[valid]
        ev = edge[valid]
        cov += np.bincount(idx, weights=ev, minlength=cov.size)
        hv = (edge * prof * p["h"])[valid]
        hn += np.bincount(idx, weights=hv, minlength=hn.size)
        tn += np.bincount(idx, weights=hv * f32(pop.texture), minlength=tn.size)
