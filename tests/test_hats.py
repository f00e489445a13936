"""HATS catalogues of the survey (skysift.hats), read back with LSDB."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord

from skysift.hats import build_hats_catalogue, read_catalogue_tables

# lsdb 0.11 and nested-pandas 0.7 still set mode.chained_assignment and pass inplace=, which
# pandas 3.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning",
                                        "ignore:The 'mode.chained_assignment' option:DeprecationWarning")
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The 'mode.chained_assignment' option")
    import lsdb


def _tile_table(tile_id, ra0, dec0, n, rng):
    """
    A per-tile sources table, some values null: ``n`` positions within 0.6 deg of (ra0, dec0),
    on a 60 arcsec grid jittered by up to 10 arcsec, so no two lie within 40 arcsec.
    """
    cells = rng.choice(72 * 72, size=n, replace=False)
    offset = (np.column_stack([cells % 72, cells // 72]) - 35.5) * 60.0 + rng.uniform(-10, 10, (n, 2))
    ra = np.mod(ra0 + offset[:, 0] / 3600.0 / np.cos(np.radians(dec0)), 360.0)
    dec = dec0 + offset[:, 1] / 3600.0
    bbox = pa.array([None if i % 3 == 0 else i for i in range(n)], type=pa.int32())
    morph = pa.array([None if i % 3 == 0 else "1C_1P" for i in range(n)], type=pa.string())
    return pa.table({"source_id": [f"{tile_id}_s{i:06d}" for i in range(n)], "tile_id": [tile_id] * n,
                     "ra": ra, "dec": dec, "flux_int": rng.uniform(0.1, 10, n).astype(np.float32),
                     "bbox_x_min": bbox, "morph_class": morph},
                    metadata={"tile_id": tile_id})


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """Two tiles far apart on the sky and one straddling RA 0, written as HATS."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("hats")
    paths = []
    for tile_id, ra0, dec0, n in (("T_2154-55", 328.5, -55.0, 400), ("T_0130+02", 22.5, 2.5, 300),
                                  ("T_0000-30", 0.2, -30.0, 300)):
        paths.append(folder / f"{tile_id}.parquet")
        pq.write_table(_tile_table(tile_id, ra0, dec0, n, rng), paths[-1])
    summary = build_hats_catalogue(paths, folder / "sources", table="sources", margin_arcsec=20.0,
                                   partition_rows=150)
    return paths, folder / "sources", summary


def test_every_row_once_with_its_types(survey):
    paths, hats, summary = survey
    expected = read_catalogue_tables(paths)
    assert summary["rows"] == len(expected) == 1000
    assert len(summary["partitions"]) > 3  # 150 rows a partition at most: the sky is split
    cat = lsdb.open_catalog(hats)
    assert cat.margin is not None  # the collection carries its margin catalogue
    got = cat.compute().sort_values("source_id").reset_index(drop=True)
    want = expected.sort_values("source_id").reset_index(drop=True)
    assert list(got.source_id) == list(want.source_id)  # none lost, none doubled
    np.testing.assert_array_equal(got.ra.to_numpy(float), want.ra.to_numpy(float))
    assert str(got.bbox_x_min.dtype).startswith("int32")  # nullable integers stay integers
    assert got.bbox_x_min.isna().sum() == want.bbox_x_min.isna().sum() > 0
    assert got.morph_class.isna().sum() == want.morph_class.isna().sum() > 0


def test_cone_search_returns_exactly_the_rows_within_the_radius(survey):
    paths, hats, _ = survey
    df = read_catalogue_tables(paths)
    for ra, dec in ((328.5, -55.0), (0.0, -30.0)):  # the second straddles RA 0
        sep = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(df.ra.to_numpy(float), df.dec.to_numpy(float),
                                                                unit="deg")).arcsec
        want = set(df.source_id[sep <= 1200.0])
        got = set(lsdb.open_catalog(hats).cone_search(ra=ra, dec=dec, radius_arcsec=1200.0).compute().source_id)
        assert got == want and len(want) > 20


def test_crossmatch_finds_counterparts_across_partition_edges(survey):
    """
    Every row of a copy shifted by 15 arcsec finds its original in the HATS catalogue: those
    across a partition edge through its 20 arcsec margin, lost without it.
    """
    paths, hats, _ = survey
    df = read_catalogue_tables(paths)
    moved = SkyCoord(df.ra.to_numpy(float), df.dec.to_numpy(float), unit="deg").directional_offset_by(
        45.0 * u.deg, 15.0 * u.arcsec)
    copy = lsdb.from_dataframe(pd.DataFrame({"name": df.source_id.to_numpy(str), "ra": moved.ra.deg,
                                             "dec": moved.dec.deg}),
                               ra_column="ra", dec_column="dec", partition_rows=100, margin_threshold=None)

    def match(catalogue):
        return copy.crossmatch(lsdb.open_catalog(catalogue), radius_arcsec=16.0, n_neighbors=1, suffixes=("_copy", ""),
                               suffix_method="overlapping_columns").compute()

    matched = match(hats)
    assert len(matched) == len(df)
    assert (matched["source_id"].to_numpy(str) == matched["name"].to_numpy(str)).all()
    assert np.allclose(matched["_dist_arcsec"].to_numpy(float), 15.0, atol=0.01)
    with pytest.warns(RuntimeWarning, match="does not have a margin cache"):
        lost = len(df) - len(match(hats / "skysift_sources"))  # the catalogue alone, without its margin
    assert 0 < lost < len(df) // 10
