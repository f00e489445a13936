"""Image quality (issue 3): regions, simulated defects, the SOM, stamps, the M1/M2/M3 classifiers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import casda_header, gaussian_image, write_tile
from skysift import defects, quality, quality_eval, regions, simulate as sim, som, stamps
from skysift.columns import QUALITY_CLASSES, TABLES

FRACTIONS = {"good": 0.4, "artefacts": 0.15, "high_noise": 0.15, "striping": 0.15, "poor_psf": 0.15}


# ----------------------------------------------------------------- regions


def test_region_grid_index_and_valid_fraction_by_hand():
    data = np.ones((10, 7))
    data[0, 0] = data[9, 6] = np.nan
    grid = regions.region_grid(data.shape, 4, "T")
    assert grid.region_id.tolist() == ["T_q00_00", "T_q00_01", "T_q01_00", "T_q01_01", "T_q02_00", "T_q02_01"]
    assert grid[["x_min", "x_max", "y_min", "y_max"]].iloc[-1].tolist() == [4, 7, 8, 10]
    # 15/16, 12/16 (3 columns), 16/16, 12/16, 8/16 (2 rows), 5/16 (3 x 2 minus one NaN)
    assert_allclose(regions.valid_fractions(data, 4) * 16, [15, 12, 16, 12, 8, 5])
    assert_allclose(regions.valid_fractions(data, 4, rows_per_strip=4), regions.valid_fractions(data, 4))
    assert regions.region_index([0, 3.4, 3.6, 6.4, -0.6, 7, np.nan], [0, 0, 0, 9, 0, 0, 0], data.shape, 4).tolist() \
        == [0, 0, 1, 5, -1, -1, -1]


def test_locate_regions_agrees_with_region_index_in_any_row_order():
    grid = regions.region_grid((1000, 700), 256, "T").sample(frac=1.0, random_state=3)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-5, 705, 2000), rng.uniform(-5, 1005, 2000)
    located = regions.locate_regions(x, y, grid)
    expected = regions.region_index(x, y, (1000, 700), 256)
    assert_array_equal(located < 0, expected < 0)
    assert_array_equal(grid.index.to_numpy()[located[located >= 0]], expected[expected >= 0])


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_region_size_must_be_a_positive_integer(size):
    with pytest.raises(ValueError, match="region size"):
        regions.region_grid((10, 10), size, "T")


# ----------------------------------------------------------------- defects in the simulator


@pytest.mark.parametrize("bad, words", [
    ({"fractions": {"bad_seeing": 1.0}}, "bad_seeing"),
    ({"fractions": {"good": -1.0}}, "non-negative"),
    ({"fractions": {"good": 1.0}, "mixed_fraction": 2.0}, "mixed_fraction"),
    ({"fraction": {}}, "unknown defect setting"),
])
def test_bad_defect_settings_are_rejected(bad, words):
    with pytest.raises(ValueError, match=words):
        sim.SimulationSettings(size=256, defects=bad)


def test_classes_hold_the_fractions_per_tile():
    rng = np.random.default_rng(1)
    labels = defects._stratified_classes(rng, 16, FRACTIONS)
    counts = {c: labels.count(c) for c in QUALITY_CLASSES}
    assert sum(counts.values()) == 16 and counts["good"] in (6, 7)
    assert all(counts[c] in (2, 3) for c in defects.DEFECT_CLASSES)


@pytest.fixture(scope="module")
def defect_tiles(tmp_path_factory):
    """One 1024^2 tile simulated twice with the same seed: without and with defects (256 px regions)."""
    out = {}
    for name, fr in (("clean", {}), ("defects", {"fractions": FRACTIONS, "mixed_fraction": 0.0})):
        folder = tmp_path_factory.mktemp(name)
        s = sim.SimulationSettings(size=1024, ir=False, region_size=256, defects=fr)
        paths = [folder / n for n in ("radio.fits", "ir.fits", "tc.parquet", "ts.parquet", "meta.json")]
        paths[1] = None
        meta = sim.simulate_tile("T", 150.0, -30.0, 11, s, *paths, truth_regions_path=folder / "tr.parquet")
        out[name] = {"folder": folder, "meta": meta, "settings": s,
                     "image": np.asarray(__import__("astropy.io.fits").io.fits.getdata(folder / "radio.fits"))[0, 0],
                     "tc": pd.read_parquet(folder / "tc.parquet"), "tr": pd.read_parquet(folder / "tr.parquet")}
    return out


def test_truth_regions_follow_the_contract(defect_tiles):
    table = pq.read_table(defect_tiles["defects"]["folder"] / "tr.parquet")
    assert table.schema.names == [c.name for c in TABLES["truth_regions"]]
    tr = defect_tiles["defects"]["tr"]
    assert len(tr) == 16 and set(tr.quality_class) == set(QUALITY_CLASSES)
    assert tr.region_id.tolist() == regions.region_grid((1024, 1024), 256, "T").region_id.tolist()
    clean = defect_tiles["clean"]["tr"]
    assert (clean.quality_class == "good").all() and (clean.rms_factor == 1).all()
    assert_allclose(tr.valid_fraction, clean.valid_fraction)
    assert defect_tiles["defects"]["meta"]["quality_regions"]["classes"]["good"] == (tr.quality_class == "good").sum()


def test_defects_leave_good_regions_untouched(defect_tiles):
    """The defect generator is separate: good regions keep the same pixels and truth as without defects."""
    tr = defect_tiles["defects"]["tr"]
    clean, dirty = defect_tiles["clean"]["image"], defect_tiles["defects"]["image"]
    for r in tr[tr.quality_class == "good"].itertuples():
        # a defect fades out inside its own region: a good region's core is unchanged
        sl = np.s_[r.y_min + 40 : r.y_max - 40, r.x_min + 40 : r.x_max - 40]
        a, b = clean[sl], dirty[sl]
        same = np.isclose(a, b, rtol=0, atol=1e-9) | (np.isnan(a) & np.isnan(b))
        assert same.mean() > 0.99, r.region_id  # smeared neighbours' wings may reach in
    c, d = defect_tiles["clean"]["tc"], defect_tiles["defects"]["tc"]
    assert len(d) >= len(c)  # artefact carriers may be added
    assert d.component_id.iloc[: len(c)].tolist() == c.component_id.tolist()


def test_high_noise_region_has_the_truth_rms(defect_tiles):
    tr, img = defect_tiles["defects"]["tr"], defect_tiles["defects"]["image"]
    clean = defect_tiles["clean"]["image"]
    r = tr[tr.quality_class == "high_noise"].iloc[0]
    sl = np.s_[r.y_min + 40 : r.y_max - 40, r.x_min + 40 : r.x_max - 40]
    from skysift.noise import clipped_rms

    assert clipped_rms(img[sl]) / clipped_rms(clean[sl]) == pytest.approx(r.rms_factor, rel=0.05)
    assert 3 <= r.rms_factor <= 5
    tc = defect_tiles["defects"]["tc"]
    inside = regions.region_index(tc.x, tc.y, (1024, 1024), 256) == r.name
    base = sim.rms_at(tc.x[inside].to_numpy(), tc.y[inside].to_numpy(), defect_tiles["defects"]["settings"]) * 1e3
    ratio = tc.rms[inside].to_numpy() / base  # the truth rms (and S/N) include the defect's factor
    x, y = tc.x[inside].to_numpy(), tc.y[inside].to_numpy()
    core = np.minimum.reduce([x - r.x_min, r.x_max - 1 - x, y - r.y_min, r.y_max - 1 - y]) > defects.TAPER_PX
    assert core.sum() > 3 and (ratio >= 1 - 1e-9).all() and (ratio <= r.rms_factor + 1e-9).all()
    assert_allclose(ratio[core], r.rms_factor, rtol=1e-6)


def test_poor_psf_smears_sources_and_keeps_their_flux(defect_tiles):
    tr = defect_tiles["defects"]["tr"]
    r = tr[tr.quality_class == "poor_psf"].iloc[0]
    c, d = defect_tiles["clean"]["tc"], defect_tiles["defects"]["tc"].iloc[: len(defect_tiles["clean"]["tc"])]
    inside = (regions.region_index(c.x, c.y, (1024, 1024), 256) == r.name) & ~c.extended
    assert inside.sum() > 5
    assert (d.maj_axis[inside] > c.maj_axis[inside] + 1).all()
    assert (d.flux_peak[inside] < c.flux_peak[inside]).all()
    assert_allclose(d.flux_int[inside], c.flux_int[inside])


def test_artefacts_and_stripes_are_in_their_region(defect_tiles):
    tr, img, clean = defect_tiles["defects"]["tr"], defect_tiles["defects"]["image"], defect_tiles["clean"]["image"]
    for cls in ("artefacts", "striping"):
        r = tr[tr.quality_class == cls].iloc[0]
        diff = np.nan_to_num(img - clean)[r.y_min : r.y_max, r.x_min : r.x_max]
        assert np.abs(diff).max() > 3 * 25e-6, cls
    art = tr[tr.quality_class == "artefacts"]
    assert art.artefact_source_id.notna().all() and (art.artefact_level > 0).all()
    lo, hi = defects.STRIPE_AMPLITUDE
    assert tr.stripe_amplitude[tr.quality_class == "striping"].between(lo, hi).all()


# ----------------------------------------------------------------- extraction on defects


def test_sep_theta_at_half_pi_is_measured(tmp_path):
    """A source elongated exactly along y: SEP's float32 theta rounds above pi/2 (was a crash)."""
    beam = 7.5 / 2.3548
    yy, xx = np.mgrid[0:200, 0:200]
    img = 5e-3 * np.exp(-0.5 * ((xx - 100) ** 2 / beam**2 + (yy - 100) ** 2 / (3 * beam) ** 2))
    img = (img + gaussian_image(200, 200, [], beam_sigma_pix=beam, rms=25e-6, seed=2)).astype(np.float32)
    from skysift.extract import ExtractSettings, extract_components
    from skysift.tileio import open_tile

    comp = extract_components(open_tile(write_tile(tmp_path / "t.fits", img, casda_header(200, 200))), "T",
                              ExtractSettings(back_size=64))
    row = comp.iloc[int(np.argmax(comp.flux_peak))]
    assert row.maj_axis > 2 * row.min_axis and abs(row.pos_ang % 180) < 10 or abs(row.pos_ang % 180) > 170


# ----------------------------------------------------------------- SOM


def _features(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(1.2, 0.3, n), rng.beta(2, 5, n), rng.normal(1.0, 0.4, n),
                            rng.normal(-1.5, 0.1, n), rng.normal(0.1, 0.1, n)])


def test_batch_epoch_matches_minisom_batch_offline():
    """One vectorised batch epoch equals MiniSom's own (per-sample) train_batch_offline."""
    from minisom import MiniSom

    x = _features(400)
    model = som.train_som(x, rows=6, cols=5, sigma=2.0, epochs=1, n_clusters=4, seed=0)
    z = model.scale_features(x).astype(np.float64)
    ref = MiniSom(6, 5, 5, sigma=2.0, learning_rate=1.0, neighborhood_function="gaussian",
                  sigma_decay_function="inverse_decay_to_one")
    ref.pca_weights_init(z)
    ref.train_batch_offline(z, 1)
    assert_allclose(model.codebook, ref.get_weights(), atol=1e-5)
    assert model.meta["quantization_error"] == pytest.approx(ref.quantization_error(z), rel=1e-4)
    assert model.meta["topographic_error"] == pytest.approx(ref.topographic_error(z), abs=1e-9)


def test_chunked_bmu_equals_one_block_and_minisom_winner():
    from minisom import MiniSom

    z = np.random.default_rng(2).normal(size=(3000, 5)).astype(np.float32)
    w = np.random.default_rng(3).normal(size=(8, 7, 5))
    one = som.bmu_indices(z, w.reshape(-1, 5), chunk=10_000)
    assert_array_equal(som.bmu_indices(z, w.reshape(-1, 5), chunk=97), one)
    ref = MiniSom(8, 7, 5)
    ref._weights = w
    winners = [np.ravel_multi_index(ref.winner(v.astype(np.float64)), (8, 7)) for v in z[:300]]
    assert_array_equal(one[:300], winners)
    two = som.bmu_indices(z, w.reshape(-1, 5), chunk=97, second=True)
    assert_array_equal(two[:, 0], one) and (two[:, 0] != two[:, 1]).all()


def test_som_is_deterministic_saved_and_clusters_numbered_by_first_node(tmp_path):
    x = _features(20_000, seed=4)
    a = som.train_som(x, epochs=6, batch_size=5000, seed=9)
    b = som.train_som(x, epochs=6, batch_size=5000, seed=9)
    assert_array_equal(a.codebook, b.codebook)
    assert_array_equal(a.node_cluster, b.node_cluster)
    assert a.codebook.shape == (15, 15, 5) and a.n_clusters == 20
    first_seen = list(dict.fromkeys(a.node_cluster.ravel().tolist()))
    assert first_seen == list(range(20))
    som.save_som(a, tmp_path / "som.npz")
    c = som.load_som(tmp_path / "som.npz")
    assert_array_equal(c.codebook, a.codebook) and c.meta["seed"] == 9 and c.feature_names == som.FEATURES
    assert {"minisom", "scikit-learn", "numpy", "skysift"} <= set(c.meta["versions"])
    assert c.hits.sum() == len(x) and 0 < c.meta["topographic_error"] < 0.5
    som.plot_som(c, x, tmp_path / "som.png")
    assert (tmp_path / "som.png").stat().st_size > 20_000


def test_features_by_hand():
    comp = pd.DataFrame({"npix": [100, 1], "maj_axis": [20.0, 15.0], "min_axis": [10.0, 15.0], "snr": [100.0, 5.0],
                         "rms_image": [0.025, 0.1], "flux_int": [2.0, 0.5], "flux_peak": [1.0, 0.5]})
    f = som.component_features(comp)
    assert_allclose(f, [[2, 0.5, 2, np.log10(0.025), np.log10(2)], [0, 0, np.log10(5), -1, 0]])


# ----------------------------------------------------------------- stamps


def test_representatives_by_hand():
    region = np.array([0, 0, 0, 1, 1, -1, 0])
    cluster = np.array([2, 2, 0, 2, 2, 2, 2])
    snr = np.array([5.0, 9.0, 3.0, 7.0, 7.0, 99.0, 9.0])
    counts, rep = stamps.representatives(region, cluster, snr, 2, 3)
    assert counts.tolist() == [[1, 0, 3], [0, 0, 2]]
    assert rep.tolist() == [[2, -1, 1], [-1, -1, 3]]  # ties go to the first row


def test_cut_stamps_pads_edges_and_blanks():
    data = np.arange(100, dtype=np.float32).reshape(10, 10)
    data[5, 5] = np.nan
    out = stamps.cut_stamps(data, np.array([0.2, 5.0]), np.array([0.0, 4.6]), 3)
    assert out[0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 10, 11]]
    assert out[1].tolist() == [[44, 45, 46], [54, 0, 56], [64, 65, 66]]


def test_build_stamps_counts_zero_stamps_and_compression(tmp_path):
    from skysift.tileio import open_tile

    beam = 7.5 / 2.3548
    src = [(60, 60, 2e-3), (70, 200, 1e-3), (200, 60, 5e-4), (220, 220, 3e-3)]
    tile = open_tile(write_tile(tmp_path / "t.fits", gaussian_image(256, 256, src, beam_sigma_pix=beam, rms=25e-6),
                                casda_header(256, 256)))
    comp = pd.DataFrame({"component_id": ["a", "b", "c", "d"], "x": [60.0, 200, 60, 220], "y": [60.0, 70, 200, 220],
                         "snr": [80.0, 40, 20, 120]})
    mapping = pd.DataFrame({"component_id": comp.component_id, "som_cluster": [1, 1, 0, 2]})
    info = stamps.build_stamps(tile, "T", comp, mapping, tmp_path / "s.h5", region_size=128, stamp_size=25,
                               n_clusters=3, noise_mjy_beam=0.025)
    rs = stamps.read_stamps(tmp_path / "s.h5")
    assert rs.regions.region_id.tolist() == ["T_q00_00", "T_q00_01", "T_q01_00", "T_q01_01"]
    assert rs.counts.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert rs.stamps.shape == (4, 3, 25, 25)
    assert (rs.stamps[0, 0] == 0).all() and (rs.stamps[0, 2] == 0).all()  # empty clusters
    assert rs.stamps[0, 1, 12, 12] == pytest.approx(2.0, rel=0.05)  # mJy/beam at the centre of source a
    assert rs.attrs["compression_ratio"] == pytest.approx(info["compression_ratio"])
    assert rs.attrs["tile_bytes"] == 256 * 256 * 4 and rs.noise_mjy_beam == 0.025
    with pytest.raises(ValueError, match="row for row"):
        stamps.build_stamps(tile, "T", comp, mapping.iloc[::-1], tmp_path / "x.h5", region_size=128)


# ----------------------------------------------------------------- classifiers


def _synthetic_set(n_per_class=20, k=5, s=13, seed=0, shuffle=False):
    """Fingerprints whose class shows both in the counts and in the stamps (plus noise)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(5), n_per_class)
    counts = rng.poisson(5, (len(y), k))
    counts[np.arange(len(y)), y] += 15  # class c fills cluster c
    yy, xx = np.mgrid[:s, :s] - s // 2
    r2 = xx**2 + yy**2  # patterns that a rotation by 90 degrees or a flip leaves in their class
    pattern = [np.exp(-r2 / 4.0), np.exp(-((np.sqrt(r2) - 4) ** 2)), np.cos(1.5 * xx), -np.exp(-r2 / 4.0),
               ((xx + yy) % 2) * 1.0]
    st = rng.normal(0, 0.05, (len(y), k, s, s)).astype(np.float32)
    for i, c in enumerate(y):
        st[i, :] += 0.3 * pattern[c]
    labels = np.array(QUALITY_CLASSES)[rng.permutation(y) if shuffle else y]
    reg = pd.DataFrame({"region_id": [f"R{i}" for i in range(len(y))], "tile_id": "T", "valid_fraction": 1.0,
                        "label": labels})
    reg["y"] = reg.label.map({c: i for i, c in enumerate(QUALITY_CLASSES)})
    return quality.TrainingSet(reg, st, counts, 0.05), y


def test_spectrum_input_finds_a_ripple_the_same_in_every_stamp_and_not_in_noise():
    """A plane wave of 5 cycles per stamp, the same in all stamps of a region (striping), peaks
    on ring 5; white noise of any level is isotropic; the features are blind to the rotations
    and flips of the training augmentation and to the noise level; empty regions give zeros."""
    rng = np.random.default_rng(0)
    s, k = 25, 6
    yy, xx = np.mgrid[:s, :s]
    wave = np.cos(2 * np.pi * (3 * xx + 4 * yy) / s)  # |k| = 5 cycles per stamp
    noise = rng.normal(0, 1, (1, k, s, s))
    striped = noise + 2.0 * wave
    f = quality.spectrum_input(np.concatenate([noise, striped, 30 * noise, np.zeros((1, k, s, s))]))
    assert f.shape == (4, 2 * (s // 2)) and f.dtype == np.float32
    aniso = f[:, 0::2]
    assert aniso[1, 4] > aniso[0, 4] + 1.5  # ring 5: the wave's peak
    assert aniso[1, 4] == aniso[1].max()
    assert_allclose(f[2], f[0], atol=1e-5)  # standardised stamps: the noise level does not matter
    assert_array_equal(f[3], 0)
    turned = np.rot90(striped, 1, axes=(2, 3))[..., ::-1]
    assert_allclose(quality.spectrum_input(turned)[0], f[1], rtol=1e-5, atol=1e-5)
    # empty clusters (all-zero stamps) do not dilute the mean spectrum
    padded = np.concatenate([striped, np.zeros((1, 3, s, s))], axis=1)
    assert_allclose(quality.spectrum_input(padded)[0], f[1], rtol=1e-5, atol=1e-5)


def test_region_input_is_counts_then_standardised_spectrum():
    rng = np.random.default_rng(1)
    st = rng.normal(0, 1, (7, 4, 25, 25))
    counts = rng.integers(0, 50, (7, 4))
    vf = np.full(7, 0.5)
    assert_array_equal(quality.region_input(counts, vf), quality.count_input(counts, vf))
    norm = quality.spectrum_norm(st)
    x = quality.region_input(counts, vf, st, norm)
    assert x.shape == (7, 4 + 24) and x.dtype == np.float32
    assert_array_equal(x[:, :4], quality.count_input(counts, vf))
    assert_allclose(x[:, 4:].mean(axis=0), 0, atol=1e-5)  # standardised on the same regions
    assert_allclose(x[:, 4:].std(axis=0), 1, atol=1e-3)


SMALL = dict(epochs=15, batch_size=10, channels=(4, 4, 8, 8, 8), embedding=4, dense=32, validation_fraction=0.25,
             learning_rate=5e-3)


def test_classifiers_learn_and_shuffled_labels_give_chance(tmp_path):
    data, y = _synthetic_set()
    test, y_test = _synthetic_set(seed=1)
    settings = quality.QualitySettings(**SMALL, seed=3)
    quality.train_quality(data, settings, tmp_path / "q.pt", checkpoint_dir=tmp_path / "ck")
    model = quality.load_quality_model(tmp_path / "q.pt")
    rs = stamps.RegionStamps("T", test.regions.drop(columns=["label", "y"]).assign(
        row=0, col=0, x_min=0, x_max=1, y_min=0, y_max=1, n_components=0), test.counts, test.stamps, 0.05, {})
    pred = quality.predict_regions(model, rs)
    truth = np.array(QUALITY_CLASSES)[y_test]
    acc = {n: float(np.mean(pred[c] == truth)) for n, c in quality_eval.MODEL_COLUMNS.items()}
    assert min(acc.values()) > 0.7, acc
    # predictions average the 8 rotations/flips: turning every stamp changes nothing
    turned = stamps.RegionStamps("T", rs.regions, rs.counts, np.ascontiguousarray(np.rot90(rs.stamps, 1, axes=(2, 3))),
                                 0.05, {})
    cols = [c for c in pred.columns if c.startswith("quality_prob")]
    assert_allclose(quality.predict_regions(model, turned)[cols].to_numpy(), pred[cols].to_numpy(), atol=1e-5)
    shuffled, _ = _synthetic_set(shuffle=True)
    quality.train_quality(shuffled, settings, tmp_path / "s.pt", checkpoint_dir=tmp_path / "ck2")
    pred = quality.predict_regions(quality.load_quality_model(tmp_path / "s.pt"), rs)
    chance = {n: float(np.mean(pred[c] == truth)) for n, c in quality_eval.MODEL_COLUMNS.items()}
    assert max(chance.values()) < 0.4, chance  # 5 balanced classes: chance is 0.2


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    import torch

    data, _ = _synthetic_set(n_per_class=8)
    settings = quality.QualitySettings(**{**SMALL, "epochs": 3}, seed=5)
    quality.train_quality(data, settings, tmp_path / "a.pt", checkpoint_dir=tmp_path / "a")
    real, saved = quality._save_checkpoint, []

    def killed_after_five(path, state):  # m1's 3 epochs, then m2's first two: the job dies
        real(path, state)
        saved.append(path)
        if len(saved) == 5:
            raise SystemExit("killed")

    monkeypatch.setattr(quality, "_save_checkpoint", killed_after_five)
    with pytest.raises(SystemExit):
        quality.train_quality(data, settings, tmp_path / "b.pt", checkpoint_dir=tmp_path / "b")
    assert not (tmp_path / "b.pt").exists()
    assert torch.load(tmp_path / "b" / "m2.pth", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(quality, "_save_checkpoint", real)
    report = quality.train_quality(data, settings, tmp_path / "b.pt", checkpoint_dir=tmp_path / "b")
    assert [h["epoch"] for h in report["history"]["m2"]] == [0, 1, 2]
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    for name in quality.MODEL_NAMES:
        for key, value in a["models"][name].items():
            assert torch.equal(value, b["models"][name][key]), (name, key)
    # other settings: the stale checkpoint is not resumed
    other = quality.QualitySettings(**{**SMALL, "epochs": 3, "dense": 16}, seed=5)
    report = quality.train_quality(data, other, tmp_path / "c.pt", checkpoint_dir=tmp_path / "b")
    assert len(report["history"]["m1"]) == 3


def test_label_csv_and_region_labels(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("id,quality_class\nT1,good\nT1_q00_01,striping\n")
    labels = quality.read_label_csv(csv)
    reg = pd.DataFrame({"region_id": ["T1_q00_00", "T1_q00_01", "T2_q00_00"], "tile_id": ["T1", "T1", "T2"]})
    assert quality.labels_for_regions(reg, labels=labels).tolist() == ["good", "striping", None]
    csv.write_text("id,quality_class\nT1,cloudy\n")
    with pytest.raises(ValueError, match="labels.csv:2.*cloudy"):
        quality.read_label_csv(csv)


# ----------------------------------------------------------------- evaluation


def test_accuracy_by_sky_splits_full_and_edge_regions_by_hand():
    scored = pd.DataFrame({
        "valid_fraction": [1.0, 0.96, 0.95, 0.6, 0.5],
        "truth": ["good", "striping", "good", "high_noise", "good"],
        "quality_class": ["good", "striping", "striping", "striping", "good"],  # M3
        "quality_class_m1": ["good"] * 5,
        "quality_class_m2": ["good", "striping", "good", "high_noise", "striping"],
    })
    by = quality_eval.accuracy_by_sky(scored)
    assert by["full"]["n_regions"] == 3 and by["edge"]["n_regions"] == 2
    assert by["full"]["accuracy_m3"] == pytest.approx(2 / 3) and by["edge"]["accuracy_m3"] == 0.5
    assert by["full"]["accuracy_m1"] == pytest.approx(2 / 3) and by["edge"]["accuracy_m1"] == 0.5
    assert by["full"]["accuracy_m2"] == 1.0 and by["edge"]["accuracy_m2"] == 0.5
    assert np.isnan(quality_eval.accuracy_by_sky(scored[scored.valid_fraction < 0.9])["full"]["accuracy_m3"])


def test_confusion_and_precision_recall_by_hand():
    truth = ["good", "good", "striping", "artefacts"]
    pred = ["good", "striping", "striping", "good"]
    m = quality_eval.confusion(truth, pred)
    assert m[0].tolist() == [1, 0, 0, 1, 0] and m[3, 3] == 1 and m[1, 0] == 1 and m.sum() == 4
    pr = quality_eval.precision_recall(m)
    assert pr["good"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert pr["striping"]["precision"] == 0.5 and pr["striping"]["recall"] == 1.0
    assert np.isnan(pr["poor_psf"]["precision"]) and pr["poor_psf"]["support"] == 0
