"""
Quality regions: the square patches of a tile that image quality is judged on.

A tile of ``(ny, nx)`` pixels is cut into a grid of square regions of ``size`` pixels starting
at pixel ``(0, 0)``; the last row and column of regions are smaller when ``size`` does not
divide the tile. Regions do not overlap, so every pixel (and every sky position on the tile)
lies in exactly one region, and every component, source and cutout inherits the quality of the
region holding its position (a cutout: the centre of the core it owns).

Region ids are ``<tile_id>_q<row>_<col>`` (two digits at least). The *valid fraction* of a
region is its number of non-blank (finite) pixels over ``size**2``: a region cut by the tile
edge or lying on the NaN border of a mosaic has a small one, and its source counts are scaled
by it before classification.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["region_id", "region_grid", "region_index", "valid_fractions"]


def region_id(tile_id, row, col):
    """Identifier ``<tile_id>_q<row>_<col>`` of one region (row and col zero-padded to 2)."""
    return f"{tile_id}_q{int(row):02d}_{int(col):02d}"


def _check_size(size):
    if int(size) != size or size < 1:
        raise ValueError(f"region size must be a positive integer, got {size!r}")
    return int(size)


def region_grid(shape, size, tile_id):
    """
    The quality regions of a tile, row-major.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the tile (pixels).
    size : int
        Region side (pixels).
    tile_id : str

    Returns
    -------
    pandas.DataFrame
        One row per region, in row-major order (the row index is the region index of
        `region_index`): ``region_id``, ``tile_id``, ``row``, ``col`` and the half-open pixel
        bounds ``x_min``, ``x_max``, ``y_min``, ``y_max``.
    """
    size = _check_size(size)
    ny, nx = (int(v) for v in shape)
    rows, cols = -(-ny // size), -(-nx // size)
    r, c = np.divmod(np.arange(rows * cols), cols)
    return pd.DataFrame({
        "region_id": [region_id(tile_id, i, j) for i, j in zip(r, c)],
        "tile_id": tile_id,
        "row": r.astype(np.int32),
        "col": c.astype(np.int32),
        "x_min": (c * size).astype(np.int32),
        "x_max": np.minimum((c + 1) * size, nx).astype(np.int32),
        "y_min": (r * size).astype(np.int32),
        "y_max": np.minimum((r + 1) * size, ny).astype(np.int32),
    })


def region_index(x, y, shape, size):
    """
    Index (row-major, as in `region_grid`) of the region holding each pixel position.

    Parameters
    ----------
    x, y : array-like
        0-based tile pixel coordinates (a position belongs to the pixel it rounds to).
    shape : tuple of int
        ``(ny, nx)`` of the tile.
    size : int
        Region side (pixels).

    Returns
    -------
    int64 ndarray, same shape as ``x``; -1 for positions off the tile or not finite.
    """
    size = _check_size(size)
    ny, nx = (int(v) for v in shape)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    xp = np.floor(np.where(ok, x, -1.0) + 0.5)
    yp = np.floor(np.where(ok, y, -1.0) + 0.5)
    inside = ok & (xp >= 0) & (xp < nx) & (yp >= 0) & (yp < ny)
    cols = -(-nx // size)
    idx = (yp // size) * cols + (xp // size)
    return np.where(inside, idx, -1).astype(np.int64)


def valid_fractions(data, size, *, rows_per_strip=1024):
    """
    Fraction of non-blank pixels of each region, over the full region area ``size**2``.

    Parameters
    ----------
    data : 2D ndarray, ``(ny, nx)``
        Tile pixels (may be a memory map: it is read in strips of whole region rows).
    size : int
        Region side (pixels).
    rows_per_strip : int
        Pixel rows read at once (rounded to whole regions).

    Returns
    -------
    1D float64 ndarray, one value per region of `region_grid` (row-major), in ``[0, 1]``.
    """
    size = _check_size(size)
    ny, nx = data.shape
    rows, cols = -(-ny // size), -(-nx // size)
    counts = np.zeros((rows, cols), dtype=np.int64)
    step = max(1, rows_per_strip // size) * size
    col_edges = np.arange(0, nx, size)
    for r0 in range(0, ny, step):
        block = np.isfinite(np.asarray(data[r0 : r0 + step])).astype(np.int32)
        row_edges = np.arange(0, block.shape[0], size)
        per_row = np.add.reduceat(block, row_edges, axis=0)
        counts[r0 // size : r0 // size + len(row_edges)] = np.add.reduceat(per_row, col_edges, axis=1)
    return (counts / float(size * size)).ravel()


def locate_regions(x, y, regions):
    """
    Row of ``regions`` holding each pixel position, from the regions' own pixel bounds.

    Parameters
    ----------
    x, y : array-like
        0-based tile pixel coordinates.
    regions : pandas.DataFrame
        A region table (`region_grid` columns ``row``, ``col``, ``x_min``, ``x_max``,
        ``y_min``, ``y_max``), any row order.

    Returns
    -------
    int64 ndarray, same shape as ``x``: positional row index into ``regions``, -1 outside.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    out = np.full(x.shape, -1, dtype=np.int64)
    if len(regions) == 0 or x.size == 0:
        return out
    cols = regions.drop_duplicates("col").sort_values("col")
    rows = regions.drop_duplicates("row").sort_values("row")
    ok = np.isfinite(x) & np.isfinite(y)
    xp = np.floor(np.where(ok, x, -1.0) + 0.5)
    yp = np.floor(np.where(ok, y, -1.0) + 0.5)
    ci = np.searchsorted(cols["x_min"].to_numpy(), xp, side="right") - 1
    ri = np.searchsorted(rows["y_min"].to_numpy(), yp, side="right") - 1
    inside = ok & (ci >= 0) & (ri >= 0)
    inside &= xp < cols["x_max"].to_numpy()[np.clip(ci, 0, None)]
    inside &= yp < rows["y_max"].to_numpy()[np.clip(ri, 0, None)]
    lookup = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(regions["row"], regions["col"]))}
    col_ids, row_ids = cols["col"].to_numpy(), rows["row"].to_numpy()
    for k in np.nonzero(inside)[0]:
        out[k] = lookup.get((int(row_ids[ri[k]]), int(col_ids[ci[k]])), -1)
    return out


def quality_columns(index, quality):
    """
    The catalogue's quality columns (`skysift.columns.QUALITY`) for rows in given regions.

    Parameters
    ----------
    index : 1D int array
        Positional row of ``quality`` holding each catalogue row (-1: none).
    quality : pandas.DataFrame or None
        predict_quality output (`skysift.columns.QUALITY_REGIONS`); None: no quality yet.

    Returns
    -------
    dict of column name to array, every `skysift.columns.QUALITY` column.
    """
    from .columns import QUALITY

    index = np.asarray(index, dtype=np.int64)
    n = len(index)
    names = [c.name for c in QUALITY]
    if quality is None or len(quality) == 0:
        return {c: (np.full(n, None, dtype=object) if i < 2 else np.full(n, np.nan, dtype=np.float32))
                for i, c in enumerate(names)}
    has = index >= 0
    safe = np.where(has, index, 0)
    out = {}
    for c in names:
        src = quality["region_id"] if c == "quality_region" else quality[c]
        values = src.to_numpy()[safe]
        if src.dtype == object or c in ("quality_region", "quality_class"):
            out[c] = np.where(has, values.astype(object), None)
        else:
            out[c] = np.where(has, values.astype(np.float32), np.float32(np.nan))
    return out
