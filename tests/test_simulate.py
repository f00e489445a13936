"""Tests of skysift.simulate: the simulated EMU-like tile and its truth."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

try:
    from skysift import columns, simulate as sim
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))
    from skysift import columns, simulate as sim

RA, DEC, SEED = 150.0, -30.0, 7
SETTINGS = sim.SimulationSettings(size=1024)
NAMES = ("radio.fits", "ir.fits", "truth_components.parquet", "truth_sources.parquet", "meta.json")


def _run(folder: Path, seed=SEED, settings=SETTINGS, tile="TILE_A"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / n for n in NAMES]
    if not settings.ir:
        paths[1] = None
    meta = sim.simulate_tile(tile, RA, DEC, seed, settings, *paths)
    return meta, paths


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    meta, paths = _run(folder)
    with fits.open(paths[0]) as hdul:
        header = hdul[0].header.copy()
        raw_dtype = hdul[0].data.dtype
        data = np.array(hdul[0].data, dtype=np.float32)
    with fits.open(paths[1]) as hdul:
        ir_header = hdul[0].header.copy()
        ir = np.array(hdul[0].data, dtype=np.float32)
    comps = pq.read_table(paths[2])
    srcs = pq.read_table(paths[3])
    return {
        "meta": meta,
        "paths": paths,
        "header": header,
        "raw_dtype": raw_dtype,
        "data": data,
        "ir_header": ir_header,
        "ir": ir,
        "comps_table": comps,
        "srcs_table": srcs,
        "comps": comps.to_pandas(),
        "srcs": srcs.to_pandas(),
    }


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _clip_area(poly, lo, hi):
    """Area of a convex polygon clipped to the square [lo, hi]^2 (Sutherland-Hodgman + shoelace)."""
    edges = [(0, lo, 1), (0, hi, -1), (1, lo, 1), (1, hi, -1)]  # (axis, value, keep side sign)
    for axis, val, sgn in edges:
        out = []
        for i in range(len(poly)):
            p, q = poly[i], poly[(i + 1) % len(poly)]
            pin, qin = sgn * (p[axis] - val) >= 0, sgn * (q[axis] - val) >= 0
            if pin:
                out.append(p)
            if pin != qin:
                t = (val - p[axis]) / (q[axis] - p[axis])
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        poly = out
    x = np.array([p[0] for p in poly])
    y = np.array([p[1] for p in poly])
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def _source_free(tile, radius=12, pad=6):
    """Boolean map of pixels far from every truth source and component."""
    n = SETTINGS.size
    free = np.isfinite(tile["data"][0, 0])
    s = tile["srcs"]
    for r in s.itertuples():
        if r.bbox_x_max > r.bbox_x_min:
            free[
                max(r.bbox_y_min - pad, 0) : r.bbox_y_max + pad,
                max(r.bbox_x_min - pad, 0) : r.bbox_x_max + pad,
            ] = False
    yy, xx = np.ogrid[:n, :n]
    for x, y in zip(s.x.to_numpy(), s.y.to_numpy()):
        x0, y0 = int(round(x)), int(round(y))
        sl = (slice(max(y0 - radius, 0), y0 + radius + 1), slice(max(x0 - radius, 0), x0 + radius + 1))
        free[sl] &= (xx[:, sl[1]] - x) ** 2 + (yy[sl[0], :] - y) ** 2 > radius**2
    return free


# ----------------------------------------------------------------- radio FITS contract


def test_radio_header_and_wcs_contract(tile):
    h, n = tile["header"], SETTINGS.size
    assert h["NAXIS"] == 4 and tile["data"].shape == (1, 1, n, n)
    assert tile["raw_dtype"] == np.dtype(">f4") and h["BITPIX"] == -32
    expected = {
        "BUNIT": "Jy/beam",
        "CTYPE1": "RA---SIN",
        "CTYPE2": "DEC--SIN",
        "CTYPE3": "FREQ",
        "CTYPE4": "STOKES",
        "CUNIT3": "Hz",
        "RADESYS": "FK5",
        "OBJECT": "TILE_A",
        "TELESCOP": "ASKAP",
    }
    for k, v in expected.items():
        assert h[k] == v, k
    assert h["CRVAL3"] == pytest.approx(943.5e6) and h["RESTFRQ"] == pytest.approx(943.5e6)
    assert h["CRVAL4"] == 1 and h["EQUINOX"] == 2000.0
    assert (h["CRVAL1"], h["CRVAL2"]) == pytest.approx((RA, DEC))
    assert h["CDELT1"] == pytest.approx(-2.0 / 3600) and h["CDELT2"] == pytest.approx(2.0 / 3600)
    assert (h["CRPIX1"], h["CRPIX2"]) == pytest.approx(((n + 1) / 2, (n + 1) / 2))
    assert (
        h["BMAJ"] == pytest.approx(15.0 / 3600) and h["BMIN"] == pytest.approx(15.0 / 3600) and h["BPA"] == 0
    )
    assert "skysift simulation" in h["ORIGIN"] and h["SIMSEED"] == SEED
    assert "DATE" not in h
    w = WCS(h).celestial
    assert list(w.wcs.ctype) == ["RA---SIN", "DEC--SIN"]
    assert proj_plane_pixel_scales(w) * 3600 == pytest.approx([2.0, 2.0])
    c = w.pixel_to_world((n - 1) / 2, (n - 1) / 2)  # 0-based centre = CRPIX
    assert c.ra.deg == pytest.approx(RA) and c.dec.deg == pytest.approx(DEC)


def test_nan_footprint_fraction(tile):
    n, s = SETTINGS.size, SETTINGS
    c, half, t = (n - 1) / 2, s.footprint_fraction * n / 2, math.radians(s.footprint_angle)
    corners = [(su * half, sv * half) for su, sv in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
    poly = [
        (c + a * math.cos(t) - b * math.sin(t), c + a * math.sin(t) + b * math.cos(t)) for a, b in corners
    ]
    expected = 1.0 - _clip_area(poly, -0.5, n - 0.5) / n**2
    img = tile["data"][0, 0]
    measured = float(np.isnan(img).mean())
    assert 0.1 < expected < 0.3  # the rotated footprint is clipped by the tile corners
    assert measured == pytest.approx(expected, abs=3e-3)
    assert tile["meta"]["nan_fraction"] == pytest.approx(measured, abs=1e-9)
    assert np.isnan(img[0, 0]) and np.isnan(img[-1, -1]) and np.isfinite(img[n // 2, n // 2])


def test_reruns_are_byte_identical_and_seed_matters(tmp_path):
    small = sim.SimulationSettings(size=256, density_5sigma=3000.0)
    _, a = _run(tmp_path / "a", settings=small)
    _, b = _run(tmp_path / "b", settings=small)
    _, c = _run(tmp_path / "c", seed=SEED + 1, settings=small)
    for pa, pb in zip(a, b):
        assert _sha(pa) == _sha(pb), pa.name
    for pa, pc in zip(a[:4], c[:4]):
        assert _sha(pa) != _sha(pc), pa.name
    assert not any(p.name.startswith(".") for p in (tmp_path / "a").iterdir())  # no temporaries left


def test_ir_path_required_only_with_ir(tmp_path):
    paths = [tmp_path / n for n in NAMES]
    with pytest.raises(ValueError, match="ir_path"):
        sim.simulate_tile("T", RA, DEC, 1, sim.SimulationSettings(size=64), paths[0], None, *paths[2:])
    meta = sim.simulate_tile("T", RA, DEC, 1, sim.SimulationSettings(size=64, ir=False), *paths)
    assert meta["ir"] is None and not paths[1].exists() and all(p.exists() for p in paths if p != paths[1])


# ----------------------------------------------------------------- noise


def test_noise_only_interior_rms_and_normalisation():
    s = sim.SimulationSettings(size=2048)
    noise = sim.make_radio_noise(np.random.default_rng(3), s)
    assert noise.dtype == np.float32
    yy, xx = np.mgrid[: s.size, : s.size]
    d = sim.footprint_distance(xx, yy, s)
    interior = d > 4 * s.edge_scale_px
    mad = 1.4826 * np.median(np.abs(noise[interior] - np.median(noise[interior])))
    assert mad == pytest.approx(s.rms, rel=0.05)
    edge = (d > 0) & (d < 0.2 * s.edge_scale_px)
    assert np.std(noise[edge]) > 2.2 * s.rms  # rises towards edge_rms_factor * rms
    # beam-correlated: neighbouring pixels strongly correlated, beam-separated ones barely
    a = noise[interior].reshape(-1)
    assert np.corrcoef(noise[1000, 900:1100], noise[1000, 901:1101])[0, 1] > 0.9
    assert abs(np.corrcoef(noise[1000, 700:1300], noise[1000, 716:1316])[0, 1]) < 0.2
    assert a.size > 500_000


def test_tile_noise_in_source_free_interior(tile):
    img = tile["data"][0, 0]
    n = SETTINGS.size
    yy, xx = np.mgrid[:n, :n]
    free = _source_free(tile) & (sim.footprint_distance(xx, yy, SETTINGS) > 2)
    assert free.sum() > 200_000
    z = img[free] / sim.rms_at(xx[free], yy[free], SETTINGS)
    assert 1.4826 * np.median(np.abs(z - np.median(z))) == pytest.approx(1.0, abs=0.05)
    interior = free & (sim.footprint_distance(xx, yy, SETTINGS) > 3 * SETTINGS.edge_scale_px)
    v = img[interior]
    assert 1.4826 * np.median(np.abs(v - np.median(v))) == pytest.approx(SETTINGS.rms, rel=0.08)


# ----------------------------------------------------------------- sky model and truth


def test_truth_tables_follow_the_contract(tile):
    for key, table in (("truth_components", tile["comps_table"]), ("truth_sources", tile["srcs_table"])):
        want = columns.arrow_schema(columns.TABLES[key])
        assert table.schema.names == want.names
        assert [f.type for f in table.schema] == [f.type for f in want]
        assert table.schema.field("ra").metadata[b"unit"] == b"deg"
    c, s, meta = tile["comps"], tile["srcs"], tile["meta"]
    assert meta["n_sources"] == len(s) and meta["n_components"] == len(c)
    assert meta["n_extended"] == int((s.morphology != "compact").sum()) > 0
    assert s.source_id.str.fullmatch(r"TILE_A_t\d{6}").all() and s.source_id.is_unique
    assert c.component_id.str.fullmatch(r"TILE_A_t\d{6}_\d+").all() and c.component_id.is_unique
    owner = dict(zip(c.component_id, c.source_id))
    for sid, cids in zip(s.source_id, s.component_ids):
        assert all(owner[k] == sid for k in cids)
    assert sum(len(k) for k in s.component_ids) == len(c)
    compact = s[s.morphology == "compact"]
    assert (compact.component_ids.map(len) == 1).all() and set(compact.fr_class) == {"R"}
    assert np.allclose(c.snr, c.flux_peak / c.rms)
    ext = c[c.extended]
    assert ext.maj_axis.isna().all() and c[~c.extended].maj_axis.notna().all()
    assert (c[~c.extended].maj_axis >= 15.0 - 1e-9).all()  # beam-convolved
    assert set(s.morphology) <= {"compact", "fr1", "fr2", "double"}


def test_compact_flux_integral_and_rendering(tile):
    c = tile["comps"]
    s = SETTINGS
    comp = c[~c.extended]
    for r in comp.head(50).itertuples():
        g = sim.Gaussians(
            np.array([r.x]),
            np.array([r.y]),
            np.array([r.maj_axis / s.pixel_scale]),
            np.array([r.min_axis / s.pixel_scale]),
            np.array([r.pos_ang]),
            np.array([r.flux_peak]),
        )
        x0, y0 = int(r.x) - 40, int(r.y) - 40
        stamp = sim.render_gaussians((81, 81), g, origin=(x0, y0))
        assert stamp.sum() / s.beam_area_px == pytest.approx(r.flux_int, rel=0.01)
        assert stamp.max() <= r.flux_peak + 1e-12
    # bright isolated sources sit in the image with the truth peak, at the truth position
    img = tile["data"][0, 0]
    xy = c[["x", "y"]].to_numpy()
    bright = comp[(comp.snr > 50) & comp.in_footprint]
    checked = 0
    for r in bright.itertuples():
        d = np.hypot(xy[:, 0] - r.x, xy[:, 1] - r.y)
        if np.sort(d)[1] < 30:
            continue
        g = sim.Gaussians(
            *(
                np.array([v])
                for v in (r.x, r.y, r.maj_axis / 2, r.min_axis / 2, r.pos_ang, r.flux_peak * 1e-3)
            )
        )
        xi, yi = int(round(r.x)), int(round(r.y))
        model = sim.render_gaussians((1, 1), g, origin=(xi, yi))[0, 0]
        assert img[yi, xi] == pytest.approx(model, abs=5 * r.rms * 1e-3)
        checked += 1
    assert checked >= 5


def test_source_density_matches_settings(tile):
    s, c, src = SETTINGS, tile["comps"], tile["srcs"]
    five = 5 * s.rms * 1e3
    area = s.area_deg2
    compact = ((~c.extended) & (c.flux_int > five)).sum()
    exp_c = s.density_5sigma * (1 - s.extended_fraction) * area
    assert abs(compact - exp_c) < 4 * math.sqrt(exp_c)
    total = (src.flux_int > five).sum()  # extended ones are all > 1 mJy
    exp_t = s.density_5sigma * area
    assert abs(total - exp_t) < 4 * math.sqrt(exp_t)
    faint = ((~c.extended) & (c.flux_int <= five)).sum()
    exp_f = sim.expected_counts(s)["compact_faint"]
    assert abs(faint - exp_f) < 4 * math.sqrt(exp_f)
    f = c[~c.extended].flux_int.to_numpy()
    # Euclidean-like counts: N(>2 S) / N(>S) = 2^-0.7 (about 0.62) for S well below the cut-off
    ratio = (f > 2 * five).sum() / (f > five).sum()
    assert 0.5 < ratio < 0.75


def test_truth_positions_round_trip_through_wcs(tile):
    w = WCS(tile["header"]).celestial
    for df in (tile["comps"], tile["srcs"]):
        icrs = SkyCoord(df.ra.to_numpy() * u.deg, df.dec.to_numpy() * u.deg, frame="icrs")
        x, y = w.world_to_pixel(icrs)  # astropy converts ICRS to the header's FK5
        assert np.max(np.hypot(x - df.x.to_numpy(), y - df.y.to_numpy())) < 1e-3
    # in_footprint agrees with the NaN mask
    img = tile["data"][0, 0]
    n = SETTINGS.size
    s = tile["srcs"]
    xi, yi = np.rint(s.x).astype(int), np.rint(s.y).astype(int)
    ok = (xi >= 0) & (xi < n) & (yi >= 0) & (yi < n)
    assert (s.in_footprint[ok] == np.isfinite(img[yi[ok], xi[ok]])).all()
    assert 0 < (~s.in_footprint).sum() < len(s)


def _decode_rle(rle_json):
    """Independent decoder of a COCO compressed RLE (maskApi.c rleFrString + column-major runs)."""
    rle = json.loads(rle_json)
    text, counts, p = rle["counts"], [], 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    h, w = rle["size"]
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
    assert flat.size == h * w
    return flat.reshape(w, h).T  # column-major runs, rows = y


def test_masks_bboxes_and_las(tile):
    s = tile["srcs"]
    n = SETTINGS.size
    with_mask = s[s.mask_rle.notna()]
    assert len(with_mask) > 0.3 * len(s)
    empty = s[s.mask_rle.isna()]
    assert (empty.bbox_x_min == empty.bbox_x_max).all() and (empty.n_components == 0).all()
    for r in with_mask.itertuples():
        m = _decode_rle(r.mask_rle)
        assert m.shape == (r.bbox_y_max - r.bbox_y_min, r.bbox_x_max - r.bbox_x_min)
        assert 0 <= r.bbox_x_min < r.bbox_x_max <= n and 0 <= r.bbox_y_min < r.bbox_y_max <= n
        # tight box: every edge row/column of the mask is occupied (unless clipped by the tile)
        if 0 < r.bbox_x_min and r.bbox_x_max < n and 0 < r.bbox_y_min and r.bbox_y_max < n:
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
            diag = math.hypot(*m.shape) * SETTINGS.pixel_scale
            assert max(m.shape) * SETTINGS.pixel_scale <= r.las + 1e-9 <= diag + 1e-9
    ext = with_mask[with_mask.morphology != "compact"]
    assert (ext.las > 30).all()


# ----------------------------------------------------------------- morphology measurement


def _beam_gaussians(xs, ys, peaks, maj=0.0, min_=0.0, pa=0.0):
    """Beam-convolved Gaussians (pixels) from intrinsic sizes in arcsec."""
    s = SETTINGS
    n = len(xs)
    cmaj, cmin, cpa = sim.convolve_gaussians(
        np.full(n, maj), np.full(n, min_), np.full(n, pa), 15.0, 15.0, 0.0
    )
    return sim.Gaussians(
        np.asarray(xs, float),
        np.asarray(ys, float),
        cmaj / s.pixel_scale,
        cmin / s.pixel_scale,
        cpa,
        np.asarray(peaks, float),
    )


def test_convolve_gaussians_adds_covariances():
    maj, mn, pa = sim.convolve_gaussians(np.array([10.0]), np.array([0.0]), np.array([30.0]), 15.0, 15.0, 0.0)
    assert (
        maj[0] == pytest.approx(math.hypot(10, 15))
        and mn[0] == pytest.approx(15.0)
        and pa[0] == pytest.approx(30.0)
    )
    # two orthogonal equal ellipses give a circle
    maj, mn, _ = sim.convolve_gaussians(np.array([20.0]), np.array([10.0]), np.array([0.0]), 20.0, 10.0, 90.0)
    assert maj[0] == pytest.approx(mn[0]) == pytest.approx(math.hypot(20, 10))
    # an ellipse elongated north-south (pa = 0) is elongated along +y on the grid
    g = sim.Gaussians(
        np.array([20.0]),
        np.array([20.0]),
        np.array([12.0]),
        np.array([4.0]),
        np.array([0.0]),
        np.array([1.0]),
    )
    img = sim.render_gaussians((41, 41), g)
    assert img[30, 20] > 10 * img[20, 30]
    g.pa[:] = 90.0  # east = -x
    img = sim.render_gaussians((41, 41), g)
    assert img[20, 10] > 10 * img[10, 20]


def test_point_source_is_1c_1p_and_r():
    sig = SETTINGS.rms
    g = _beam_gaussians([50.3], [50.6], [100 * sig])
    model = sim.render_gaussians((101, 101), g)
    m = sim.measure_morphology(model, sig, (50.3, 50.6), 7.5)
    assert (m.rgz_class, m.fr_class, m.n_components, m.n_peaks) == ("1C_1P", "R", 1, 1)
    assert model.sum() / SETTINGS.beam_area_px == pytest.approx(100 * sig, rel=1e-3)
    assert sim.largest_extent(m.mask) > 15.0 / 2  # 3-sigma mask of a 100-sigma beam spans > 1 FWHM


def test_edge_brightened_double_is_fr2():
    sig = SETTINGS.rms
    c = 100.0
    # lobes (elongated along x, i.e. pa = 90) with compact hotspots at their outer edges
    lobes = _beam_gaussians([c - 30, c + 30], [c, c], [15 * sig, 12 * sig], maj=30.0, min_=15.0, pa=90.0)
    spots = _beam_gaussians([c - 40, c + 40], [c, c], [40 * sig, 35 * sig], maj=3.0, min_=3.0)
    model = sim.render_gaussians((201, 201), lobes) + sim.render_gaussians((201, 201), spots)
    m = sim.measure_morphology(model, sig, (c, c), 7.5)
    assert m.n_components == 2 and m.n_peaks == 2 and m.rgz_class == "2C_2P"
    assert m.fr_class == "FR-II"
    assert m.a == pytest.approx(80, abs=2)
    assert m.a / m.b > 0.55
    # a bright core (slightly off the pixel grid) is a third peak and component, not a lobe
    core = _beam_gaussians([c + 0.4], [c + 0.3], [50 * sig])
    m = sim.measure_morphology(model + sim.render_gaussians((201, 201), core), sig, (c + 0.4, c + 0.3), 7.5)
    assert m.rgz_class == "3C_3P" and m.fr_class == "FR-II" and m.a == pytest.approx(80, abs=2)


def test_islands_use_8_connectivity():
    model = np.zeros((20, 20))
    model[5:8, 5:8] = 10.0
    model[8:11, 8:11] = 10.0  # touches the first square only at a corner
    model[15, 15] = 10.0
    m = sim.measure_morphology(model, 1.0, (7.5, 7.5), 2.0)
    assert m.n_components == 2
    assert sim.largest_extent(m.mask) == pytest.approx(math.hypot(10, 10) + 1)


def test_core_with_fading_jets_is_fr1():
    sig = SETTINGS.rms
    c = 150.0
    r = np.arange(10.0, 80.0, 3.0)
    bright = 30 * sig * np.exp(-(r - 10.0) / 15.0)
    xs = np.concatenate([[c], c + r, c - r])
    ys = np.full(xs.size, c)
    peaks = np.concatenate([[40 * sig], bright, bright * 0.9])
    model = sim.render_gaussians((301, 301), _beam_gaussians(xs, ys, peaks, maj=8.0, min_=4.0, pa=90.0))
    m = sim.measure_morphology(model, sig, (c, c), 7.5)
    assert m.n_components == 1 and m.n_peaks == 3
    assert m.fr_class == "FR-I" and m.a / m.b < 0.45
    # the same jets without the inner peaks (monotonic fading, core dominated) are unresolved: R
    flat = sim.render_gaussians(
        (301, 301), _beam_gaussians([c], [c], [40 * sig], maj=60.0, min_=10.0, pa=90.0)
    )
    assert sim.measure_morphology(flat, sig, (c, c), 7.5).fr_class == "R"


def test_fr_class_thresholds():
    assert [sim.fr_class_from_ratio(v) for v in (0.0, 0.3, 0.44, 0.5, 0.56, 0.9, float("nan"))] == [
        "R",
        "FR-I",
        "FR-I",
        "FR-X",
        "FR-II",
        "FR-II",
        "R",
    ]


def test_generated_extended_sources_mostly_in_rgz_classes():
    rng = np.random.default_rng(11)
    six = {"1C_1P", "1C_2P", "1C_3P", "2C_2P", "2C_3P", "3C_3P"}
    s = SETTINGS
    results = {}
    for kind in ("fr1", "fr2", "double"):
        rgz, fr = [], []
        for _ in range(60):
            flux = float(sim.powerlaw_sample(rng, 1, 3e-3, 0.5)[0])
            src = sim.extended_source_model(
                rng, kind, 300.0, 300.0, flux, rng.uniform(60, 200), rng.uniform(0, 180), s
            )
            assert src.flux == pytest.approx(flux)
            stamp, _, _, m = sim.measure_source(src, s, s.rms)
            assert stamp.sum() / s.beam_area_px == pytest.approx(flux, rel=0.01)
            rgz.append(m.rgz_class)
            fr.append(m.fr_class)
        results[kind] = (np.mean([c in six for c in rgz]), {k: fr.count(k) / len(fr) for k in set(fr)})
    for kind, (in_six, _) in results.items():
        assert in_six >= 0.9, (kind, results)
    assert results["fr2"][1].get("FR-II", 0) >= 0.7, results
    fr1 = results["fr1"][1]
    assert fr1.get("FR-I", 0) > fr1.get("FR-II", 0) and fr1.get("FR-I", 0) >= 0.4, results


# ----------------------------------------------------------------- infrared image


def test_ir_hosts_lie_on_ir_maxima(tile):
    h, ir = tile["ir_header"], tile["ir"]
    assert ir.ndim == 2 and h["BUNIT"] == "DN" and h["MAGZP"] == pytest.approx(20.5)
    w = WCS(h)
    assert list(w.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    assert proj_plane_pixel_scales(w) * 3600 == pytest.approx([1.375, 1.375])
    rot = math.degrees(math.atan2(w.wcs.get_pc()[1, 0], w.wcs.get_pc()[0, 0]))
    assert rot == pytest.approx(23.0)
    # the IR grid covers the radio tile
    n = SETTINGS.size
    rw = WCS(tile["header"]).celestial
    corners = rw.pixel_to_world(np.array([0, n - 1, 0, n - 1]), np.array([0, 0, n - 1, n - 1]))
    cx, cy = w.world_to_pixel(corners)
    assert (cx >= 0).all() and (cx < ir.shape[1]).all() and (cy >= 0).all() and (cy < ir.shape[0]).all()

    s = tile["srcs"]
    hosts = s[s.host_w1_mag < 14.5]
    hx, hy = w.world_to_pixel(SkyCoord(hosts.host_ra.to_numpy() * u.deg, hosts.host_dec.to_numpy() * u.deg))

    def on_max(xs, ys):
        hits = []
        for x, y in zip(xs, ys):
            xi, yi = int(round(x)), int(round(y))
            if not (5 <= xi < ir.shape[1] - 5 and 5 <= yi < ir.shape[0] - 5):
                hits.append(False)
                continue
            win = ir[yi - 5 : yi + 6, xi - 5 : xi + 6]
            j, i = np.unravel_index(np.argmax(win), win.shape)
            hits.append(math.hypot(xi - 5 + i - x, yi - 5 + j - y) < 1.5)
        return np.mean(hits)

    assert len(hosts) > 20
    assert on_max(hx, hy) > 0.9
    # the radio pixel grid is not the IR grid: radio pixel coordinates miss the hosts
    assert on_max(hosts.x.to_numpy(), hosts.y.to_numpy()) < 0.2
    # host flux: aperture sum above the background matches the magnitude within 0.3 mag
    bright = hosts[hosts.host_w1_mag < 14.0]
    bx, by = w.world_to_pixel(SkyCoord(bright.host_ra.to_numpy() * u.deg, bright.host_dec.to_numpy() * u.deg))
    bg = np.median(ir)
    dm = []
    for x, y, mag in zip(bx, by, bright.host_w1_mag):
        xi, yi = int(round(x)), int(round(y))
        flux = (ir[yi - 8 : yi + 9, xi - 8 : xi + 9] - bg).sum()
        dm.append(20.5 - 2.5 * math.log10(flux) - mag)
    assert abs(np.median(dm)) < 0.3
