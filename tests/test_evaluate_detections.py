"""evaluate_detections: a perfect detector scores ~1 and beats the SEP-island baseline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import simulate_files
from skysift import simulate as sim
from skysift.catalogue import merge_tile, write_parquet
from skysift.columns import COMPONENTS, CUTOUTS, DETECTIONS
from skysift.cutouts import write_shards
from skysift.detection.evaluate import association_scores, evaluate_detection_tiles
from skysift.detection.labels import SCHEMES, truth_categories
from skysift.extract import ExtractSettings, extract_components
from skysift.masks import decode_mask
from skysift.tileio import celestial_header, open_tile
from test_sources import oracle_detections


def test_tile_rle_equals_pycocotools_on_the_full_image():
    from pycocotools import mask as mask_utils

    from skysift.detection.evaluate import _tile_rle

    rng = np.random.default_rng(0)
    for _ in range(300):
        ny, nx = rng.integers(1, 30, 2)
        m = rng.random(rng.integers(1, 10, 2)) < rng.random()
        x0, y0 = int(rng.integers(-5, nx)), int(rng.integers(-5, ny))
        full = np.zeros((ny, nx), np.uint8, order="F")
        ys, ye, xs, xe = max(y0, 0), min(y0 + m.shape[0], ny), max(x0, 0), min(x0 + m.shape[1], nx)
        if ys < ye and xs < xe:
            full[ys:ye, xs:xe] = m[ys - y0 : ye - y0, xs - x0 : xe - x0]
        assert _tile_rle(x0, y0, m, (ny, nx))["counts"] == mask_utils.encode(full)["counts"].decode()


def test_association_scores_by_hand():
    truth = np.array([1, 1, 2, 2, 3, 0, 4])
    source = np.array(["a", "a", "b", "c", "c", "c", "d"])
    s = association_scores(truth, source)
    # truth 1 (a, a) complete, truth 2 (b, c) split; source c holds truths 2 and 3: impure, source a pure
    assert s == {"completeness": 0.5, "purity": 0.5, "n_truth": 2, "n_sources": 2}


@pytest.mark.parametrize("scheme", ["rgz", "fr"])
def test_a_perfect_detector_scores_one_and_beats_sep_islands(tmp_path, scheme):
    settings = sim.SimulationSettings(size=256, density_5sigma=3000.0, extended_fraction=0.3)
    paths = simulate_files(tmp_path, "T1", 4, settings)
    tile = open_tile(paths[0])
    truth = pd.read_parquet(paths[3])
    truth = truth[truth.mask_rle.notna()].reset_index(drop=True)
    masks = [(int(r.bbox_x_min), int(r.bbox_y_min), decode_mask(r.mask_rle)) for r in truth.itertuples()]
    names = list(SCHEMES[scheme])
    cats = [names.index(c) for c in truth_categories(truth, scheme)]
    cutouts = write_shards(tile, "T1", [str(tmp_path / "shard-0.h5")], size=64, overlap=16)
    hx, hy = tile.wcs.world_to_pixel_values(truth.host_ra.to_numpy(), truth.host_dec.to_numpy())
    rank = np.argsort(np.argsort([-m.sum() for _, _, m in masks]))  # smaller masks score higher, as the
    # evaluation's truth map puts them on top: a component on both a compact source and a lobe joins the former
    det = oracle_detections(masks, cutouts, finite=np.isfinite(tile.data), categories=names, labels=cats,
                            scores=0.85 + 0.14 * rank / len(rank), hosts=list(zip(hx, hy)), tile_id="T1",
                            min_pixels=1)
    meta = {"tile_id": "T1", "model_id": "oracle", "categories": json.dumps(names),
            "wcs_header": celestial_header(tile.header).tostring()}
    write_parquet(det, DETECTIONS, tmp_path / "det.parquet", meta)
    write_parquet(cutouts, CUTOUTS, tmp_path / "cutouts.parquet")
    write_parquet(extract_components(tile, "T1", ExtractSettings()), COMPONENTS, tmp_path / "comps.parquet")
    # the catalogue as rule merge_tile_catalogue writes it
    out = {k: tmp_path / f"cat_{k}.parquet" for k in ("components", "cutouts", "sources")}
    merge_tile("T1", tmp_path / "comps.parquet", tmp_path / "cutouts.parquet", out, config_digest="0" * 16,
               detections_paths=[tmp_path / "det.parquet"],
               detection_settings={"min_score": 0.5, "flag_score": 0.8, "overlap_threshold": 0.5})
    src = pd.read_parquet(out["sources"])
    assert json.loads(pq.read_schema(out["sources"]).metadata[b"morph_classes"]) == names
    assert (src.origin == "detection").sum() > 0 and (src.model_id.dropna() == "oracle").all()
    comps = pd.read_parquet(out["components"])
    assert set(comps.source_id) <= set(src.source_id)
    result = evaluate_detection_tiles(
        [{"detections": [tmp_path / "det.parquet"], "cutouts": tmp_path / "cutouts.parquet",
          "components": out["components"], "sources": out["sources"],
          "truth_sources": paths[3], "truth_components": paths[2], "radio": paths[0]}],
        scheme=scheme, json_path=tmp_path / "detections.json", png_path=tmp_path / "detections.png",
        extract_settings={"thresh_sigma": 5.0})
    out = result
    saved = json.loads((tmp_path / "detections.json").read_text())
    for key in ("box_map50", "mask_map50", "host_within_3arcsec", "association_completeness", "association_purity",
                "baseline_box_map50"):
        assert key in saved and saved[key] == pytest.approx(out[key], nan_ok=True)
    assert out["box_map50"] > 0.98 and out["mask_map50"] > 0.98
    tile = out["tiles"]["T1"]  # one tile: its own figures are the survey's
    assert (tile["box_map50"], tile["mask_map50"], tile["baseline_box_map50"]) == pytest.approx(
        (out["box_map50"], out["mask_map50"], out["baseline_box_map50"]))
    # the oracle's probabilities are the model's (no recount), so both conventions agree
    assert out["box_map50_model_probs"] == pytest.approx(out["box_map50"])
    assert out["baseline_box_map50"] < out["box_map50"] and out["beats_baseline"]
    # class-agnostic: the oracle finds every source; SEP islands merge blends and split lobes
    assert out["agnostic_box_map50"] > 0.98
    assert out["baseline_agnostic_box_map50"] < out["agnostic_box_map50"] and out["beats_baseline_agnostic"]
    assert out["host_within_3arcsec"] > 0.95
    by_morph = out["tiles"]["T1"]["hosts"]["by_morphology"]
    assert sum(n for _, n in by_morph.values()) == out["n_hosts"]
    assert sum(k for k, _ in by_morph.values()) == round(out["host_within_3arcsec"] * out["n_hosts"])
    assert sum(n for m, (_, n) in by_morph.items() if m != "compact") == out["n_hosts_extended"]
    assert out["association_purity"] > 0.9 and out["association_completeness"] > 0.9
    assert out["n_association_truth_sources"] > 0
    assert (tmp_path / "detections.png").stat().st_size > 0
    assert set(out["box_ap50_per_class"]) == set(names)
    # the oracle's boxes are the truth's: complete at every S/N; SEP's 5-sigma islands are smaller
    oracle = [b for b in saved["completeness_by_snr"] if b["n"]]
    assert oracle and all(b["completeness"] > 0.95 for b in oracle)
    assert sum(b["found"] for b in saved["baseline_completeness_by_snr"]) < sum(b["found"] for b in oracle)


def test_class_hypotheses_score_the_runner_up_class_a_top1_list_misses():
    """Two sources, a 1C_1P and a 1C_2P; the detector calls both 1C_1P, with 0.35 on 1C_2P for
    the second. Top-1 scores 1C_2P zero; the class hypotheses (pycocotools' convention for
    class probabilities) find it at rank 1 of the 1C_2P list."""
    from skysift.detection.cocoeval import coco_average_precision
    from skysift.detection.evaluate import _tile_rle, class_hypotheses

    shape = (40, 40)
    box = np.ones((6, 6), bool)
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(SCHEMES["rgz"])]
    images = [{"id": 0, "width": 40, "height": 40}]
    gt = [{"image_id": 0, "category_id": c, "bbox": [x, 5, 6, 6], "area": 36.0, "iscrowd": 0,
           "segmentation": _tile_rle(x, 5, box, shape)} for c, x in ((1, 5), (2, 25))]
    top1 = [{"image_id": 0, "category_id": 1, "bbox": [x, 5, 6, 6], "score": s,
             "segmentation": _tile_rle(x, 5, box, shape)} for x, s in ((5, 0.9), (25, 0.6))]
    probs = [np.array([0.9, 0.04, 0.0, 0.0, 0.0, 0.0]), np.array([0.6, 0.35, 0.01, 0.0, 0.0, 0.0])]
    hyps = class_hypotheses(top1, probs, 0.05)
    assert [(h["category_id"], h["score"]) for h in hyps] == [(1, 0.9), (1, 0.6), (2, 0.35)]
    assert all(h["bbox"] == r["bbox"] for h, r in zip(hyps, [top1[0], top1[1], top1[1]]))
    ap_top1 = coco_average_precision(images, gt, top1, cats)["bbox"]["ap50_per_class"]
    ap_hyp = coco_average_precision(images, gt, hyps, cats)["bbox"]["ap50_per_class"]
    assert ap_top1["1C_2P"] == 0.0 and ap_hyp["1C_2P"] == pytest.approx(1.0)
    # the 1C_1P list is unchanged: the extra hypothesis is another class's
    assert ap_hyp["1C_1P"] == pytest.approx(ap_top1["1C_1P"])
    # below min_prob no hypothesis, but the top class always stays
    assert [h["category_id"] for h in class_hypotheses(top1, probs, 0.95)] == [1, 1]


def test_completeness_by_snr_by_hand():
    from skysift.detection.evaluate import completeness_by_snr, completeness_edges

    def gt(image_id, x, snr, crowd=0):
        return {"image_id": image_id, "bbox": [x, 0, 10, 10], "iscrowd": crowd, "snr": snr}

    truth = [gt(0, 0, 5.5), gt(0, 30, 5.8), gt(0, 60, 12.0), gt(0, 90, 4.0, crowd=1), gt(1, 0, 5.2)]
    dets = [{"image_id": 0, "bbox": [1, 0, 10, 10]},  # IoU 0.82 with the first: found
            {"image_id": 0, "bbox": [30, 5, 10, 10]},  # IoU 0.33 with the second: not found
            {"image_id": 0, "bbox": [90, 0, 10, 10]},  # on the ignore region: counts for nothing
            {"image_id": 1, "bbox": [60, 0, 10, 10]}]  # where the S/N 12 source is, but on another image
    bins = completeness_by_snr(truth, dets, edges=(5.0, 6.0, 10.0, np.inf))
    assert [(b["snr_min"], b["snr_max"], b["n"], b["found"]) for b in bins] == [
        (5.0, 6.0, 3, 1), (6.0, 10.0, 0, 0), (10.0, None, 1, 0)]
    assert bins[0]["completeness"] == pytest.approx(1 / 3) and np.isnan(bins[1]["completeness"])
    assert bins[2]["completeness"] == 0.0
    # the bins start where scoring does (evaluation.min_snr)
    assert completeness_edges(5.0) == (5.0, 6.0, 7.0, 8.0, 10.0, 15.0, np.inf)
    assert completeness_edges(3.0) == (3.0, 5.0, 6.0, 7.0, 8.0, 10.0, 15.0, np.inf)
    assert completeness_edges(6.5) == (6.5, 7.0, 8.0, 10.0, 15.0, np.inf)
    # the first source's own box finds it; a detection twice its size does not (IoU 0.25)
    assert completeness_by_snr(truth[:1], [{"image_id": 0, "bbox": [0, 0, 20, 20]}], edges=(5, 6))[0]["found"] == 0
