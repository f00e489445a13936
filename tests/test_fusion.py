"""Input fusion modes (skysift.fusion), each on an input whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from skysift import fusion


def test_log_minmax_by_hand():
    # x = (v - 0) / 4 = 0, .25, .5, 1 -> log10(1000 x + 1) / log10(1001); NaN -> 0
    img = np.array([[0.0, 1.0], [2.0, 4.0], [np.nan, 4.0]])
    k = math.log10(1001)
    expected = np.array([[0.0, math.log10(251) / k], [math.log10(501) / k, 1.0], [0.0, 1.0]])
    assert_allclose(fusion.log_minmax(img), expected, rtol=1e-6)
    assert_array_equal(fusion.log_minmax(np.full((3, 3), 7.0)), 0)  # constant: nothing to stretch


def test_radio_mode_is_d1_in_three_channels():
    radio = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
    out = fusion.fuse(radio, None, "radio")
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    for c in range(3):
        assert_allclose(out[c], fusion.log_minmax(radio))


def _gaussian(n=41, peak=100.0, sigma_px=4.0, centre=(20, 20)):
    yy, xx = np.mgrid[0:n, 0:n]
    return (peak * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma_px**2))).astype(np.float32)


def test_contours_lie_on_the_5_sigma_isophote():
    # peak 100 sigma, s = 4 px: the 5 sigma level is at r = 4 sqrt(2 ln 20) = 9.79 px
    img = _gaussian()
    contours, above = fusion.contour_mask(img, 1.0, max_levels=1)
    yy, xx = np.nonzero(contours)
    r = np.hypot(xx - 20, yy - 20)
    assert r.min() > 9.79 - 1.5 and r.max() <= 9.79
    assert above.sum() == pytest.approx(math.pi * 9.79**2, rel=0.05)
    # with the next levels (10, 20, 40, 80 sigma) there are 5 rings
    rings, _ = fusion.contour_mask(img, 1.0)
    radii = np.unique(np.round(np.hypot(*(np.nonzero(rings)[::-1] - np.array([[20], [20]]))) / 1.0))
    assert rings.sum() > contours.sum() and radii.min() < 3  # the 80 sigma ring is at 2.7 px


def test_d3_draws_green_contours_on_the_ir():
    radio = _gaussian()
    ir = np.full(radio.shape, 8.0, dtype=np.float32)
    ir[5, 30] = 100.0  # one IR source away from the radio
    out = fusion.fuse(radio, ir, "d3", sigma=1.0)
    contours, _ = fusion.contour_mask(radio, 1.0)
    assert_array_equal(out[:, contours], np.array([[0.0], [1.0], [0.0]]) * np.ones((1, contours.sum())))
    base = fusion.log_minmax(ir - 8.0)
    for c in range(3):
        assert_allclose(out[c][~contours], base[~contours])
    assert out[0, 5, 30] == pytest.approx(1.0)


def test_d4_fills_the_ir_outside_the_hull_of_the_contours():
    radio = _gaussian()
    ir = np.full(radio.shape, 8.0, dtype=np.float32)
    ir[5, 30], ir[20, 22] = 100.0, 50.0  # outside and inside the 5 sigma hull
    fill = [0.25, 0.5, 0.75]
    out = fusion.fuse(radio, ir, "d4", fill=fill, sigma=1.0)
    d3 = fusion.fuse(radio, ir, "d3", sigma=1.0)
    assert_allclose(out[:, 5, 30], fill)  # the unrelated IR source is gone
    assert_allclose(out[:, 20, 22], d3[:, 20, 22])  # the host candidate stays
    r = np.hypot(*np.mgrid[0:41, 0:41] - 20)
    assert_allclose(out[:, r > 11], np.array(fill)[:, None] * np.ones((1, (r > 11).sum())))
    assert_allclose(out[:, r < 9], d3[:, r < 9])
    with pytest.raises(ValueError, match="d4.*fill"):
        fusion.fuse(radio, ir, "d4")


def test_fill_values_are_channel_means():
    a = np.zeros((3, 2, 2))
    b = np.ones((3, 2, 2)) * np.array([1.0, 2.0, 3.0])[:, None, None]
    assert fusion.fill_values([a, b]) == pytest.approx([0.5, 1.0, 1.5])


def test_rgb_packs_radio_in_g_b_and_ir_in_r():
    # radio: noise sigma = 1; a 3x3 island at 10 and 20 sigma, a lone 1-pixel spike (dropped: < 5 px)
    rng = np.random.default_rng(0)
    radio = rng.normal(0, 1, (32, 32)).clip(-2.5, 2.5).astype(np.float32)
    radio[10:13, 10:13] = 10.0
    radio[11, 11] = 20.0
    radio[25, 25] = 50.0
    ir = np.full((32, 32), 8.0, dtype=np.float32) + rng.normal(0, 0.1, (32, 32)).astype(np.float32)
    ir[2:5, 20:22] = 30.0  # a 6-pixel IR island
    out = fusion.fuse(radio, ir, "rgb")
    # radio islands: log min-max over the island -> 10 sigma pixels 0, the 20 sigma one 1 (65535)
    assert out[2, 11, 11] == pytest.approx(1.0) and out[1, 11, 11] == pytest.approx(1.0)
    assert out[2, 10, 10] == 0 and out[1, 10, 10] == 0
    assert out[1:, 25, 25].max() == 0 and out[1:, 0, 0].max() == 0  # spike and noise dropped
    # the IR island is constant: 1 -> R = 65535 >> 8 = 255 -> 1.0; IR noise is not an island
    assert_allclose(out[0, 2:5, 20:22], 1.0)
    assert out[0, 20, 5] == 0
    # an intermediate radio value: t = (log v - log 10) / (log 20 - log 10), 16 bits split over B and G
    radio[12, 12] = 15.0
    out = fusion.fuse(radio, ir, "rgb")
    t = (math.log(15) - math.log(10)) / (math.log(20) - math.log(10))
    r16 = round(t * 65535)
    assert out[2, 12, 12] == pytest.approx((r16 >> 8) / 255) and out[1, 12, 12] == pytest.approx((r16 & 255) / 255)


@pytest.mark.parametrize("mode", ["d3", "d4", "rgb"])
@pytest.mark.parametrize("ir", [None, "nan"])
def test_missing_ir_falls_back_to_radio_with_a_warning(mode, ir):
    radio = _gaussian()
    ir_img = None if ir is None else np.full(radio.shape, np.nan, dtype=np.float32)
    with pytest.warns(fusion.MissingIRWarning, match="radio"):
        out = fusion.fuse(radio, ir_img, mode, fill=[0, 0, 0])
    assert_allclose(out, fusion.fuse(radio, None, "radio"))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="fusion mode must be one of"):
        fusion.fuse(np.zeros((4, 4)), None, "d2")
    with pytest.raises(ValueError, match="ir shape"):
        fusion.fuse(np.zeros((4, 4)), np.zeros((5, 5)), "d3")
