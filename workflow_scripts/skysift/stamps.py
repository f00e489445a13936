"""
Per-region SOM fingerprints: cluster hit counts and representative stamps (Teimoorinia et al. 2020).

For every quality region of a tile (`skysift.regions`) and every one of the K SOM clusters:

- the *count* of the region's components whose best-matching unit lies in the cluster (the
  seed's Input-2);
- one *stamp* of ``stamp_size`` x ``stamp_size`` pixels (25 in the seed) centred on the
  cluster's *representative* component in the region: the one with the highest ``snr``
  (ties: the first in the component table), so the choice is deterministic and the stamp
  shows the cluster's clearest member; an all-zero stamp where the cluster is empty (the
  seed's Input-1). Blank (NaN) pixels and pixels off the tile are 0.

Stamps are stored in mJy/beam, as cut from the tile; the classifier scales them.
The HDF5 file (one per tile) holds, per region row: ``region_id``, ``row``, ``col``, the pixel
bounds, ``valid_fraction``, ``n_components``, ``counts`` ``(n_regions, K)``, ``stamps``
``(n_regions, K, s, s)``, the representative ``component_id`` and pixel position; and as
attributes the tile id, sizes, the tile noise (mJy/beam), and the achieved compression ratio:
the tile image's bytes over the bytes the counts and stamps occupy in the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .noise import clipped_rms, sample_pixels
from .regions import region_grid, region_index, valid_fractions

__all__ = ["representatives", "cut_stamps", "build_stamps", "RegionStamps", "read_stamps"]

log = logging.getLogger(__name__)


def representatives(region, cluster, snr, n_regions, n_clusters):
    """
    Cluster counts and representative component of every (region, cluster).

    Parameters
    ----------
    region, cluster : 1D int arrays, ``(n_components,)``
        Region index (-1: none) and SOM cluster (-1: none) of each component.
    snr : 1D array, ``(n_components,)``
        Peak S/N; the representative is the component with the highest (NaN counts lowest).
    n_regions, n_clusters : int

    Returns
    -------
    counts : 2D int32 ndarray, ``(n_regions, n_clusters)``
    rep : 2D int64 ndarray, ``(n_regions, n_clusters)``
        Row index of the representative in the component table, -1 where the cluster is empty.
    """
    region = np.asarray(region, dtype=np.int64)
    cluster = np.asarray(cluster, dtype=np.int64)
    ok = (region >= 0) & (region < n_regions) & (cluster >= 0) & (cluster < n_clusters)
    key = np.where(ok, region * n_clusters + cluster, -1)
    counts = np.bincount(key[ok], minlength=n_regions * n_clusters).astype(np.int32)
    rep = np.full(n_regions * n_clusters, -1, dtype=np.int64)
    idx = np.nonzero(ok)[0]
    if idx.size:
        s = np.nan_to_num(np.asarray(snr, dtype=np.float64)[idx], nan=-np.inf)
        order = idx[np.lexsort((idx, -s, key[idx]))]  # by key, then highest snr, then first row
        first = np.concatenate([[True], key[order][1:] != key[order][:-1]])
        rep[key[order][first]] = order[first]
    return counts.reshape(n_regions, n_clusters), rep.reshape(n_regions, n_clusters)


def cut_stamps(data, x, y, size, scale=1.0, binning=1):
    """
    Square stamps centred on pixel positions, optionally binned.

    Parameters
    ----------
    data : 2D ndarray, ``(ny, nx)``
        Tile pixels (a memory map is fine: only the stamps are read).
    x, y : 1D arrays
        0-based pixel positions; each stamp is centred on the pixel the position rounds to.
    size : int
        Stamp side in (binned) stamp pixels (odd keeps the centre in the middle pixel).
    scale : float
        Factor applied to the pixels (e.g. Jy/beam to mJy/beam).
    binning : int
        Tile pixels per stamp pixel along each axis: a stamp covers ``size * binning`` tile
        pixels and each of its pixels is the mean of ``binning**2`` tile pixels (blanks as 0).

    Returns
    -------
    3D float32 ndarray, ``(n, size, size)``; NaN pixels and pixels off the tile are 0.
    """
    if binning < 1 or int(binning) != binning:
        raise ValueError(f"binning must be a positive integer, got {binning!r}")
    binning = int(binning)
    ny, nx = data.shape
    full = size * binning
    out = np.zeros((len(x), full, full), dtype=np.float32)
    half = full // 2
    xc = np.floor(np.asarray(x, dtype=float) + 0.5).astype(np.int64)
    yc = np.floor(np.asarray(y, dtype=float) + 0.5).astype(np.int64)
    for i in np.argsort(yc, kind="stable"):  # row order: sequential reads of a memory map
        x0, y0 = xc[i] - half, yc[i] - half
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + full, nx), min(y0 + full, ny)
        if sx0 >= sx1 or sy0 >= sy1:
            continue
        block = np.asarray(data[sy0:sy1, sx0:sx1], dtype=np.float32) * np.float32(scale)
        out[i, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = np.nan_to_num(block, nan=0.0)
    if binning > 1:
        out = out.reshape(len(x), size, binning, size, binning).mean(axis=(2, 4))
    return out


def build_stamps(tile, tile_id, components, mapping, out_path, *, region_size, stamp_size=25, n_clusters=20,
                 binning=1, noise_mjy_beam=None, compression="gzip"):
    """
    Counts and representative stamps of every quality region of a tile, written to HDF5.

    Parameters
    ----------
    tile : skysift.tileio.Tile
    tile_id : str
    components : pandas.DataFrame
        `skysift.columns.COMPONENTS` rows of the tile (x, y, snr, component_id are used).
    mapping : pandas.DataFrame
        Output of map_som for the same components (``component_id``, ``som_cluster``), same order.
    out_path : str or Path
        HDF5 file, written under a temporary name and renamed.
    region_size, stamp_size, n_clusters : int
    binning : int
        Tile pixels per stamp pixel (`cut_stamps`).
    noise_mjy_beam : float, optional
        Tile noise, stored for the classifier's stamp scale; by default the MAD-clipped rms of
        a strided sample of the tile's pixels, as inspect_tile measures it.
    compression : {"gzip", "lzf", "none"}

    Returns
    -------
    dict with n_regions, n_components, compression_ratio.
    """
    if len(mapping) != len(components) or (
            len(components) and not np.array_equal(mapping["component_id"].to_numpy(),
                                                   components["component_id"].to_numpy())):
        raise ValueError(f"{tile_id}: the SOM mapping does not match the component table row for row")
    if noise_mjy_beam is None:
        noise_mjy_beam = clipped_rms(sample_pixels(tile.data)) * tile.mjy_per_unit
    shape = tile.shape
    regions = region_grid(shape, region_size, tile_id)
    regions["valid_fraction"] = valid_fractions(tile.data, region_size)
    x = components["x"].to_numpy(dtype=float)
    y = components["y"].to_numpy(dtype=float)
    reg = region_index(x, y, shape, region_size)
    counts, rep = representatives(reg, mapping["som_cluster"].to_numpy(), components["snr"].to_numpy(),
                                  len(regions), n_clusters)
    regions["n_components"] = np.bincount(reg[reg >= 0], minlength=len(regions)).astype(np.int32)
    flat = rep.ravel()
    has = flat >= 0
    stamps = np.zeros((flat.size, stamp_size, stamp_size), dtype=np.float32)
    stamps[has] = cut_stamps(tile.data, x[flat[has]], y[flat[has]], stamp_size, tile.mjy_per_unit, binning)
    stamps = stamps.reshape(len(regions), n_clusters, stamp_size, stamp_size)
    ids = components["component_id"].to_numpy(dtype=object)
    rep_id = np.where(has, ids[np.maximum(flat, 0)] if len(ids) else "", "").reshape(rep.shape)
    rep_x = np.where(has, x[np.maximum(flat, 0)] if len(x) else np.nan, np.nan).reshape(rep.shape)
    rep_y = np.where(has, y[np.maximum(flat, 0)] if len(y) else np.nan, np.nan).reshape(rep.shape)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    kw = {} if compression in (None, "none") else {"compression": compression}
    if compression == "gzip":
        kw["compression_opts"] = 4
    tile_bytes = int(np.prod(shape)) * 4
    with h5py.File(tmp, "w") as f:
        for name in ("row", "col", "x_min", "x_max", "y_min", "y_max", "n_components"):
            f.create_dataset(name, data=regions[name].to_numpy(np.int32))
        f.create_dataset("valid_fraction", data=regions["valid_fraction"].to_numpy(np.float64))
        f.create_dataset("region_id", data=regions["region_id"].to_numpy(dtype=object), dtype=h5py.string_dtype())
        dc = f.create_dataset("counts", data=counts, **kw)
        chunks = (1, n_clusters, stamp_size, stamp_size) if len(regions) else None
        ds = f.create_dataset("stamps", data=stamps, chunks=chunks, **kw)
        ds.attrs["unit"] = "mJy/beam"
        f.create_dataset("representative_id", data=rep_id.astype(object), dtype=h5py.string_dtype())
        f.create_dataset("representative_x", data=rep_x)
        f.create_dataset("representative_y", data=rep_y)
        stored = int(dc.id.get_storage_size() + ds.id.get_storage_size())
        ratio = tile_bytes / max(stored, 1)
        f.attrs.update({"tile_id": tile_id, "region_size": int(region_size), "stamp_size": int(stamp_size),
                        "binning": int(binning),
                        "n_clusters": int(n_clusters), "noise_mjy_beam": float(noise_mjy_beam),
                        "tile_shape": np.asarray(shape, dtype=np.int64), "tile_bytes": tile_bytes,
                        "stored_bytes": stored, "compression_ratio": float(ratio),
                        "compression": str(compression), "representative_rule": "highest snr, ties: first row"})
    os.replace(tmp, out_path)
    log.info("%s: %d regions x %d clusters, %d components; %d stamps; tile %.1f MB -> %.2f MB stored "
             "(compression ratio %.0f)", tile_id, len(regions), n_clusters, len(components), int(has.sum()),
             tile_bytes / 1e6, stored / 1e6, ratio)
    return {"n_regions": len(regions), "n_components": len(components), "compression_ratio": ratio}


@dataclass
class RegionStamps:
    """
    The fingerprints of one tile's regions, read back from HDF5.

    Attributes
    ----------
    tile_id : str
    regions : pandas.DataFrame
        region_id, tile_id, row, col, bounds, valid_fraction, n_components.
    counts : 2D int32 ndarray, ``(n_regions, K)``
    stamps : 4D float32 ndarray, ``(n_regions, K, s, s)``, mJy/beam
    noise_mjy_beam : float
    attrs : dict
    """

    tile_id: str
    regions: pd.DataFrame
    counts: np.ndarray
    stamps: np.ndarray
    noise_mjy_beam: float
    attrs: dict


def read_stamps(path):
    """Read a file written by `build_stamps` as a `RegionStamps`."""
    with h5py.File(path, "r") as f:
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        regions = pd.DataFrame({
            "region_id": f["region_id"].asstr()[...],
            "tile_id": attrs["tile_id"],
            **{k: f[k][...] for k in ("row", "col", "x_min", "x_max", "y_min", "y_max")},
            "valid_fraction": f["valid_fraction"][...],
            "n_components": f["n_components"][...],
        })
        return RegionStamps(str(attrs["tile_id"]), regions, f["counts"][...], f["stamps"][...],
                            float(attrs["noise_mjy_beam"]), attrs)
