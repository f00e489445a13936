"""Training sets of the detector (skysift.detection.labels): simulator truth and COCO labels by sky position."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from numpy.testing import assert_array_equal

from conftest import casda_header, gaussian_image, simulate_files, write_tile
from skysift import simulate as sim
from skysift.detection import labels
from skysift.masks import decode_mask
from skysift.tileio import open_tile

RA, DEC = 150.0, -30.0


@pytest.mark.parametrize("nc, npk, expected", [
    (1, 1, "1C_1P"), (1, 2, "1C_2P"), (1, 5, "1C_3P"), (2, 2, "2C_2P"), (2, 1, "2C_2P"),
    (2, 3, "2C_3P"), (3, 3, "3C_3P"), (4, 6, "3C_3P"), (0, 0, "1C_1P"),
])
def test_rgz_category_maps_to_the_six_classes(nc, npk, expected):
    assert labels.rgz_category(nc, npk) == expected
    assert expected in labels.SCHEMES["rgz"]


def test_annotate_cutout_clips_to_the_cutout_and_valid_pixels():
    finite = np.ones((16, 16), dtype=bool)
    finite[:, 14:] = False  # blanked columns
    square = np.ones((6, 6), dtype=bool)
    sources = [("a", 100 + 12, 200 + 2, square),  # cut by the right edge and the NaN columns
               ("b", 100 + 3, 200 + 5, square),   # inside
               ("c", 100 - 5, 200, square),       # one column on the cutout: 6 px -> kept
               ("d", 100 + 20, 200, square)]      # off the cutout
    anns = labels.annotate_cutout(finite, 100, 200, sources, [1, 2, 3, 4], min_pixels=4)
    by_id = {a["source_id"]: a for a in anns}
    assert set(by_id) == {"a", "b", "c"}
    assert by_id["a"]["bbox"] == [12, 2, 2, 6] and by_id["a"]["area"] == 12 and by_id["a"]["truncated"]
    assert by_id["b"]["bbox"] == [3, 5, 6, 6] and not by_id["b"]["truncated"] and by_id["b"]["category_id"] == 2
    assert by_id["c"]["bbox"] == [0, 0, 1, 6]
    m = decode_mask(json.dumps(by_id["b"]["segmentation"]))
    assert m.shape == (16, 16) and m[5:11, 3:9].all() and m.sum() == 36


@pytest.fixture(scope="module")
def sim_tile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels_sim")
    settings = sim.SimulationSettings(size=256, density_5sigma=3000.0, extended_fraction=0.3)
    paths = simulate_files(folder, "T1", 3, settings, ra=RA, dec=DEC)
    return folder, paths


def test_simulated_training_set_annotates_every_bright_source(sim_tile):
    folder, (radio, ir, tc, ts, _) = sim_tile
    out = labels.build_simulated_training_set(radio, ts, tc, "T1", folder / "t.h5", folder / "t.json", ir_path=ir,
                                              size=64, overlap=16, scheme="rgz", min_snr=5.0)
    doc, h5_path = labels.read_training_set(folder / "t.json")
    assert h5_path == folder / "t.h5" and out["images"] == len(doc["images"]) == 25  # 5 x 5 grid
    assert [c["name"] for c in doc["categories"]] == list(labels.SCHEMES["rgz"])
    with h5py.File(h5_path) as f:
        assert f["radio"].shape == (25, 64, 64) and f["ir"].shape == (25, 64, 64)
        radio_cutouts = f["radio"][:]
    truth = pd.read_parquet(ts)
    snr = pd.read_parquet(tc).groupby("source_id").snr.max()
    bright = truth[truth.source_id.map(snr) >= 5]
    annotated = {a["source_id"] for a in doc["annotations"]}
    # every bright source with >= 4 valid mask pixels is annotated on some cutout; no faint one is
    for row in bright.itertuples():
        m = decode_mask(row.mask_rle)
        tile = open_tile(radio)
        valid = np.isfinite(tile.data[row.bbox_y_min : row.bbox_y_max, row.bbox_x_min : row.bbox_x_max]) & m
        assert (row.source_id in annotated) == (valid.sum() >= 4), row.source_id
    assert annotated <= set(bright.source_id)
    for a in doc["annotations"]:
        im = doc["images"][a["image_id"]]
        m = decode_mask(json.dumps(a["segmentation"]))
        x, y, w, h = a["bbox"]
        assert m.sum() == a["area"] and m[y : y + h, x : x + w].sum() == a["area"]
        assert np.isfinite(radio_cutouts[im["index"]][m]).all()
    fr = labels.build_simulated_training_set(radio, ts, tc, "T1", folder / "f.h5", folder / "f.json", size=64,
                                             overlap=16, scheme="fr")
    assert set(fr["per_category"]) == {"FR-I", "FR-II", "FR-X", "R"} and fr["annotations"] == out["annotations"]


# ------------------------------------------------------------------- labels placed by sky position


@pytest.fixture
def labelled_tile(tmp_path):
    """A 200 x 240 tile with two point sources; a manifest dict for it."""
    beam_sigma = 7.5 / 2.3548
    img = gaussian_image(200, 240, [(60, 50, 5e-3), (170, 120, 3e-3)], beam_sigma_pix=beam_sigma, rms=25e-6)
    path = write_tile(tmp_path / "tile.fits", img, casda_header(200, 240, ra=RA, dec=DEC))
    return {"T1": {"radio_path": str(path), "ir_path": None}}, path


def _doc(images, annotations, categories=None, info=None):
    doc = {"images": images, "annotations": annotations,
           "categories": categories or [{"id": 1, "name": "1C_1P"}, {"id": 2, "name": "2C_2P"}]}
    if info:
        doc["info"] = info
    return doc


def test_labels_by_sky_position_land_on_the_source(tmp_path, labelled_tile):
    tiles, path = labelled_tile
    tile = open_tile(path)
    sky = tile.wcs.pixel_to_world(170, 120).icrs
    # a 60" x 60" label image at 1"/px (not the tile's 2"/px), stored top row first like a PNG,
    # centred 10" north of the source; the box covers 20" x 20" around the source
    centre = sky.directional_offset_by(0 * u.deg, 10 * u.arcsec)
    # the source is at label pixel (29.5, 19.5) counted from the bottom, i.e. row 39.5 from the top
    box = [20, 30, 20, 20]
    doc = _doc([{"id": 7, "ra": centre.ra.deg, "dec": centre.dec.deg, "size": 60, "width": 60, "height": 60}],
               [{"id": 1, "image_id": 7, "category_id": 1, "bbox": box}], info={"y_axis": "south"})
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    out = labels.build_labelled_training_set(tmp_path / "labels.json", tiles, tmp_path / "l.h5", tmp_path / "l.json",
                                             size=64, scheme="rgz")
    assert out == {"images": 1, "annotations": 1}
    coco, _ = labels.read_training_set(tmp_path / "l.json")
    im, ann = coco["images"][0], coco["annotations"][0]
    x, y, w, h = ann["bbox"]
    # 20" = 10 tile pixels; the box centre is the source (tile pixel 170, 120) to a pixel
    assert w == pytest.approx(10, abs=1) and h == pytest.approx(10, abs=1)
    assert im["x_min"] + x + w / 2 - 0.5 == pytest.approx(170, abs=1.0)
    assert im["y_min"] + y + h / 2 - 0.5 == pytest.approx(120, abs=1.0)
    with h5py.File(tmp_path / "l.h5") as f:
        cut = f["radio"][0]
    peak = np.unravel_index(np.nanargmax(cut), cut.shape)
    assert peak == (120 - im["y_min"], 170 - im["x_min"])


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0].update(bbox=[50, 50, 20, 20]), r"annotation id=1 \(image 7\): bbox .* outside"),
    (lambda d: d["annotations"][0].update(bbox=[5, 5, 0, 3]), r"annotation id=1 \(image 7\): bbox .* empty"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [60, 60], "counts": [3600]}),
     r"annotation id=1 \(image 7\): empty mask"),
    (lambda d: d["annotations"][0].update(category_id=9), r"annotation id=1 \(image 7\): unknown category id 9"),
    (lambda d: d["categories"].append({"id": 3, "name": "FR-II"}), r"category id=3: unknown category 'FR-II'"),
    (lambda d: d["annotations"][0].update(image_id=8), r"annotation id=1 \(image 8\): unknown image"),
    (lambda d: d["images"][0].pop("ra"), r"image id=7: missing 'ra'"),
    (lambda d: d["images"][0].update(dec=-95), r"image id=7: position .* is not on the sky"),
])
def test_bad_label_records_are_named(tmp_path, change, message):
    doc = _doc([{"id": 7, "ra": RA, "dec": DEC, "size": 60, "width": 60, "height": 60}],
               [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 20]}])
    change(doc)
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(labels.LabelError, match=message) as err:
        labels.read_sky_coco(tmp_path / "labels.json", "rgz")
    assert str(err.value).startswith(str(tmp_path / "labels.json"))


def test_label_off_every_tile_is_named(tmp_path, labelled_tile):
    tiles, _ = labelled_tile
    doc = _doc([{"id": 3, "ra": RA + 5, "dec": DEC, "size": 60, "width": 60, "height": 60}],
               [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [10, 10, 20, 20]}])
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(labels.LabelError, match=r"image id=3: centre .* lies on no training tile \(T1\)"):
        labels.build_labelled_training_set(tmp_path / "labels.json", tiles, tmp_path / "l.h5", tmp_path / "l.json")
    assert not (tmp_path / "l.h5").exists() and not (tmp_path / "l.json").exists()


def test_label_frame_wcs_is_north_up_east_left():
    w = labels.label_frame_wcs(RA, DEC, 60, 60, 40)
    c = w.pixel_to_world(29.5, 19.5)
    assert c.separation(SkyCoord(RA, DEC, unit="deg")).arcsec < 1e-6
    east = w.pixel_to_world(19.5, 19.5)  # 10 px to the left: 10" east
    assert c.position_angle(east).deg == pytest.approx(90, abs=1e-3)
    assert c.separation(east).arcsec == pytest.approx(10, rel=1e-4)
    assert_array_equal(w.pixel_shape, (60, 40))
