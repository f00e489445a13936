"""Tile reading: degenerate axes, byte order, WCS, beam, and clear errors on bad input."""

import astropy.units as u
import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import casda_header, write_tile
from skysift.inspect import inspect_tile
from skysift.tileio import (TileError, beam_area_pixels, celestial_header, gaussian_sigma_pixels, native_float32,
                             open_tile, pixel_scale_arcsec)


@pytest.mark.parametrize("bmaj", [15 * u.arcsec, 0.25 * u.arcmin, 15 / 3600 * u.deg])
def test_beam_area_emu(bmaj):  # 15" beam, 2" pixels: pi * 15 * 15 / (4 ln 2) / 2**2 = 63.736
    assert_allclose(beam_area_pixels(bmaj, 15 * u.arcsec, 2 * u.arcsec), 63.736, rtol=1e-4)


def test_gaussian_sigma_pixels_on_a_shard_header():
    """A FWHM in arcsec to a Gaussian sigma in pixels, through the header string a shard stores."""
    from astropy.wcs import WCS

    header = celestial_header(casda_header(32, 32, pixel_arcsec=2.0))
    assert pixel_scale_arcsec(WCS(header)) == pytest.approx(2.0)
    assert gaussian_sigma_pixels(6.1, header.tostring()) == pytest.approx(6.1 / 2.35482 / 2.0, rel=1e-5)
    assert gaussian_sigma_pixels(15.0, celestial_header(casda_header(32, 32, pixel_arcsec=1.5)).tostring()) == \
        pytest.approx(15.0 / 2.35482 / 1.5, rel=1e-5)


def test_beam_area_rejects_nonpositive():
    with pytest.raises(ValueError, match="must be positive"):
        beam_area_pixels(0 * u.arcsec, 15 * u.arcsec, 2 * u.arcsec)


def test_open_tile_squeezes_4d_and_keeps_memmap(point_tile):
    path, _ = point_tile
    tile = open_tile(path)
    assert tile.shape == (300, 400)
    assert tile.data.dtype.byteorder == ">"  # no copy was made
    assert tile.wcs.naxis == 2 and tile.wcs.wcs.ctype[0] == "RA---SIN"
    assert_allclose([tile.bmaj, tile.bmin, tile.pixel_scale], [15, 15, 2], rtol=1e-9)
    assert tile.mjy_per_unit == 1000.0
    a = native_float32(tile.data)
    assert a.dtype == np.float32 and a.dtype.isnative and a.flags.c_contiguous


def test_pixel_to_sky_convention(point_tile):
    """0-based pixels: the reference pixel CRPIX (1-based) sits at index CRPIX - 1."""
    tile = open_tile(point_tile[0])
    c = tile.wcs.pixel_to_world(tile.header["CRPIX1"] - 1, tile.header["CRPIX2"] - 1)
    assert_allclose([c.ra.deg, c.dec.deg], [328.5, -55.0], atol=1e-10)


def _bad(tmp_path, name, **edit):
    h = casda_header(64, 64)
    for k in edit.pop("remove", []):
        del h[k]
    data = edit.pop("data", np.zeros((64, 64), np.float32))
    return write_tile(tmp_path / name, data, h)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.fits", "does not exist"),
        (lambda p: _bad(p, "nobeam.fits", remove=["BMAJ", "BMIN"]), "restoring beam"),
        (lambda p: _bad(p, "nowcs.fits", remove=["CTYPE1", "CTYPE2"]), "celestial WCS"),
        (lambda p: _bad(p, "nan.fits", data=np.full((64, 64), np.nan, np.float32)), "no finite pixel"),
    ],
)
def test_bad_tiles_name_file_and_problem(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(TileError, match=match) as err:
        inspect_tile(path, "bad")
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_fits(tmp_path, point_tile):
    raw = point_tile[0].read_bytes()
    bad = tmp_path / "truncated.fits"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TileError, match="truncated") as err:
        inspect_tile(bad, "bad")
    assert str(bad) in str(err.value)


def test_not_fits(tmp_path):
    bad = tmp_path / "notfits.fits"
    bad.write_text("this is not a FITS file\n" * 100)
    with pytest.raises(TileError, match="unreadable"):
        inspect_tile(bad, "bad")


def test_inspect_reports_noise_and_nan_fraction(tmp_path):
    rng = np.random.default_rng(1)
    img = (25e-6 * rng.standard_normal((200, 200))).astype(np.float32)
    img[:, :50] = np.nan
    info = inspect_tile(write_tile(tmp_path / "t.fits", img, casda_header(200, 200)), "t")
    assert info["shape"] == [200, 200]
    assert_allclose(info["nan_frac"], 0.25, atol=1e-9)
    assert_allclose(info["noise_mjy_beam"], 0.025, rtol=0.03)
    assert_allclose(info["beam"]["area_pix"], 63.736, rtol=1e-4)
