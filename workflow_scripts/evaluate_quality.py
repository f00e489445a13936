"""Entry point of rule evaluate_quality: M1/M2/M3 region classes scored against simulator truth."""

from skysift.quality_eval import evaluate_quality
from skysift.runtime import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):
    evaluate_quality(list(snakemake.input.quality), list(snakemake.input.truth), json_path=snakemake.output.json,
                     png_path=snakemake.output.png, min_valid_fraction=snakemake.params.min_valid_fraction)
