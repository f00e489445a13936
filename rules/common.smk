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
SIM_SETTINGS = {
    k: v for k, v in config["simulation"].items() if k not in ("tiles", "defects")
}
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
CATALOGUE_CONFIG_HASH = config_hash(
    ["cutouts", "extract", "training", "detection", "quality"]
)
N_SHARDS = config["cutouts"]["n_shards"]

# The survey as HATS catalogues for LSDB (rules/catalogue.smk)
HATS = config["hats"]

# Simulated training tiles QSIM_000, QSIM_001, ... (seed 500000 + i, quality.simulated_training_tiles)
# with the training defect fractions: the image-quality classifiers always learn from them, and
# training.tiles may name them too, so the detector learns from the same simulated sky.
QUALITY = config["quality"]
for _i in range(QUALITY["simulated_training_tiles"]):
    SIM_TILES.setdefault(
        f"QSIM_{_i:03d}",
        {
            "tile_id": f"QSIM_{_i:03d}",
            "ra": (7.5 * _i + 3.75) % 360.0,
            "dec": -40.0,
            "seed": 500000 + _i,
        },
    )

# Learned detection (rules/detect.smk): models learn from simulated training tiles (or labels
# placed by sky position on the tiles of training.manifest), never from the catalogued tiles.
DETECTION = config["detection"]
TRAINING = config["training"]
# CPU cores of the GPU jobs: one per process plus their data-loading workers
INFER_THREADS = max(2, DETECTION["workers"] + 1)
TRAIN_THREADS = max(2, (TRAINING["workers"] + 1) * TRAINING["processes"])
LABELLED_TILES = (
    read_manifest(TRAINING["manifest"])
    if DETECTION["enabled"] and TRAINING["source"] == "labelled"
    else {}
)
if DETECTION["enabled"] and TRAINING["source"] == "simulated":
    _unknown = [t for t in TRAINING["tiles"] if t not in SIM_TILES]
    _catalogued = [t for t in TRAINING["tiles"] if t in TILES]
    if not TRAINING["tiles"] or _unknown or _catalogued:
        raise ManifestError(
            f"training.tiles {TRAINING['tiles']} must name simulated tiles (simulation.tiles) "
            f"that are not catalogued (tiles.manifest): unknown {_unknown}, catalogued {_catalogued}"
        )
if DETECTION["enabled"] and TRAINING["source"] == "labelled" and not TRAINING["labels"]:
    raise ManifestError(
        "training.source is 'labelled' but training.labels names no COCO JSON"
    )


def get_tile(tile_id):
    """The manifest entry of a tile; a clear error for an id the manifest does not list."""
    try:
        return TILES[tile_id]
    except KeyError:
        raise ManifestError(
            f"tile {tile_id!r} is not in the manifest {config['tiles']['manifest']}"
        ) from None


# Image quality (rules/quality.smk): the SOM and the M1/M2/M3 classifiers learn from the quality
# training tiles, never from the catalogued ones: simulated tiles with truth labels (the QSIM
# tiles above among them), or, when quality.labels names a CSV, labelled tiles of the manifest.
QUALITY_TRAINING_TILES = list(
    dict.fromkeys(
        (QUALITY["training_tiles"] or config["training"]["tiles"])
        + [f"QSIM_{i:03d}" for i in range(QUALITY["simulated_training_tiles"])]
    )
)
if QUALITY["labels"]:
    _bad = [t for t in QUALITY_TRAINING_TILES if t not in TILES and t not in SIM_TILES]
else:
    _bad = [t for t in QUALITY_TRAINING_TILES if t not in SIM_TILES or t in TILES]
if not QUALITY_TRAINING_TILES or _bad:
    raise ManifestError(
        f"quality training tiles {QUALITY_TRAINING_TILES} (quality.training_tiles, or "
        "training.tiles) must be simulated tiles (simulation.tiles) that are not catalogued, "
        f"or with quality.labels, tiles of the manifest: bad {_bad}"
    )
# Quality training tiles that are not catalogued are processed under results/training/quality/.
QUALITY_SIM_TRAINING_TILES = [t for t in QUALITY_TRAINING_TILES if t not in TILES]


def get_tile_radio(wildcards):
    return get_tile(wildcards.tile)["radio_path"]


def get_tile_ir(wildcards):
    ir = get_tile(wildcards.tile)["ir_path"]
    return {"ir": ir} if ir else {}


def canonical(value):
    """Dicts with their keys sorted, recursively: a rule's params then compare equal however a
    YAML file ordered the keys, and reordering them reruns nothing."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def get_sim_tile(wildcards):
    return canonical(SIM_TILES[wildcards.sim_tile])


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


def get_sim_training_ir(wildcards):
    return (
        {"ir": f"results/simulated/{wildcards.sim_tile}/ir.fits"}
        if SIM_SETTINGS["ir"]
        else {}
    )


def get_training_sets():
    """COCO JSON and HDF5 cutouts of every training set (rule train_detector)."""
    if TRAINING["source"] == "labelled":
        folders = ["results/training/labelled"]
    else:
        folders = expand("results/training/simulated/{t}", t=TRAINING["tiles"])
    return {
        "coco": [f"{f}/coco.json" for f in folders],
        "cutouts": [f"{f}/cutouts.h5" for f in folders],
    }


def get_initial_weights():
    weights = DETECTION["initial_weights"]
    if weights in ("", "none"):
        return {}
    return {"weights": str(resolve_config_path(weights))}


def get_labelled_training_inputs(wildcards):
    files = {"labels": str(resolve_config_path(TRAINING["labels"]))}
    for tile_id, t in LABELLED_TILES.items():
        files[f"radio_{tile_id}"] = t["radio_path"]
        if t["ir_path"]:
            files[f"ir_{tile_id}"] = t["ir_path"]
    return files


def detection_paths(tile):
    return expand(
        "results/detections/{tile}/shard-{shard}.parquet",
        tile=tile,
        shard=range(N_SHARDS),
    )


def get_merge_inputs(wildcards):
    """Inputs of merge_tile_catalogue (later stages add theirs here)."""
    inputs = {
        "components": f"results/components/{wildcards.tile}.parquet",
        "cutouts": f"results/cutouts/{wildcards.tile}/cutouts.parquet",
        "som": f"results/som/{wildcards.tile}.parquet",
        "quality": f"results/quality/{wildcards.tile}.parquet",
    }
    if DETECTION["enabled"]:
        inputs["detections"] = detection_paths(wildcards.tile)
    return inputs


def get_detector_settings():
    """
    The detection keys the trained model depends on: skysift.detection.train.MODEL_KEYS, the
    input fusion, the device and the initial weights. Inference- and merge-only keys stay out,
    so changing them reruns infer_shard or the merge, never train_detector.
    """
    keys = (
        "backbone",
        "fpn_channels",
        "trainable_layers",
        "anchor_sizes",
        "aspect_ratios",
        "min_score",
        "nms_iou",
        "fusion",
        "device",
        "initial_weights",
    )
    return {k: DETECTION[k] for k in keys}


def get_merge_detection_settings():
    return {
        "min_score": DETECTION["source_min_score"],
        "flag_score": DETECTION["flag_score"],
        "overlap_threshold": DETECTION["overlap_threshold"],
    }


def get_evaluate_detections_inputs():
    return {
        "detections": [p for t in TRUTH_TILES for p in detection_paths(t)],
        "cutouts": expand("results/cutouts/{tile}/cutouts.parquet", tile=TRUTH_TILES),
        "components": expand(
            "results/catalogue/{tile}/components.parquet", tile=TRUTH_TILES
        ),
        "sources": expand("results/catalogue/{tile}/sources.parquet", tile=TRUTH_TILES),
        "truth_sources": truth_paths("truth_sources.parquet"),
        "truth_components": truth_paths("truth_components.parquet"),
        "radio": [TILES[t]["radio_path"] for t in TRUTH_TILES],
    }


def get_final_outputs():
    outputs = catalogue_paths(["sources", "components", "cutouts"]) + ["results/survey"]
    if HATS["enabled"]:
        outputs += expand("results/hats/{table}", table=HATS["tables"])
    if TRUTH_TILES:
        outputs += [
            "results/evaluation/components.json",
            "results/evaluation/components.png",
        ]
    if TRUTH_TILES and DETECTION["enabled"]:
        outputs += [
            "results/evaluation/detections.json",
            "results/evaluation/detections.png",
        ]
    if TRUTH_TILES:
        outputs += ["results/evaluation/quality.json", "results/evaluation/quality.png"]
    return outputs


def get_quality_training_files(kind):
    """components, som or stamps files of every quality training tile."""
    ext = {"components": "parquet", "som": "parquet", "stamps": "h5"}[kind]
    catalogued = {
        "components": "results/components/{t}.parquet",
        "som": "results/som/{t}.parquet",
        "stamps": "results/stamps/{t}.h5",
    }[kind]
    return [
        (
            catalogued.format(t=t)
            if t in TILES
            else f"results/training/quality/{t}/{kind}.{ext}"
        )
        for t in QUALITY_TRAINING_TILES
    ]


def get_quality_labels(wildcards):
    """Labels of the quality training regions: a CSV (real survey) or simulator truth."""
    if QUALITY["labels"]:
        return {"labels": str(resolve_config_path(QUALITY["labels"]))}
    return {
        "truth": expand(
            "results/simulated/{t}/truth_regions.parquet", t=QUALITY_TRAINING_TILES
        )
    }


def get_sim_defects(wildcards):
    """Defect settings of a simulated tile: held-out (catalogued) tiles get their own mix."""
    d = config["simulation"]["defects"]
    held_out = wildcards.sim_tile in TILES
    return canonical(
        {
            "fractions": d["held_out_fractions" if held_out else "training_fractions"],
            "mixed_fraction": d["mixed_fraction"],
        }
    )


def get_sim_tile_mem_mb(wildcards, attempt):
    """Three times a simulated tile's float32 image (at least 1 GB), more on each retry."""
    size = SIM_TILES[wildcards.tile].get("size", SIM_SETTINGS["size"])
    return max(1000, int(3 * 4 * size * size / 1e6)) * attempt
