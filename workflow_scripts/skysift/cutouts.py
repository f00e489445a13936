"""
Overlapping cutout grid, ownership of sky area, and inference shards.

A tile of ``(ny, nx)`` pixels is covered by square cutouts of ``size`` pixels that overlap
their neighbours by ``overlap`` pixels. Each cutout *owns* a core: the cores are cut at the
middle of every overlap, so they tile the image exactly and every pixel (and every sky
position) belongs to exactly one cutout. A detection is kept only by the cutout owning its
centre, which removes the duplicates that the overlaps create.

Kept cutouts (not entirely NaN) are dealt round-robin into a fixed number of shards; each
shard is one HDF5 file with the radio cutouts and, when an IR image is given, the IR image
resampled onto each cutout's grid.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage

from .noise import clipped_rms

__all__ = [
    "CutoutGrid",
    "grid_starts",
    "core_edges",
    "make_grid",
    "owner_index",
    "cutout_wcs",
    "resample_to_cutout",
    "write_shards",
]

log = logging.getLogger(__name__)


def grid_starts(n, size, overlap):
    """
    First pixel of each cutout along one axis.

    Parameters
    ----------
    n : int
        Image length along the axis (pixels).
    size : int
        Cutout side (pixels).
    overlap : int
        Overlap between neighbouring cutouts (pixels), ``0 <= overlap < size``.

    Returns
    -------
    starts : 1D int ndarray
        Starts at ``0, step, 2 step, ...`` with ``step = size - overlap``; the last cutout is
        aligned with the image edge so none sticks out (a single cutout when ``n <= size``).
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size, got size={size!r}, overlap={overlap!r}")
    if n <= size:
        return np.array([0])
    step = size - overlap
    starts = list(range(0, n - size + 1, step))
    if starts[-1] + size < n:
        starts.append(n - size)
    return np.asarray(starts)


def core_edges(starts, size, n):
    """
    Edges of the owned cores along one axis: cutout ``i`` owns ``[edges[i], edges[i+1])``.

    Interior edges sit in the middle of each overlap, so each core lies inside its cutout.

    Returns
    -------
    edges : 1D int ndarray, ``len(starts) + 1``, with ``edges[0] = 0`` and ``edges[-1] = n``.
    """
    starts = np.asarray(starts)
    mids = (starts[:-1] + size + starts[1:]) // 2
    return np.concatenate([[0], mids, [n]]).astype(int)


@dataclass(frozen=True)
class CutoutGrid:
    """Cutout grid of one tile: starts and core edges along x and y."""

    ny: int
    nx: int
    size: int
    overlap: int
    x_starts: np.ndarray
    y_starts: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray

    @property
    def shape(self):
        """``(rows, cols)`` of the grid."""
        return len(self.y_starts), len(self.x_starts)


def make_grid(ny, nx, size=256, overlap=64):
    """
    The cutout grid of a ``(ny, nx)`` image.

    Returns
    -------
    CutoutGrid
    """
    xs, ys = grid_starts(nx, size, overlap), grid_starts(ny, size, overlap)
    return CutoutGrid(ny, nx, size, overlap, xs, ys, core_edges(xs, size, nx), core_edges(ys, size, ny))


def owner_index(grid, x, y):
    """
    Grid ``(row, col)`` of the cutout owning each 0-based pixel position.

    Parameters
    ----------
    grid : CutoutGrid
    x, y : array-like
        Tile pixel coordinates (pixel centres at integers; a position owns the pixel it rounds to).

    Returns
    -------
    row, col : int ndarrays, same shape as x; -1 outside the image.
    """
    xp = np.floor(np.asarray(x, dtype=float) + 0.5)
    yp = np.floor(np.asarray(y, dtype=float) + 0.5)
    col = np.searchsorted(grid.x_edges, xp, side="right") - 1
    row = np.searchsorted(grid.y_edges, yp, side="right") - 1
    outside = (xp < 0) | (xp >= grid.nx) | (yp < 0) | (yp >= grid.ny)
    return np.where(outside, -1, row), np.where(outside, -1, col)


def cutout_wcs(wcs, x_min, y_min):
    """Celestial WCS of a cutout whose first pixel is tile pixel ``(x_min, y_min)``."""
    w = wcs.deepcopy()
    w.wcs.crpix = w.wcs.crpix - np.array([x_min, y_min])
    return w


def _read_cutout(data, y0, x0, size):
    """``(size, size)`` float32 cutout, NaN-padded where it sticks out of the image."""
    out = np.full((size, size), np.nan, dtype=np.float32)
    block = data[y0 : y0 + size, x0 : x0 + size]
    out[: block.shape[0], : block.shape[1]] = block
    return out


def resample_to_cutout(image, image_wcs, tile_wcs, x_min, y_min, size, *, step=16):
    """
    An image (e.g. infrared) resampled onto the pixel grid of one cutout of a tile.

    Bilinear interpolation, as ``reproject.reproject_interp(order="bilinear")``, but the
    pixel-to-pixel mapping is computed exactly (through the sky, frames converted) only on a
    coarse grid every ``step`` pixels and interpolated in between: the mapping between two
    celestial projections is smooth on the scale of a cutout, and the full per-pixel
    transform is what makes reproject cost ~60 ms per 256 px cutout (4000 cutouts per EMU tile).
    tests/test_cutouts.py checks the result against reproject_interp.

    Parameters
    ----------
    image : 2D ndarray, ``(my, mx)``
        Image to resample (any unit; returned unchanged in unit).
    image_wcs, tile_wcs : `~astropy.wcs.WCS`
        Celestial WCS of the image and of the tile (0-based pixels).
    x_min, y_min : int
        Tile pixel of the cutout's first pixel.
    size : int
        Cutout side (pixels).
    step : int
        Spacing of the exactly transformed grid (pixels).

    Returns
    -------
    2D float32 ndarray, ``(size, size)``; NaN outside the image.
    """
    n = max(2, int(np.ceil((size - 1) / step)) + 1)
    knots = np.linspace(0, size - 1, n)
    gx, gy = np.meshgrid(knots + x_min, knots + y_min)
    ix, iy = image_wcs.world_to_pixel(tile_wcs.pixel_to_world(gx, gy))
    # bilinear upsampling of the knot grid is separable: rows then columns, two small matmuls
    lin = _linear_interpolation_matrix(n, size)
    lin_t = np.ascontiguousarray(lin.T)  # matmul on a transposed view skips BLAS: 20x slower
    px, py = np.dot(np.dot(lin, ix), lin_t), np.dot(np.dot(lin, iy), lin_t)
    out = ndimage.map_coordinates(image, [py, px], order=1, mode="constant", cval=np.nan)
    outside = (px < -0.5) | (py < -0.5) | (px > image.shape[1] - 0.5) | (py > image.shape[0] - 0.5)
    out[outside] = np.nan
    return out.astype(np.float32)


def _linear_interpolation_matrix(n, size):
    """``(size, n)`` matrix interpolating linearly from n evenly spaced knots to size points."""
    pos = np.arange(size) * (n - 1) / (size - 1)
    lo = np.minimum(np.floor(pos).astype(int), n - 2)
    w = pos - lo
    m = np.zeros((size, n))
    m[np.arange(size), lo] = 1 - w
    m[np.arange(size), lo + 1] = w
    return m


def _ir_reprojector(ir_path, tile_wcs, size):
    """A function (x_min, y_min) -> IR image on that cutout's grid, or None without IR."""
    if ir_path is None:
        return None
    from .tileio import open_tile

    ir = open_tile(ir_path, require_beam=False)
    ir_data = np.asarray(ir.data, dtype=np.float32)

    def reproject(x_min, y_min):
        return resample_to_cutout(ir_data, ir.wcs, tile_wcs, x_min, y_min, size)

    return reproject


def write_shards(tile, tile_id, shard_paths, *, size=256, overlap=64, ir_path=None,
                 compression=None, noise_stride=4):
    """
    Cut a tile into overlapping cutouts and write them into shard HDF5 files.

    Parameters
    ----------
    tile : `skysift.tileio.Tile`
        The radio tile (pixels read lazily, in Jy/beam).
    tile_id : str
    shard_paths : list of str
        One HDF5 path per shard; cutouts are dealt round-robin in row-major grid order.
    size, overlap : int
        Cutout side and overlap (pixels).
    ir_path : str, optional
        Infrared image (any grid with a celestial WCS), reprojected onto every cutout.
    compression : str or None
        h5py compression of the image datasets ("lzf", "gzip" or None). Noise-dominated
        float32 cutouts shrink by only ~8% with lzf, so the default is None.
    noise_stride : int
        Pixel stride of the sample used for each cutout's MAD-clipped noise.

    Returns
    -------
    pandas.DataFrame
        One row per kept cutout with the `skysift.columns.CUTOUTS` columns.

    Notes
    -----
    HDF5 layout of each shard: ``radio`` (n, size, size) float32 Jy/beam with NaN blanks,
    ``ir`` (n, size, size) float32 in the IR image's unit (only when ``attrs['has_ir']``),
    ``cutout_id`` (n,) str, ``x_min``/``y_min`` (n,) int32 tile pixels; attributes
    ``tile_id``, ``shard``, ``n_shards``, ``size``, ``overlap``, ``wcs_header`` (the tile's
    celestial header as a string), ``bmaj_arcsec``, ``bmin_arcsec``, ``bpa_deg``, ``bunit``.
    Files are written under temporary names and renamed at the end, so a failure leaves none.
    """
    from .tileio import celestial_header

    grid = make_grid(*tile.shape, size=size, overlap=overlap)
    n_shards = len(shard_paths)
    reproject = _ir_reprojector(ir_path, tile.wcs, size)
    tmp_paths = [Path(p).with_name(Path(p).name + ".tmp") for p in shard_paths]
    header = celestial_header(tile.header).tostring()
    files, writers = [], []
    try:
        for k, p in enumerate(tmp_paths):
            p.parent.mkdir(parents=True, exist_ok=True)
            f = h5py.File(p, "w")
            files.append(f)
            writers.append(_ShardWriter(f))
            _init_shard(f, size, compression, reproject is not None)
            f.attrs.update(
                tile_id=tile_id, shard=k, n_shards=n_shards, size=size, overlap=overlap,
                wcs_header=header, bmaj_arcsec=tile.bmaj or np.nan, bmin_arcsec=tile.bmin or np.nan,
                bpa_deg=tile.bpa or 0.0, bunit=tile.bunit, has_ir=reproject is not None,
            )
        rows = []
        mjy = tile.mjy_per_unit
        for r, y0 in enumerate(grid.y_starts):
            band = tile.read_rows(y0, min(y0 + size, grid.ny))  # one row of cutouts, not kept mapped
            for c, x0 in enumerate(grid.x_starts):
                cut = _read_cutout(band, 0, x0, size)
                finite = np.isfinite(cut)
                if not finite.any():
                    continue
                shard = len(rows) % n_shards
                cid = f"{tile_id}_y{r:03d}_x{c:03d}"
                ir = reproject(x0, y0) if reproject else None
                writers[shard].append(cut, ir, cid, x0, y0)
                rows.append(dict(
                    cutout_id=cid, tile_id=tile_id, shard=shard, row=r, col=c,
                    x_min=x0, x_max=x0 + size, y_min=y0, y_max=y0 + size,
                    core_x_min=grid.x_edges[c], core_x_max=grid.x_edges[c + 1],
                    core_y_min=grid.y_edges[r], core_y_max=grid.y_edges[r + 1],
                    nan_frac=float(1 - finite.mean()),
                    noise=clipped_rms(cut[::noise_stride, ::noise_stride]) * mjy,
                ))
        for w in writers:
            w.flush()
        for f in files:
            f.close()
        for tmp, final in zip(tmp_paths, shard_paths):
            os.replace(tmp, final)
    finally:
        for f in files:
            if f.id.valid:
                f.close()
        for tmp in tmp_paths:
            tmp.unlink(missing_ok=True)
    log.info("%s: %d x %d grid, %d cutouts kept in %d shards", tile_id, *grid.shape, len(rows), n_shards)
    from .columns import CUTOUTS

    table = pd.DataFrame(rows, columns=[c.name for c in CUTOUTS])
    if len(table):
        x_centre = table.x_min.to_numpy(float) + (size - 1) / 2
        y_centre = table.y_min.to_numpy(float) + (size - 1) / 2
        centre = tile.wcs.pixel_to_world(x_centre, y_centre).icrs
        table["ra_centre"], table["dec_centre"] = centre.ra.deg, centre.dec.deg
    return table


def _init_shard(f, size, compression, has_ir):
    """Create the resizable datasets of one shard file."""
    kw = dict(shape=(0, size, size), maxshape=(None, size, size), dtype="f4",
              chunks=(1, size, size), compression=compression)
    f.create_dataset("radio", **kw)
    if has_ir:
        f.create_dataset("ir", **kw)
    f.create_dataset("cutout_id", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
    for name in ("x_min", "y_min"):
        f.create_dataset(name, shape=(0,), maxshape=(None,), dtype="i4")


class _ShardWriter:
    """Appends cutouts to one shard file in blocks (resizing HDF5 datasets per cutout is slow)."""

    def __init__(self, f, block=32):
        self.f, self.block, self.rows = f, block, []

    def append(self, radio, ir, cid, x0, y0):
        self.rows.append((radio, ir, cid, x0, y0))
        if len(self.rows) >= self.block:
            self.flush()

    def flush(self):
        if not self.rows:
            return
        f, n, k = self.f, self.f["radio"].shape[0], len(self.rows)
        columns = dict(zip(("radio", "ir", "cutout_id", "x_min", "y_min"), zip(*self.rows)))
        for name, values in columns.items():
            if name in f:
                f[name].resize(n + k, axis=0)
                f[name][n : n + k] = np.stack(values) if name in ("radio", "ir") else list(values)
        self.rows = []
