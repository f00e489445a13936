"""
Tile inspection: the small JSON summary every later stage starts from.
"""

from __future__ import annotations

import logging

import numpy as np

from .noise import clipped_rms, sample_pixels
from .tileio import TileError, open_tile

__all__ = ["inspect_tile"]

log = logging.getLogger(__name__)


def inspect_tile(path, tile_id, *, max_pixels=4_000_000):
    """
    Validate a tile and summarise it without reading more than a sample of its pixels.

    Parameters
    ----------
    path : str or Path
        FITS tile.
    tile_id : str
    max_pixels : int
        Pixels sampled (strided, deterministic) for the NaN fraction and the noise.

    Returns
    -------
    dict
        ``tile_id``, ``path``, ``shape`` [ny, nx], ``bunit``, ``pixel_scale_arcsec``,
        ``beam`` {bmaj_arcsec, bmin_arcsec, bpa_deg, area_pix}, ``centre`` {ra_deg, dec_deg}
        (ICRS), ``ctype``, ``radesys``, ``nan_frac``, ``noise_mjy_beam`` (MAD-clipped rms),
        ``bytes`` (size of the image in memory as float32).

    Raises
    ------
    TileError
        Whatever `open_tile` rejects, and an image without a single finite pixel.
    """
    tile = open_tile(path)
    sample = sample_pixels(tile.data, max_pixels)
    finite = np.isfinite(sample)
    if not finite.any():
        raise TileError(path, "the image holds no finite pixel (all NaN/blank)")
    noise = clipped_rms(sample[finite])
    ny, nx = tile.shape
    centre = tile.wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
    info = {
        "tile_id": tile_id,
        "path": str(path),
        "shape": [ny, nx],
        "bunit": tile.bunit,
        "pixel_scale_arcsec": tile.pixel_scale,
        "beam": {
            "bmaj_arcsec": tile.bmaj,
            "bmin_arcsec": tile.bmin,
            "bpa_deg": tile.bpa,
            "area_pix": tile.beam_area,
        },
        "centre": {"ra_deg": float(centre.ra.deg), "dec_deg": float(centre.dec.deg)},
        "ctype": list(tile.wcs.wcs.ctype),
        "radesys": tile.wcs.wcs.radesys,
        "nan_frac": float(1 - finite.mean()),
        "noise_mjy_beam": noise * tile.mjy_per_unit,
        "bytes": int(ny * nx * 4),
    }
    log.info("%s: %dx%d px, beam %.1f\"x%.1f\", noise %.4f mJy/beam, NaN %.1f%%", tile_id, nx, ny,
             tile.bmaj, tile.bmin, info["noise_mjy_beam"], 100 * info["nan_frac"])
    return info

