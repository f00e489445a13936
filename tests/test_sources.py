"""Physical sources from detections and SEP components (skysift.sources): ownership, NMS, association, hosts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from conftest import casda_header
from skysift import sources as S
from skysift.columns import DETECTIONS, SOURCES, table_from_columns
from skysift.cutouts import make_grid
from skysift.masks import encode_mask


def grid_cutouts(ny, nx, size, overlap, tile_id="T"):
    """CUTOUTS-like rows (geometry and owned cores) of the grid of a (ny, nx) tile."""
    g = make_grid(ny, nx, size=size, overlap=overlap)
    rows = []
    for r, y0 in enumerate(g.y_starts):
        for c, x0 in enumerate(g.x_starts):
            rows.append(dict(cutout_id=f"{tile_id}_y{r:03d}_x{c:03d}", x_min=int(x0), x_max=int(x0) + size,
                             y_min=int(y0), y_max=int(y0) + size, core_x_min=int(g.x_edges[c]),
                             core_x_max=int(g.x_edges[c + 1]), core_y_min=int(g.y_edges[r]),
                             core_y_max=int(g.y_edges[r + 1])))
    return pd.DataFrame(rows)


def oracle_detections(masks, cutouts, *, finite=None, categories=("1C_1P", "2C_2P"), labels=None, scores=None,
                      hosts=None, min_pixels=4, tile_id="T"):
    """
    What a perfect detector reports on every cutout: each source's mask clipped to the cutout.

    masks : list of (x0, y0, bool mask) on the tile grid; hosts: list of (x, y) tile pixels.
    """
    rows = []
    for cut in cutouts.itertuples():
        size = cut.x_max - cut.x_min
        k = 0
        for j, (x0, y0, m) in enumerate(masks):
            full = np.zeros((size, size), dtype=bool)
            xs, xe = max(x0, cut.x_min), min(x0 + m.shape[1], cut.x_max)
            ys, ye = max(y0, cut.y_min), min(y0 + m.shape[0], cut.y_max)
            if xs >= xe or ys >= ye:
                continue
            full[ys - cut.y_min : ye - cut.y_min, xs - cut.x_min : xe - cut.x_min] = m[ys - y0 : ye - y0, xs - x0 : xe - x0]
            if finite is not None:
                full &= finite[cut.y_min : cut.y_max, cut.x_min : cut.x_max]
            if full.sum() < min_pixels:
                continue
            yy, xx = np.nonzero(full)
            bx0, by0, bx1, by1 = xx.min(), yy.min(), xx.max() + 1, yy.max() + 1
            label = labels[j] if labels is not None else 0
            score = scores[j] if scores is not None else 0.9
            probs = np.full(len(categories), (1 - score) / max(1, len(categories) - 1), dtype=np.float32)
            probs[label] = score
            rows.append({
                "detection_id": f"{cut.cutout_id}_d{k:03d}", "cutout_id": cut.cutout_id, "tile_id": tile_id,
                "box_x_min": bx0, "box_y_min": by0, "box_x_max": bx1, "box_y_max": by1,
                "tile_box_x_min": bx0 + cut.x_min, "tile_box_y_min": by0 + cut.y_min,
                "tile_box_x_max": bx1 + cut.x_min, "tile_box_y_max": by1 + cut.y_min,
                "morph_class": categories[label], "score": score, "class_probs": probs, "model_probs": probs,
                "n_peaks": -1,
                "mask_x_min": int(bx0 + cut.x_min), "mask_y_min": int(by0 + cut.y_min),
                "mask_rle": encode_mask(full[by0:by1, bx0:bx1]), "mask_npix": int(full.sum()),
                "edges": S.edge_contacts(full), "touches_nan": False,
                "host_x": hosts[j][0] if hosts is not None else np.nan,
                "host_y": hosts[j][1] if hosts is not None else np.nan, "host_score": 1.0,
            })
            k += 1
    return pd.DataFrame(rows, columns=[c.name for c in DETECTIONS])


def disc(r):
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= r * r


def double(length, width=5):
    m = np.zeros((width, length), dtype=bool)
    m[:, : length // 3] = m[:, -(length // 3) :] = True
    return m


def _sources_across_every_overlap(ny, nx, size, overlap):
    """Masks centred on every overlap strip, every 4-cutout corner and every core, of several sizes."""
    g = make_grid(ny, nx, size=size, overlap=overlap)
    xs = sorted(set(g.x_edges[1:-1].tolist()) | set(((g.x_edges[:-1] + g.x_edges[1:]) // 2).tolist()))
    ys = sorted(set(g.y_edges[1:-1].tolist()) | set(((g.y_edges[:-1] + g.y_edges[1:]) // 2).tolist()))
    shapes = [disc(2), disc(5), double(20), double(34).T, disc(9), double(40)]
    masks, k = [], 0
    for y in ys:
        for x in xs:
            for dx, dy in ((0, 0), (-3, 2)):  # on the core boundary and just off it
                m = shapes[k % len(shapes)]
                k += 1
                masks.append((x + dx - m.shape[1] // 2, y + dy - m.shape[0] // 2, m))
    # keep sources that do not touch each other or the tile edge (one truth per pixel)
    kept, taken = [], np.zeros((ny, nx), dtype=bool)
    for x0, y0, m in masks:
        if x0 < 1 or y0 < 1 or x0 + m.shape[1] >= nx - 1 or y0 + m.shape[0] >= ny - 1:
            continue
        grown = np.zeros((ny, nx), dtype=bool)
        grown[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        grown = np.pad(grown, 2)[:-4, :-4] | np.pad(grown, 2)[4:, 4:] | grown
        if (grown & taken).any():
            continue
        taken[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] |= m
        kept.append((x0, y0, m))
    return kept


@pytest.mark.parametrize("size, overlap", [(64, 16), (48, 24)])
def test_no_source_lost_or_doubled_across_cutout_overlaps(size, overlap):
    ny, nx = 176, 200
    cutouts = grid_cutouts(ny, nx, size, overlap)
    truth = _sources_across_every_overlap(ny, nx, size, overlap)
    assert len(truth) > 40
    det = oracle_detections(truth, cutouts, scores=np.linspace(0.6, 0.99, len(truth)))
    assert len(det) > 1.5 * len(truth)  # most sources are seen by several cutouts
    kept, masks = S.select_detections(det, cutouts)
    # each truth source is covered by exactly one kept detection, which holds all of it
    label = np.zeros((ny, nx), dtype=int)
    for j, (x0, y0, m) in enumerate(truth):
        label[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]][m] = j + 1
    hits = np.zeros(len(truth), dtype=int)
    for x0, y0, m in masks:
        under = label[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]][m]
        ids = np.unique(under[under > 0])
        assert len(ids) == 1, "a kept detection spans several sources"
        j = ids[0] - 1
        hits[j] += 1
        assert (under == j + 1).sum() == truth[j][2].sum(), f"source {j} is not whole"
    assert (hits == 1).all(), f"lost {np.nonzero(hits == 0)[0]}, doubled {np.nonzero(hits > 1)[0]}"
    assert len(kept) == len(truth) and not kept.cut.any()


def test_sources_own_their_components_and_leftovers_stand_alone():
    ny, nx = 100, 100
    cutouts = grid_cutouts(ny, nx, 64, 28)
    # a double across the cutout overlap (two components), a compact source, a low-score detection
    dbl = (30, 40, double(30))
    cmp = (70, 70, disc(3))
    weak = (10, 80, disc(3))
    det = oracle_detections([dbl, cmp, weak], cutouts, labels=[1, 0, 0], scores=[0.95, 0.7, 0.3])
    comps = pd.DataFrame({
        "component_id": ["c0", "c1", "c2", "c3", "c4"], "island_id": ["i0", "i1", "i2", "i3", "i4"],
        "x": [34.0, 55.0, 73.0, 13.0, 90.0], "y": [42.0, 42.0, 73.0, 83.0, 10.0],
        "flux_int": [2.0, 1.0, 5.0, 0.5, 0.7], "flux_peak": [1.0, 0.5, 4.0, 0.4, 0.6], "flags": [0, 2, 0, 0, 1]})
    wcs = WCS(casda_header(ny, nx, four_d=False)).celestial
    src, source_id = S.sources_from_detections(comps, det, cutouts, wcs, "T", min_score=0.5, flag_score=0.8,
                                               model_id="abc")
    table_from_columns(src, SOURCES)  # the contract holds
    assert len(src) == 4  # double, compact, and the two lone components (c3 under the weak detection, c4)
    by_origin = src.groupby("origin").size().to_dict()
    assert by_origin == {"detection": 2, "component": 2}
    d = src[src.morph_class == "2C_2P"].iloc[0]
    assert sorted(d.component_ids) == ["c0", "c1"] and d.n_components == 2 and d.n_islands == 2 and d.n_peaks == 2
    assert d.flux_int == pytest.approx(3.0) and d.flux_peak == pytest.approx(1.0) and d["flags"] == 2
    x, y = wcs.world_to_pixel(SkyCoord(d.ra, d.dec, unit="deg", frame="icrs"))
    assert x == pytest.approx((2 * 34 + 55) / 3, abs=1e-6) and y == pytest.approx(42, abs=1e-6)  # flux-weighted
    assert d.las == pytest.approx((np.hypot(29, 4) + 1) * 2.0, abs=0.02)  # 2"/px
    assert d.model_id == "abc" and d.morph_score == pytest.approx(0.95)
    c = src[src.morph_class == "1C_1P"].iloc[0]
    assert c["flags"] & S.FLAG_LOW_SCORE and list(c.component_ids) == ["c2"]
    lone = src[src.origin == "component"]
    assert sorted(sum(map(list, lone.component_ids), [])) == ["c3", "c4"] and lone.morph_class.isna().all()
    assert dict(zip(comps.component_id, source_id))["c0"] == dict(zip(comps.component_id, source_id))["c1"]
    assert list(src.source_id) == [f"T_s{i:06d}" for i in range(4)]


def test_highest_score_wins_a_shared_component():
    cutouts = grid_cutouts(64, 64, 64, 0)
    a, b = (10, 10, np.ones((10, 10), bool)), (15, 15, np.ones((10, 10), bool))
    det = oracle_detections([a, b], cutouts, scores=[0.6, 0.9])
    kept, masks = S.select_detections(det, cutouts)
    comps = pd.DataFrame({"x": [17.0, 12.0, 22.0], "y": [17.0, 12.0, 22.0]})
    owner = S.associate_components(comps, kept, masks)
    winner = {round(s, 1): k for k, s in enumerate(kept.score)}
    assert list(owner) == [winner[0.9], winner[0.6], winner[0.9]]


def test_no_detection_gives_one_source_per_component():
    cutouts = grid_cutouts(64, 64, 64, 0)
    comps = pd.DataFrame({"component_id": ["c0", "c1"], "island_id": ["i0", "i1"], "x": [5.0, 50.0],
                          "y": [5.0, 50.0], "flux_int": [1.0, 2.0], "flux_peak": [1.0, 2.0], "flags": [0, 0]})
    wcs = WCS(casda_header(64, 64, four_d=False)).celestial
    src, sid = S.sources_from_detections(comps, oracle_detections([], cutouts), cutouts, wcs, "T")
    assert len(src) == 2 and (src.origin == "component").all() and len(set(sid)) == 2
    empty, sid = S.sources_from_detections(comps.iloc[:0], oracle_detections([], cutouts), cutouts, wcs, "T")
    assert len(empty) == 0 and len(table_from_columns(empty, SOURCES)) == 0


def test_ir_host_is_the_mask_weighted_ir_maximum():
    rng = np.random.default_rng(1)
    ir = rng.normal(8.0, 0.5, (48, 48)).astype(np.float32)
    ir[20, 30] += 40.0  # host at the radio centroid
    ir[20, 10] += 60.0  # brighter, but outside the mask
    ir[26, 36] += 200.0  # far brighter, at the mask's edge: clipped significance, small prior
    soft = np.zeros((48, 48), np.float32)
    soft[12:29, 22:39] = 0.9  # a 17 x 17 mask centred on (30, 20)
    x, y, score = S.ir_host(ir, soft, soft > 0.5)
    assert (x, y) == pytest.approx((30, 20), abs=0.2)
    # weighted peaks: 10 (clipped) x 0.9 x prior; prior sigma 17 / 4 px; the star is 8.5 px off
    p2 = 10 * 0.9 * np.exp(-(6**2 + 6**2) / (2 * (17 / 4) ** 2))
    assert score == pytest.approx(9 / (9 + p2), abs=0.03)
    # the radio centroid moves the prior: a radio peak on the star makes it the host
    radio = np.zeros((48, 48), np.float32)
    radio[26, 36] = 1.0
    assert S.ir_host(ir, soft, soft > 0.5, radio=radio)[:2] == pytest.approx((36, 26), abs=0.2)


def test_ir_host_is_the_peak_of_a_bright_host_off_the_radio_centroid():
    """
    A bright host's clipped significance is a plateau: the host moves from the plateau pixel nearest
    a radio centroid 5 arcsec off (4.1 arcsec from the host) to within 3 arcsec of the IR peak.
    """
    sigma = 6.1 / 2.3548 / 2.0  # WISE W1 PSF on a 2 arcsec grid
    yy, xx = np.mgrid[:64, :64]
    ir = (100.0 + 150.0 * np.exp(-((xx - 34.4) ** 2 + (yy - 30.7) ** 2) / (2 * sigma**2))).astype(np.float32)
    ir += np.random.default_rng(3).normal(0.0, 1.0, ir.shape).astype(np.float32)
    radio = np.exp(-((xx - 32.0) ** 2 + (yy - 30.0) ** 2) / (2 * 3.0**2)).astype(np.float32)  # 2.5 px (5") away
    binary = radio > 0.1  # a 26 arcsec wide mask, as the detector draws around a compact source
    x, y, score = S.ir_host(S.ir_matched_filter(ir, sigma), 0.9 * binary, binary, radio=radio)
    assert np.hypot(x - 34.4, y - 30.7) <= 1.5 and score == 1.0  # 1.28 px; 2.06 px without refinement


def test_matched_filter_finds_hosts_fainter_than_a_pixel_noise():
    """A PSF-sized host of peak S/N 2 per pixel: found within 1 px through the PSF, rarely without."""
    sigma = 6.1 / 2.3548 / 2.0  # WISE W1 PSF on a 2 arcsec grid: 1.3 px
    yy, xx = np.mgrid[:64, :64]
    host = 2.0 * np.exp(-((xx - 32.3) ** 2 + (yy - 30.6) ** 2) / (2 * sigma**2))  # peak S/N 2, integrated ~9
    soft = np.zeros((64, 64), np.float32)
    soft[26:36, 27:38] = 0.9  # a compact radio source around the host
    hits = {0.0: 0, sigma: 0}
    for seed in range(40):
        ir = (100.0 + host + np.random.default_rng(seed).normal(0.0, 1.0, (64, 64))).astype(np.float32)
        ir[:, :6] = np.nan  # a coverage edge adds nothing
        for s in hits:
            x, y, _ = S.ir_host(S.ir_matched_filter(ir, s), soft, soft > 0.5)
            hits[s] += bool(np.hypot(x - 32.3, y - 30.6) <= 1.0)
    assert hits[sigma] >= 36 and hits[0.0] <= 24, hits
    smoothed = S.ir_matched_filter(ir, sigma)
    assert np.isnan(smoothed[:, :6]).all() and np.isfinite(smoothed[:, 6:]).all()
    assert np.array_equal(S.ir_matched_filter(ir, 0.0), ir, equal_nan=True)


def test_ir_host_between_the_lobes_of_a_double():
    ir = np.full((40, 60), 8.0, np.float32)
    ir[20, 30] += 30.0  # between the lobes: off the mask, inside its 2-sigma ellipse
    binary = np.zeros((40, 60), bool)
    binary[15:25, 10:20] = binary[15:25, 40:50] = True
    noisy = ir + np.random.default_rng(2).normal(0, 0.3, ir.shape).astype(np.float32)
    x, y, score = S.ir_host(noisy, binary.astype(np.float32), binary)
    assert (x, y) == pytest.approx((30, 20), abs=0.3) and score > 0.75  # 3-sigma noise peaks compete a little
    assert np.isnan(S.ir_host(np.full((40, 60), 8.0, np.float32), binary.astype(np.float32), binary)[0])


def test_unresolved_source_keeps_its_faint_host_against_a_brighter_neighbour_in_its_mask():
    """
    A bright unresolved radio source (beam sigma 3.2 px) draws a 3-sigma mask 19 px wide. Its host
    sits at the radio position; a galaxy 10 times brighter sits 4 px (8") away, inside the mask.
    Sized by the mask (sigma 4.75 px) the prior lets the neighbour pull the host more than 3" off;
    sized by the source deconvolved by the beam (unresolved: the floor, the PSF's 1.3 px) the host
    is found.
    A double of two such lobes keeps its host between them: its prior is half its deconvolved size.
    """
    psf, beam = 6.1 / 2.3548 / 2.0, 15.0 / 2.3548 / 2.0  # WISE W1 PSF and a 15" beam on a 2" grid
    yy, xx = np.mgrid[:64, :64]

    def blob(x, y, peak, s):
        return peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s**2))

    rng = np.random.default_rng(5)
    ir = (100.0 + blob(32.2, 31.8, 4.0, psf) + blob(36.2, 31.8, 40.0, psf) + rng.normal(0, 1.0, xx.shape))
    ir = S.ir_matched_filter(ir.astype(np.float32), psf)
    radio = blob(32.0, 32.0, 1.0, beam).astype(np.float32)  # peak S/N 300 at a noise of 1/300
    binary = radio > 3.0 / 300
    assert np.ptp(np.nonzero(binary.any(axis=0))[0]) + 1 == 19
    x, y, _ = S.ir_host(ir, radio / radio.max(), binary, radio=radio, beam_sigma=beam, min_prior_sigma=psf)
    assert np.hypot(x - 32.2, y - 31.8) <= 1.0
    x, y, _ = S.ir_host(ir, radio / radio.max(), binary, radio=radio)  # the mask's extent sizes the prior
    assert np.hypot(x - 32.2, y - 31.8) > 1.5  # more than 3" off: pulled onto the neighbour's side
    # a double: lobes 24 px apart, host between them (where the mask is not)
    ir = S.ir_matched_filter((100.0 + blob(32.0, 32.0, 8.0, psf) + rng.normal(0, 1.0, xx.shape)).astype(np.float32), psf)
    radio = (blob(20.0, 32.0, 1.0, beam) + blob(44.0, 32.0, 1.0, beam)).astype(np.float32)
    binary = radio > 0.3
    x, y, _ = S.ir_host(ir, binary.astype(np.float32), binary, radio=radio, beam_sigma=beam, min_prior_sigma=psf)
    assert np.hypot(x - 32.0, y - 32.0) <= 1.0


def test_sources_table_reads_in_astropy_with_units_and_nulls(tmp_path):
    """A written sources table, lone components (null class and box) included, in Table.read."""
    import astropy.units as u
    import pyarrow.parquet as pq
    from astropy.table import Table

    cutouts = grid_cutouts(64, 64, 64, 0)
    comps = pd.DataFrame({"component_id": ["c0", "c1"], "island_id": ["i0", "i1"], "x": [5.0, 50.0],
                          "y": [5.0, 50.0], "flux_int": [1.5, 2.0], "flux_peak": [1.0, 2.0], "flags": [0, 0]})
    wcs = WCS(casda_header(64, 64, four_d=False)).celestial
    src, _ = S.sources_from_detections(comps, oracle_detections([], cutouts), cutouts, wcs, "T")
    pq.write_table(table_from_columns(src, SOURCES, {"tile_id": "T"}), tmp_path / "s.parquet")
    t = Table.read(tmp_path / "s.parquet")
    assert len(t) == 2 and t.meta == {"tile_id": "T"}
    assert t["flux_int"].unit == u.mJy and t["ra"].unit == u.deg and t["las"].unit == u.arcsec
    assert sorted(t["flux_int"].quantity.to_value(u.Jy)) == pytest.approx([1.5e-3, 2e-3])
    assert [list(c) for c in t["component_ids"]] == [list(c) for c in src.component_ids]
    assert list(t["morph_class"]) == ["None", "None"] and np.isnan(t["bbox_x_min"]).all()  # no nulls in astropy
    empty = table_from_columns(src.iloc[:0], SOURCES)
    pq.write_table(empty, tmp_path / "e.parquet")
    assert len(Table.read(tmp_path / "e.parquet")) == 0
