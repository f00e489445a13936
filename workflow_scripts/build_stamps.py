"""Entry point of rule build_stamps: per-region SOM cluster counts and representative stamps of a tile."""

from skysift.catalogue import read_parquet
from skysift.runtime import rule_logging
from skysift.stamps import build_stamps
from skysift.tileio import open_tile

with rule_logging(snakemake.log[0], snakemake.threads):
    s = snakemake.params.stamps
    build_stamps(open_tile(snakemake.input.radio), snakemake.wildcards.tile, read_parquet(snakemake.input.components),
                 read_parquet(snakemake.input.som), snakemake.output.stamps,
                 region_size=snakemake.params.region_size, stamp_size=s["size"],
                 n_clusters=snakemake.params.n_clusters, binning=s["binning"], compression=s["compression"])
