"""Entry point of rule evaluate_detections: detector, SEP-island baseline, association and hosts vs truth."""

from skysift.detection.evaluate import evaluate_detection_tiles
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    i, p = snakemake.input, snakemake.params
    n = p.n_shards
    tiles = [
        {"detections": list(i.detections[k * n : (k + 1) * n]), "cutouts": i.cutouts[k], "components": i.components[k],
         "sources": i.sources[k], "truth_sources": i.truth_sources[k], "truth_components": i.truth_components[k],
         "radio": i.radio[k]}
        for k in range(len(i.cutouts))
    ]
    evaluate_detection_tiles(tiles, scheme=p.categories, json_path=snakemake.output.json, png_path=snakemake.output.png,
                             extract_settings=p.extract, min_snr=p.min_snr, overlap_threshold=p.overlap_threshold,
                             min_prob=p.min_prob)
