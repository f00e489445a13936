"""Entry point of rule map_som: SOM best-matching unit and cluster of every component of a tile."""

import pandas as pd

from skysift.catalogue import read_parquet, write_parquet
from skysift.columns import SOM_MAP
from skysift.runtime import rule_logging
from skysift.som import load_som

with rule_logging(snakemake.log[0], snakemake.threads):
    components = read_parquet(snakemake.input.components)
    bmu_x, bmu_y, cluster = load_som(snakemake.input.som).map(components, chunk=snakemake.params.chunk)
    table = pd.DataFrame({"component_id": components["component_id"], "som_bmu_x": bmu_x, "som_bmu_y": bmu_y,
                          "som_cluster": cluster})
    write_parquet(table, SOM_MAP, snakemake.output.som, {"tile_id": snakemake.wildcards.tile})
