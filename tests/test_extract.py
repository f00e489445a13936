"""SEP extraction on hand-made tiles with known sources."""

import numpy as np
import pytest
from astropy.wcs import WCS
from numpy.testing import assert_allclose

from conftest import casda_header, gaussian_image, write_tile
from skysift.extract import ExtractSettings, extract_components, iau_names, position_angle_east_of_north
from skysift.tileio import open_tile

BEAM_SIGMA = 7.5 / 2.3548  # 15" beam at 2"/px


def test_point_sources_found_with_true_positions_and_fluxes(point_tile):
    path, sources = point_tile
    tile = open_tile(path)
    comp = extract_components(tile, "T", ExtractSettings(back_size=64))
    assert len(comp) == len(sources)  # no spurious detection in beam-correlated noise
    for x, y, peak in sources:
        d = np.hypot(comp.x - x, comp.y - y)
        row = comp.iloc[int(np.argmin(d))]
        snr = peak / 25e-6
        assert d.min() < 1.5 / np.sqrt(snr / 8)  # pixels; ~0.6 beam-sigma / (S/N / 8)^0.5
        # a point source: integrated flux (mJy) = peak (mJy/beam), within its stated error
        # (plus 2% for the wings outside the aperture and the max-pixel bias of the peak)
        assert abs(row.flux_int - peak * 1e3) < 4 * row.flux_int_err + 0.02 * peak * 1e3
        assert abs(row.flux_peak - peak * 1e3) < 4 * row.flux_peak_err + 0.02 * peak * 1e3
        assert 2 * row.flux_peak_err < row.flux_int_err < 5 * row.flux_peak_err
        assert_allclose(row.rms_image, 0.025, rtol=0.15)
        sky = tile.wcs.pixel_to_world(x, y).icrs
        assert sky.separation(__import__("astropy.coordinates", fromlist=["SkyCoord"]).SkyCoord(
            row.ra_deg_cont, row.dec_deg_cont, unit="deg")).arcsec < 3 / np.sqrt(snr / 8)
    assert (comp.maj_axis > 10).all() and (comp.maj_axis < 22).all()  # ~15" beam
    assert comp.component_id.is_unique and comp.component_id.str.startswith("T_c").all()


def test_matched_filter_is_unreliable_in_correlated_noise(tmp_path):
    """Why filter_kernel defaults to none: SEP's 3x3 filter assumes independent pixels."""
    img = gaussian_image(512, 512, [], beam_sigma_pix=BEAM_SIGMA, rms=25e-6, seed=11)
    tile = open_tile(write_tile(tmp_path / "noise.fits", img, casda_header(512, 512)))
    none = extract_components(tile, "N", ExtractSettings(back_size=64))
    default = extract_components(tile, "N", ExtractSettings(back_size=64, filter_kernel="default"))
    assert len(none) <= 1
    assert len(default) > len(none) + 3


def test_strips_give_the_same_catalogue_as_one_pass(tmp_path):
    rng = np.random.default_rng(5)
    sources = [(x, y, p) for x, y, p in zip(rng.uniform(10, 390, 40), rng.uniform(10, 890, 40),
                                             rng.uniform(3e-4, 5e-3, 40))]
    img = gaussian_image(900, 400, sources, beam_sigma_pix=BEAM_SIGMA, rms=25e-6, seed=6)
    tile = open_tile(write_tile(tmp_path / "t.fits", img, casda_header(900, 400)))
    whole = extract_components(tile, "T", ExtractSettings(back_size=64, strip_rows=4096))
    strips = extract_components(tile, "T", ExtractSettings(back_size=64, strip_rows=384, strip_overlap=128))
    assert len(whole) == len(strips)
    assert_allclose(strips.x, whole.x, atol=0.05)
    assert_allclose(strips.y, whole.y, atol=0.05)
    assert_allclose(strips.flux_int, whole.flux_int, rtol=0.05)


def test_empty_tile_gives_empty_table(tmp_path):
    img = np.zeros((128, 128), np.float32)
    img += np.random.default_rng(0).normal(0, 1e-6, img.shape).astype(np.float32) * 0
    tile = open_tile(write_tile(tmp_path / "e.fits", gaussian_image(128, 128, [], beam_sigma_pix=BEAM_SIGMA,
                                                                     rms=25e-6, seed=2), casda_header(128, 128)))
    comp = extract_components(tile, "E", ExtractSettings(back_size=32, thresh_sigma=50))
    assert len(comp) == 0 and "flux_int" in comp.columns


def test_nan_border_is_masked_and_flagged(tmp_path):
    img = gaussian_image(256, 256, [(35, 128, 2e-3), (180, 128, 2e-3)], beam_sigma_pix=BEAM_SIGMA, rms=25e-6)
    img[:, :30] = np.nan
    tile = open_tile(write_tile(tmp_path / "n.fits", img, casda_header(256, 256)))
    comp = extract_components(tile, "N", ExtractSettings(back_size=64))
    assert len(comp) == 2
    near_edge = comp.loc[comp.x.idxmin()]
    assert near_edge["flags"] & 1 and not comp.loc[comp.x.idxmax(), "flags"] & 1


@pytest.mark.parametrize("rotation", [0, 30, 75, 150])
def test_position_angle_east_of_north(rotation):
    """A pixel direction along +y is north when the image is not rotated; rotating the sky
    grid by `rotation` degrees (PC matrix, east = -x) moves that direction to PA = rotation."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [10.0, -30.0]
    w.wcs.crpix = [50, 50]
    w.wcs.cdelt = [-2 / 3600, 2 / 3600]
    t = np.deg2rad(rotation)
    w.wcs.pc = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    pa = position_angle_east_of_north(w, np.array([49.0]), np.array([49.0]), np.array([np.pi / 2]))
    assert_allclose(pa, rotation % 180, atol=0.01)


def test_iau_names_truncate():
    # 328.5 deg = 21h54m00.0s; -55.0 deg; 10.6846 deg = 00h42m44.3s, 41.2692 = +41d16m09s
    assert iau_names([328.5, 10.6846], [-55.0, 41.26917]) == ["J215400.0-550000", "J004244.3+411609"]


@pytest.mark.parametrize("q", [0.05, 0.3, 0.6])
def test_isophote_size_correction_recovers_gaussian_sigma(q):
    """Second moment of a sampled Gaussian inside its q-isophote, corrected, gives sigma."""
    from skysift.extract import isophote_size_correction

    sigma = 6.0
    yy, xx = np.mgrid[-60:61, -60:61].astype(float)
    img = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    inside = img >= q
    measured = np.sqrt((img[inside] * xx[inside] ** 2).sum() / img[inside].sum())
    assert measured < sigma * 0.99
    assert_allclose(measured * isophote_size_correction(q), sigma, rtol=0.02)


def test_residual_pass_finds_faint_source_in_bright_wing(tmp_path):
    """A S/N 12 source 0.9 beam from a S/N 2000 one has no peak of its own; the residual pass finds it."""
    bright, faint = (150.0, 150.0, 50e-3), (150.0 + 0.9 * 7.5, 150.0, 0.3e-3)
    img = gaussian_image(300, 300, [bright, faint], beam_sigma_pix=BEAM_SIGMA, rms=25e-6, seed=8)
    tile = open_tile(write_tile(tmp_path / "pair.fits", img, casda_header(300, 300)))
    one = extract_components(tile, "P", ExtractSettings(back_size=64, residual_pass=False))
    two = extract_components(tile, "P", ExtractSettings(back_size=64))
    assert len(one) == 1
    assert len(two) == 2
    found = two[(two["flags"] & 8) != 0]
    assert len(found) == 1
    assert np.hypot(found.x.iloc[0] - faint[0], found.y.iloc[0] - faint[1]) < 1.0  # pixels (2")
    assert abs(found.flux_int.iloc[0] - 0.3) < 4 * found.flux_int_err.iloc[0] + 0.03
    assert found.island_id.iloc[0] == two[(two["flags"] & 8) == 0].island_id.iloc[0]


def test_residual_pass_adds_nothing_around_isolated_bright_sources(tmp_path):
    """Model errors around bright sources must not become components (threshold + 2% of model)."""
    sources = [(80, 80, 0.2), (220, 80, 0.05), (80, 220, 0.01), (220, 220, 0.5)]
    img = gaussian_image(300, 300, sources, beam_sigma_pix=BEAM_SIGMA * 1.1, rms=25e-6, seed=9)
    tile = open_tile(write_tile(tmp_path / "bright.fits", img, casda_header(300, 300)))
    comp = extract_components(tile, "B", ExtractSettings(back_size=64))
    assert len(comp) == 4 and not (comp["flags"] & 8).any()


def test_fit_gaussian_recovers_known_profile():
    from skysift.extract import fit_gaussian

    yy, xx = np.mgrid[0:60, 0:60].astype(float)
    sx, sy = 3.5, 2.5
    img = 7.0 * np.exp(-((xx - 30.3) ** 2 / (2 * sx**2) + (yy - 28.6) ** 2 / (2 * sy**2)))
    (amp, xc, yc, cxx, cyy, cxy), companions = fit_gaussian(img, np.zeros_like(img, bool), 30, 29, 8.0, 3.0)
    assert companions == []
    assert_allclose([amp, xc, yc], [7.0, 30.3, 28.6], rtol=1e-4)
    assert_allclose([cxx, cyy, cxy], [1 / sx**2, 1 / sy**2, 0], atol=1e-5)


def test_fit_gaussian_rotated_with_companion():
    """A tilted elliptical Gaussian and a 30x fainter companion of the same shape, fitted jointly."""
    from skysift.extract import fit_gaussian

    yy, xx = np.mgrid[0:80, 0:80].astype(float)
    cxx, cyy, cxy = 1 / 4.0**2, 1 / 3.0**2, 0.02  # inverse-covariance coefficients

    def g(amp, x0, y0):
        dx, dy = xx - x0, yy - y0
        return amp * np.exp(-0.5 * (cxx * dx * dx + cyy * dy * dy + 2 * cxy * dx * dy))

    img = g(30.0, 38.2, 40.7) + g(1.0, 45.9, 41.3)
    main, (comp,) = fit_gaussian(img, np.zeros_like(img, bool), 38, 41, 6.0, 3.5, companions=[(46, 41)])
    assert_allclose(main, (30.0, 38.2, 40.7, cxx, cyy, cxy), rtol=1e-4, atol=1e-6)
    assert_allclose(comp, (1.0, 45.9, 41.3, cxx, cyy, cxy), rtol=1e-3, atol=1e-5)


def test_sep_limits_are_raised_and_flagged(tmp_path):
    """An object larger than SEP's default pixel stack (300k px) does not kill the extraction."""
    yy, xx = np.mgrid[0:1024, 0:1024]
    img = gaussian_image(1024, 1024, [(100, 100, 2e-3)], beam_sigma_pix=BEAM_SIGMA, rms=25e-6, seed=4)
    blob = (xx - 560) ** 2 + (yy - 560) ** 2 < 330**2  # ~342k pixels of diffuse emission
    img[blob] += 1e-3
    tile = open_tile(write_tile(tmp_path / "dense.fits", img, casda_header(1024, 1024)))
    # radio images are zero-mean: no background subtraction, or the blob would become background
    comp = extract_components(tile, "D", ExtractSettings(back_size=64, subtract_background=False, residual_pass=False))
    assert len(comp) >= 2
    assert (comp["flags"] & 4).all()  # the strip's limits were raised: every row says so
    big = comp.loc[comp.npix.idxmax()]
    assert big.npix > 300_000 and np.hypot(big.x - 560, big.y - 560) < 5
