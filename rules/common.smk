# Helpers shared by all rules. Configuration, the tile manifest, wildcard constraints
# and the input/param functions (the stage files hold rules only). Everything here runs at parse
# time, which every SLURM job repeats: keep it to reading one small CSV.

import csv
import hashlib
import json
import re
from pathlib import Path

from snakemake.utils import validate

validate(config, "../config/schema/config.schema.yaml", set_default=True)

TILE_ID_REGEX = r"[A-Za-z0-9_+.-]+"
TILE_ID_PATTERN = re.compile(f"^{TILE_ID_REGEX}$")


class ManifestError(ValueError):
    pass


def resolve_config_path(path):
    """A path from the config: as given if it exists, else relative to the workflow folder."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    candidate = Path(workflow.basedir) / p
    return candidate if candidate.exists() else p


def read_manifest(path):
    """Tile manifest as {tile_id: {"radio_path": str, "ir_path": str or None}}."""
    path = resolve_config_path(path)
    if not path.exists():
        raise ManifestError(
            f"{path}: tile manifest not found (config key tiles.manifest)"
        )
    tiles = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"tile_id", "radio_path", "ir_path"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(
                f"{path}: missing column(s) {sorted(missing)}; need tile_id,radio_path,ir_path"
            )
        for line, row in enumerate(reader, start=2):
            tile_id = (row["tile_id"] or "").strip()
            radio = (row["radio_path"] or "").strip()
            if not TILE_ID_PATTERN.match(tile_id):
                raise ManifestError(
                    f"{path}:{line}: tile_id {tile_id!r} must match [A-Za-z0-9_+.-]+"
                )
            if tile_id in tiles:
                raise ManifestError(f"{path}:{line}: duplicate tile_id {tile_id!r}")
            if not radio:
                raise ManifestError(
                    f"{path}:{line}: tile {tile_id!r} has an empty radio_path"
                )
            tiles[tile_id] = {
                "radio_path": radio,
                "ir_path": (row["ir_path"] or "").strip() or None,
            }
    if not tiles:
        raise ManifestError(f"{path}: the manifest lists no tile")
    return tiles


TILES = read_manifest(config["tiles"]["manifest"])
SIM_TILES = {t["tile_id"]: t for t in config["simulation"]["tiles"]}
SIM_SETTINGS = {k: v for k, v in config["simulation"].items() if k != "tiles"}
# Tiles with simulator truth are scored against it.
TRUTH_TILES = [t for t in TILES if t in SIM_TILES]


def alternatives(names):
    """Regex matching exactly one of the given names (EMU ids hold '+' and '.')."""
    return "|".join(map(re.escape, sorted(names))) or "(?!)"


def config_hash(section_names):
    """Short SHA-256 of the config sections that shape the catalogue (provenance)."""
    sections = {k: config[k] for k in section_names}
    text = json.dumps(sections, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The catalogue of a tile depends on these sections; tiles.manifest and evaluation do not
# change it, so adding a tile does not invalidate the other tiles' catalogues.
CATALOGUE_CONFIG_HASH = config_hash(["cutouts", "extract", "training"])
N_SHARDS = config["cutouts"]["n_shards"]


def get_tile(tile_id):
    """The manifest entry of a tile; a clear error for an id the manifest does not list."""
    try:
        return TILES[tile_id]
    except KeyError:
        raise ManifestError(
            f"tile {tile_id!r} is not in the manifest {config['tiles']['manifest']}"
        ) from None


def get_tile_radio(wildcards):
    return get_tile(wildcards.tile)["radio_path"]


def get_tile_ir(wildcards):
    ir = get_tile(wildcards.tile)["ir_path"]
    return {"ir": ir} if ir else {}


def get_sim_tile(wildcards):
    return SIM_TILES[wildcards.sim_tile]


def get_sim_outputs_ir():
    return {"ir": "results/simulated/{sim_tile}/ir.fits"} if SIM_SETTINGS["ir"] else {}


def get_tile_mem_mb(wildcards, input, attempt):
    """Three times the tile's images on disk (at least 1 GB), more on each retry.

    The images are the radio file and, for a job that reads it (an input named ``ir``), the IR
    image: shard_tile holds both (a 12k^2 EMU-like tile, 0.58 GB, and its 23.5k^2 IR image,
    2.2 GB, peaked at 5.1 GB RSS). Their sizes come from the manifest's paths, not
    input.size_mb: those exist when a SLURM group job (a tile's inspect + shard + extract) is
    submitted, while the group's own intermediate files do not, and Snakemake then leaves such
    a job's memory out of the group's --mem request. Any per-tile rule can use it.
    """
    paths = [TILES[wildcards.tile]["radio_path"]]
    if "ir" in input.keys() and TILES[wildcards.tile]["ir_path"]:
        paths.append(TILES[wildcards.tile]["ir_path"])
    size_mb = sum(Path(p).stat().st_size / 1e6 for p in paths if Path(p).exists())
    return max(1000, int(3 * size_mb)) * attempt


def catalogue_paths(table):
    return expand(
        "results/catalogue/{tile}/{table}.parquet", tile=sorted(TILES), table=table
    )


def truth_paths(name):
    return expand("results/simulated/{tile}/{name}", tile=TRUTH_TILES, name=name)


def get_final_outputs():
    outputs = catalogue_paths(["sources", "components", "cutouts"]) + ["results/survey"]
    if TRUTH_TILES:
        outputs += [
            "results/evaluation/components.json",
            "results/evaluation/components.png",
        ]
    return outputs
