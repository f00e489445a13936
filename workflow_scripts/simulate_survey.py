"""Entry point of rule simulate_survey: one simulated EMU-like tile with its truth."""

from skysift.runtime import rule_logging
from skysift.simulate import SimulationSettings, simulate_tile

with rule_logging(snakemake.log[0], snakemake.threads):
    tile = snakemake.params.tile
    simulate_tile(
        tile["tile_id"], tile["ra"], tile["dec"], tile["seed"],
        SimulationSettings(**snakemake.params.settings, defects=snakemake.params.defects,
                           region_size=snakemake.params.region_size),
        radio_path=snakemake.output.radio,
        ir_path=snakemake.output.get("ir"),
        truth_components_path=snakemake.output.truth_components,
        truth_sources_path=snakemake.output.truth_sources,
        meta_path=snakemake.output.meta,
        truth_regions_path=snakemake.output.truth_regions,
    )
