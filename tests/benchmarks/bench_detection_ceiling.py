"""
Benchmark: what the merge and the IR host search reach with a perfect detector.

The goals of `evaluate_detections` (hosts within 3" >= 95 %, association completeness and
purity >= 95 %) score the whole chain: the detector's masks, then the host search in
`infer_shard` and the component association of `merge_tile_catalogue`. This script feeds that
chain the simulator's truth masks instead of a model's, through the production code:

    cutouts       `skysift.cutouts.write_shards` (radio + IR reprojected, like rule shard_tile)
    detections    one per truth source per cutout: its truth mask clipped to the cutout and to
                  finite pixels, its truth class (probability `--score`; smaller sources score
                  higher, so a component on a compact source and a lobe joins the former), the
                  mask as the soft mask too; rows and IR hosts by `skysift.detection.infer._rows`,
                  the function infer_shard uses, with the shard's beam
    components    `skysift.extract.extract_components` (the default, the config's, settings)
    catalogue     `skysift.catalogue.merge_tile` with the default detection settings
    scores        `skysift.detection.evaluate.evaluate_detection_tiles`

so what remains below the goals is the ceiling of the host search and of the association, not
the model's. Prints box / mask mAP50 (a check: ~1), then per tile and in all: hosts within 3"
(all, extended, median offset), association completeness / purity (with the numbers of
multi-component truth and catalogue sources), then hosts within 3" per truth morphology
(`host_scores`' ``by_morphology``).

    .venv/bin/python tests/benchmarks/bench_detection_ceiling.py \\
        [--tiles results/simulated/SIM_2154-55 ...] [--scheme rgz] [--host-ir-psf-fwhm 6.1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "workflow_scripts"))


def oracle_output(truth_masks, labels, scores, n_classes, x0, y0, size, finite):
    """
    A perfect detector's output on one cutout, in the `_windowed` form `_rows` reads.

    truth_masks : list of (x0, y0, bool mask) on the tile grid; labels: 0-based classes;
    finite : bool (size, size) finite radio pixels of the cutout.
    """
    import numpy as np

    boxes, keep_scores, keep_labels, probs, masks = [], [], [], [], []
    for (mx, my, m), label, score in zip(truth_masks, labels, scores):
        xs, xe = max(mx, x0), min(mx + m.shape[1], x0 + size)
        ys, ye = max(my, y0), min(my + m.shape[0], y0 + size)
        if xs >= xe or ys >= ye:
            continue
        part = m[ys - my : ye - my, xs - mx : xe - mx] & finite[ys - y0 : ye - y0, xs - x0 : xe - x0]
        if not part.any():
            continue
        rows, cols = np.nonzero(part.any(axis=1))[0], np.nonzero(part.any(axis=0))[0]
        part = part[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        ya, xa = ys - y0 + rows[0], xs - x0 + cols[0]
        boxes.append([xa, ya, xa + part.shape[1], ya + part.shape[0]])
        p = np.full(n_classes, (1 - score) / max(1, n_classes - 1), dtype=np.float32)
        p[label] = score
        keep_scores.append(score), keep_labels.append(label + 1), probs.append(p)
        masks.append(((ya, ya + part.shape[0], xa, xa + part.shape[1]), part.astype(np.float32)))
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.asarray(keep_scores),
            "labels": np.asarray(keep_labels, dtype=int), "probs": np.asarray(probs).reshape(-1, n_classes),
            "masks": masks}


def ceiling_tile(tile_dir, work, *, scheme, score, host_ir_psf_fwhm, settings, recount_peaks=True):
    """Write the oracle detections, components and catalogue of one simulated tile; return its paths."""
    import h5py
    import numpy as np
    import pandas as pd

    from skysift.catalogue import merge_tile, write_parquet
    from skysift.columns import COMPONENTS, CUTOUTS, DETECTIONS
    from skysift.cutouts import write_shards
    from skysift.detection.infer import _rows
    from skysift.detection.labels import SCHEMES, truth_categories
    from skysift.extract import ExtractSettings, extract_components
    from skysift.masks import decode_mask
    from skysift.tileio import gaussian_sigma_pixels, open_tile

    tile_dir = Path(tile_dir)
    tile_id = tile_dir.name
    tile = open_tile(tile_dir / "radio.fits")
    truth = pd.read_parquet(tile_dir / "truth_sources.parquet")
    truth = truth[truth.mask_rle.notna()].reset_index(drop=True)
    names = list(SCHEMES[scheme])
    labels = [names.index(c) for c in truth_categories(truth, scheme)]
    masks = [(int(r.bbox_x_min), int(r.bbox_y_min), decode_mask(r.mask_rle)) for r in truth.itertuples()]
    npix = np.array([m.sum() for _, _, m in masks])
    rank = np.argsort(np.argsort(-npix, kind="stable"), kind="stable")
    scores = score + (0.999 - score) * rank / max(1, len(rank))
    shards = [work / f"{tile_id}-shard-{k}.h5" for k in range(settings["n_shards"])]
    cutouts = write_shards(tile, tile_id, [str(p) for p in shards], size=settings["size"],
                           overlap=settings["overlap"], ir_path=str(tile_dir / "ir.fits"))
    write_parquet(cutouts, CUTOUTS, work / f"{tile_id}-cutouts.parquet")
    rows, meta = [], None
    for shard in shards:
        with h5py.File(shard, "r") as f:
            attrs = dict(f.attrs)
            sigma = gaussian_sigma_pixels(host_ir_psf_fwhm, str(attrs["wcs_header"])) if host_ir_psf_fwhm > 0 else 0.0
            beam = gaussian_sigma_pixels(attrs["bmaj_arcsec"], str(attrs["wcs_header"]))
            ids = [c.decode() if isinstance(c, bytes) else str(c) for c in f["cutout_id"][:]]
            for j, cid in enumerate(ids):
                radio, ir = f["radio"][j], f["ir"][j]
                x0, y0 = int(f["x_min"][j]), int(f["y_min"][j])
                out = oracle_output(masks, labels, scores, len(names), x0, y0, radio.shape[0], np.isfinite(radio))
                rows += _rows(out, radio, ir, cid, tile_id, x0, y0, names, 0.0, sigma, beam, recount_peaks)
        meta = {"tile_id": tile_id, "model_id": "truth-masks", "categories": json.dumps(names),
                "wcs_header": str(attrs["wcs_header"])}
    det_path = work / f"{tile_id}-detections.parquet"
    write_parquet(pd.DataFrame(rows, columns=[c.name for c in DETECTIONS]), DETECTIONS, det_path, meta)
    comps_path = work / f"{tile_id}-components.parquet"
    write_parquet(extract_components(tile, tile_id, ExtractSettings()), COMPONENTS, comps_path)
    out = {k: work / f"{tile_id}-cat-{k}.parquet" for k in ("components", "cutouts", "sources")}
    merge_tile(tile_id, comps_path, work / f"{tile_id}-cutouts.parquet", out, config_digest="0" * 16,
               detections_paths=[det_path], detection_settings=settings["merge"])
    return {"detections": [det_path], "cutouts": work / f"{tile_id}-cutouts.parquet",
            "components": out["components"], "sources": out["sources"],
            "truth_sources": tile_dir / "truth_sources.parquet",
            "truth_components": tile_dir / "truth_components.parquet", "radio": tile_dir / "radio.fits"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", nargs="+", default=[str(REPO / "results/simulated/SIM_2154-55")],
                   help="simulate_survey output folders (radio.fits, ir.fits, truth_*.parquet)")
    p.add_argument("--scheme", default="rgz", choices=["rgz", "fr"])
    p.add_argument("--score", type=float, default=0.85, help="lowest oracle probability (>= source_min_score)")
    p.add_argument("--host-ir-psf-fwhm", type=float, default=6.1, help="detection.host_ir_psf_fwhm (arcsec)")
    p.add_argument("--min-snr", type=float, default=5.0, help="evaluation.min_snr")
    p.add_argument("--no-recount-peaks", action="store_true",
                   help="keep the truth classes (detection.recount_peaks: false); by default the peaks are recounted")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args(argv)

    from skysift.detection.evaluate import evaluate_detection_tiles

    settings = {"size": 256, "overlap": 64, "n_shards": 1,
                "merge": {"min_score": 0.5, "flag_score": 0.8, "overlap_threshold": 0.5}}
    work = Path(tempfile.mkdtemp(prefix="bench_ceiling_", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        tiles = [ceiling_tile(t, work, scheme=args.scheme, score=args.score, host_ir_psf_fwhm=args.host_ir_psf_fwhm,
                              settings=settings, recount_peaks=not args.no_recount_peaks) for t in args.tiles]
        out = evaluate_detection_tiles(tiles, scheme=args.scheme, json_path=work / "ceiling.json",
                                       png_path=work / "ceiling.png", extract_settings={"thresh_sigma": 5.0},
                                       min_snr=args.min_snr)
        wall = time.perf_counter() - t0
        print(f"truth masks through infer_shard's host search and merge_tile_catalogue ({wall:.0f} s; "
              f"host_ir_psf_fwhm {args.host_ir_psf_fwhm}\", scheme {args.scheme}, peaks "
              f"{'kept' if args.no_recount_peaks else 'recounted'})\n")
        print(f"box / mask mAP50 (a check: 1 with the truth classes; the recount's errors below 1): "
              f"{out['box_map50']:.3f} / {out['mask_map50']:.3f}\n")
        print("| tile | hosts within 3\" (n) | extended (n) | median offset | association completeness (n) | "
              "purity (n) |")
        print("|---|---|---|---|---|---|")
        for name, t in out["tiles"].items():
            h, a = t["hosts"], t["association"]
            print(f"| {name} | {h['within']:.3f} ({h['n']}) | {h['within_extended']:.3f} ({h['n_extended']}) | "
                  f"{h['median_offset_arcsec']:.2f}\" | {a['completeness']:.3f} ({a['n_truth']}) | "
                  f"{a['purity']:.3f} ({a['n_sources']}) |")
        print(f"| all | {out['host_within_3arcsec']:.3f} "
              f"({out['n_hosts']}) | {out['host_within_3arcsec_extended']:.3f} ({out['n_hosts_extended']}) | | "
              f"{out['association_completeness']:.3f} ({out['n_association_truth_sources']}) | "
              f"{out['association_purity']:.3f} ({out['n_association_catalogue_sources']}) |")
        print("\nhosts within 3\" by truth morphology (found / matched sources):")
        totals = {}
        for t in out["tiles"].values():
            for morph, (ok, n) in t["hosts"]["by_morphology"].items():
                totals[morph] = [a + b for a, b in zip(totals.get(morph, [0, 0]), (ok, n))]
        for morph, (ok, n) in sorted(totals.items()):
            print(f"  {morph:8s} {ok:4d} / {n:4d} = {ok / n:.3f}")
        print("\ngoals: " + ", ".join(f"{k} {g['target']}" for k, g in out["goals"].items()))
    finally:
        if args.keep:
            print(f"scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
