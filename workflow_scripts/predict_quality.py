"""Entry point of rule predict_quality: M1/M2/M3 quality probabilities of every region of a tile."""

import torch

from skysift.catalogue import write_parquet
from skysift.columns import QUALITY_REGIONS
from skysift.quality import load_quality_model, predict_regions
from skysift.runtime import rule_logging
from skysift.stamps import read_stamps

with rule_logging(snakemake.log[0], snakemake.threads):
    torch.set_num_threads(snakemake.threads)
    regions = predict_regions(load_quality_model(snakemake.input.model), read_stamps(snakemake.input.stamps))
    write_parquet(regions, QUALITY_REGIONS, snakemake.output.quality, {"tile_id": snakemake.wildcards.tile})
