"""Cutout grid: overlap, exact ownership of every pixel, shards."""

import h5py
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from conftest import casda_header, write_tile
from skysift.cutouts import core_edges, grid_starts, make_grid, owner_index, write_shards
from skysift.tileio import open_tile


@pytest.mark.parametrize("n, size, overlap, expected", [
    (1024, 256, 64, [0, 192, 384, 576, 768]),
    (1000, 256, 64, [0, 192, 384, 576, 744]),
    (256, 256, 64, [0]),
    (100, 256, 64, [0]),
])
def test_grid_starts(n, size, overlap, expected):
    assert_array_equal(grid_starts(n, size, overlap), expected)


@pytest.mark.parametrize("bad", [dict(size=0, overlap=0), dict(size=64, overlap=64), dict(size=64, overlap=-1)])
def test_grid_starts_rejects_bad_geometry(bad):
    with pytest.raises(ValueError, match="overlap"):
        grid_starts(1000, **bad)


@pytest.mark.parametrize("n", [300, 1000, 2048, 2049])
def test_cores_tile_the_axis_inside_their_cutouts(n):
    starts = grid_starts(n, 256, 64)
    edges = core_edges(starts, 256, n)
    assert edges[0] == 0 and edges[-1] == n and np.all(np.diff(edges) > 0)
    assert np.all(edges[:-1] >= starts) and np.all(edges[1:] <= np.minimum(starts + 256, n))


def test_every_pixel_has_exactly_one_owner():
    grid = make_grid(700, 1000, size=256, overlap=64)
    yy, xx = np.mgrid[0:700, 0:1000]
    row, col = owner_index(grid, xx.ravel(), yy.ravel())
    assert (row >= 0).all() and (col >= 0).all()
    # the owner's core contains the pixel, and the core lies within the cutout
    assert np.all(grid.x_edges[col] <= xx.ravel()) and np.all(xx.ravel() < grid.x_edges[col + 1])
    assert np.all(grid.x_starts[col] <= xx.ravel()) and np.all(xx.ravel() < grid.x_starts[col] + 256)
    counts = np.bincount(row * grid.shape[1] + col)
    core_areas = np.outer(np.diff(grid.y_edges), np.diff(grid.x_edges)).ravel()
    assert_array_equal(counts, core_areas)


def test_owner_outside_image():
    grid = make_grid(100, 100, size=64, overlap=16)
    # starts (0, 36), core edges (0, 50, 100): x = 49 -> col 0, x = 50 -> col 1
    row, col = owner_index(grid, [-1, 49, 50, 100], [50, 50, 50, 50])
    assert_array_equal(col, [-1, 0, 1, -1])
    assert_array_equal(row, [-1, 1, 1, -1])


def test_write_shards_drops_nan_cutouts_and_deals_round_robin(tmp_path):
    ny, nx = 600, 800
    img = np.random.default_rng(0).normal(0, 25e-6, (ny, nx)).astype(np.float32)
    img[:, :300] = np.nan  # the first column of cutouts is entirely blank
    path = write_tile(tmp_path / "t.fits", img, casda_header(ny, nx))
    shards = [str(tmp_path / f"shard-{k}.h5") for k in range(3)]
    table = write_shards(open_tile(path), "T", shards, size=256, overlap=64)
    grid = make_grid(ny, nx, 256, 64)
    n_total = grid.shape[0] * grid.shape[1]
    assert 0 < len(table) < n_total
    assert (table.x_max <= 300).sum() == 0  # all-NaN cutouts dropped
    assert list(table.shard) == [i % 3 for i in range(len(table))]
    assert ((table.noise > 0.02) & (table.noise < 0.03)).all()  # mJy/beam
    seen = []
    for k, s in enumerate(shards):
        with h5py.File(s) as f:
            assert f.attrs["tile_id"] == "T" and f.attrs["n_shards"] == 3 and not f.attrs["has_ir"]
            ids = [c.decode() for c in f["cutout_id"][:]]
            seen += ids
            for i, cid in enumerate(ids):
                row = table.set_index("cutout_id").loc[cid]
                assert f["x_min"][i] == row.x_min and f["y_min"][i] == row.y_min
                assert_array_equal(f["radio"][i], img[row.y_min:row.y_max, row.x_min:row.x_max])
    assert sorted(seen) == sorted(table.cutout_id)
    assert not list(tmp_path.glob("*.tmp"))


def test_resample_to_cutout_matches_reproject(tmp_path):
    """The coarse-grid mapping gives what reproject_interp (bilinear) gives, across frames."""
    from astropy.wcs import WCS
    from reproject import reproject_interp

    from skysift.cutouts import cutout_wcs, resample_to_cutout

    tile = open_tile(write_tile(tmp_path / "t.fits", np.zeros((600, 600), np.float32), casda_header(600, 600)))
    ir_wcs = WCS(naxis=2)  # TAN, ICRS, 1.375"/px, rotated by 23 deg: another grid and frame
    ir_wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ir_wcs.wcs.radesys = "ICRS"
    ir_wcs.wcs.crval = [328.52, -55.01]
    ir_wcs.wcs.crpix = [450, 450]
    ir_wcs.wcs.cdelt = [-1.375 / 3600, 1.375 / 3600]
    t = np.deg2rad(23)
    ir_wcs.wcs.pc = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    yy, xx = np.mgrid[0:900, 0:900]
    ir = (np.sin(xx / 17.0) * np.cos(yy / 23.0) + 0.001 * xx).astype(np.float32)  # smooth, no symmetry
    for x0, y0 in [(0, 0), (344, 200), (100, 344)]:
        ours = resample_to_cutout(ir, ir_wcs, tile.wcs, x0, y0, 256)
        ref, _ = reproject_interp((ir, ir_wcs), cutout_wcs(tile.wcs, x0, y0), shape_out=(256, 256), order="bilinear")
        both = np.isfinite(ours) & np.isfinite(ref)
        assert both.mean() > 0.5
        assert np.abs(ours[both] - ref[both]).max() < 2e-3  # the field spans +-1.9
        assert (np.isfinite(ours) == np.isfinite(ref)).mean() > 0.999
