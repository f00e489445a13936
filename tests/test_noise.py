"""MAD-clipped noise (Gupta et al. 2023 section 3.1)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from skysift.noise import clipped_rms, sample_pixels


@pytest.mark.parametrize("rms", [1e-5, 25e-6, 3.0])
def test_pure_noise_gives_its_rms(rms):
    v = rms * np.random.default_rng(0).standard_normal(400_000)
    assert_allclose(clipped_rms(v), rms, rtol=0.01)


def test_sources_are_clipped():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(200_000)
    v[:4000] += rng.uniform(10, 1000, 4000)  # 2% bright source pixels
    assert np.std(v) > 10
    assert_allclose(clipped_rms(v), 1.0, rtol=0.03)


def test_nan_ignored_and_too_few_pixels():
    v = np.full(100, np.nan)
    assert np.isnan(clipped_rms(v))
    v[:50] = np.random.default_rng(2).standard_normal(50)
    assert np.isfinite(clipped_rms(v))


def test_sample_pixels_is_bounded_and_strided():
    a = np.arange(1000 * 1000, dtype=np.float32).reshape(1000, 1000)
    s = sample_pixels(a, max_pixels=10_000)
    assert s.size <= 10_000 and s[0] == 0 and s[1] == 10
