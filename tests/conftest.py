"""Shared fixtures: small FITS tiles with a real celestial WCS and known sources."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def casda_header(ny, nx, *, ra=328.5, dec=-55.0, pixel_arcsec=2.0, beam_arcsec=15.0, four_d=True):
    """A CASDA-like header: SIN projection, 2"/px, 15" beam, optional FREQ/STOKES axes."""
    h = fits.Header()
    h["NAXIS"] = 4 if four_d else 2
    h["NAXIS1"], h["NAXIS2"] = nx, ny
    h["CTYPE1"], h["CTYPE2"] = "RA---SIN", "DEC--SIN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"], h["CRPIX2"] = nx / 2 + 0.5, ny / 2 + 0.5
    h["CDELT1"], h["CDELT2"] = -pixel_arcsec / 3600, pixel_arcsec / 3600
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    if four_d:
        h["NAXIS3"], h["NAXIS4"] = 1, 1
        h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = "FREQ", 943.5e6, 288e6, 1.0, "Hz"
        h["CTYPE4"], h["CRVAL4"], h["CDELT4"], h["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
    h["RADESYS"], h["EQUINOX"] = "FK5", 2000.0
    h["BMAJ"] = h["BMIN"] = beam_arcsec / 3600
    h["BPA"] = 0.0
    h["BUNIT"] = "Jy/beam"
    return h


def gaussian_image(ny, nx, sources, *, beam_sigma_pix, rms=0.0, seed=0, correlated=True):
    """
    Image (Jy/beam) of point sources convolved with a circular beam, plus beam-correlated noise.

    sources : list of (x, y, peak_jy_per_beam)
    """
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.zeros((ny, nx))
    for x, y, peak in sources:
        img += peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * beam_sigma_pix**2))
    if rms:
        noise = np.random.default_rng(seed).standard_normal((ny, nx))
        if correlated:
            noise = gaussian_filter(noise, beam_sigma_pix) * 2 * np.sqrt(np.pi) * beam_sigma_pix
        img += rms * noise
    return img.astype(np.float32)


def write_tile(path, data, header):
    """Write a 2-D image as a 4-D (if the header says so) big-endian float32 FITS."""
    if header["NAXIS"] == 4:
        data = data[np.newaxis, np.newaxis]
    fits.PrimaryHDU(data.astype(">f4"), header).writeto(path, overwrite=True)
    return path


@pytest.fixture
def point_tile(tmp_path):
    """A 4-D 300 x 400 tile with 6 isolated point sources (S/N 8-200) and 25 uJy correlated noise."""
    beam_sigma = 7.5 / 2.3548
    sources = [(60, 50, 5e-3), (200, 80, 1e-3), (330, 60, 2e-4), (100, 220, 5e-4), (250, 200, 3e-3), (350, 250, 4e-4)]
    img = gaussian_image(300, 400, sources, beam_sigma_pix=beam_sigma, rms=25e-6, seed=3)
    path = write_tile(tmp_path / "tile.fits", img, casda_header(300, 400))
    return path, sources


SIM_FILES = ("radio.fits", "ir.fits", "tc.parquet", "ts.parquet", "meta.json")


def simulate_files(folder, tile_id, seed, settings, *, ra=150.0, dec=-30.0):
    """Simulate a tile into ``folder``: [radio, ir, truth components, truth sources, meta] paths."""
    from skysift import simulate as sim

    paths = [folder / n for n in SIM_FILES]
    sim.simulate_tile(tile_id, ra, dec, seed, settings, *paths)
    return paths
