"""
End to end: Snakemake runs the workflow on a small simulated survey in a scratch directory.

One module-scoped run builds everything (two simulated tiles of the demo size, the held-out
demo tile among them); the tests then read the outputs with the readers users use, check the
accuracy against the simulator's truth, and exercise reruns, bad tiles and bad configuration.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO
from skysift.sources import FLAG_NO_COMPONENT

pytestmark = pytest.mark.workflow

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TILES = ["SIM_2154-55", "SIM_0130+02.5"]
TEST_CONFIG = REPO / "tests" / "configs" / "workflow.yaml"


def snakemake(workdir, *args, targets=("all_emu_tiles",), configfiles=(), timeout=1800):
    """Run snakemake on the repository's workflow in ``workdir``; returns the CompletedProcess.

    The test configuration and ``configfiles`` layer on config/config.yaml, in that order
    (one --configfile flag: a repeated flag would replace, not add)."""
    cmd = [SNAKEMAKE, *targets, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           *args, "--configfile", str(TEST_CONFIG), *map(str, configfiles)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def write_manifest(workdir, rows):
    path = Path(workdir) / "manifest.csv"
    lines = ["tile_id,radio_path,ir_path"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def sim_row(tile):
    return (tile, f"results/simulated/{tile}/radio.fits", f"results/simulated/{tile}/ir.fits")


def table_digest(path):
    """SHA-256 of a Parquet table's content (data and schema, not the file's bytes)."""
    df = pq.read_table(path).to_pandas()
    return hashlib.sha256(pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes()).hexdigest()


def job_counts(stdout):
    """Rule -> job count from Snakemake's 'Job stats' table."""
    counts, in_table = {}, False
    for line in stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^([a-z_]+)\s+(\d+)$", line.strip())
            if m:
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    manifest = write_manifest(workdir, [sim_row(t) for t in TILES])
    (workdir / "tiles.yaml").write_text(yaml.safe_dump({"tiles": {"manifest": str(manifest)}}))
    proc = snakemake(workdir, configfiles=[workdir / "tiles.yaml"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return workdir


def test_catalogue_tables_have_units_types_and_provenance(run):
    import skysift

    for tile in TILES:
        for table in ("sources", "components", "cutouts"):
            path = run / "results" / "catalogue" / tile / f"{table}.parquet"
            schema = pq.read_schema(path)
            for field in schema:
                assert set(field.metadata) >= {b"unit", b"description"}, (path, field.name)
                assert field.metadata[b"description"], (path, field.name)
            df = pd.read_parquet(path)
            assert len(df) > 0
            assert (df.tile_id == tile).all()
            assert (df.skysift_version == skysift.__version__).all()
            assert df.config_hash.str.fullmatch(r"[0-9a-f]{16}").all() and df.config_hash.nunique() == 1
            assert schema.metadata[b"tile_id"] == tile.encode()
    comp = pq.read_schema(run / "results" / "catalogue" / TILES[0] / "components.parquet")
    assert str(comp.field("ra_deg_cont").type) == "double" and str(comp.field("dec_deg_cont").type) == "double"
    assert comp.field("flux_int").metadata[b"unit"] == b"mJy"
    assert comp.field("flux_peak").metadata[b"unit"] == b"mJy/beam"
    assert comp.field("maj_axis").metadata[b"unit"] == b"arcsec"


def test_components_link_to_sources(run):
    cat = run / "results" / "catalogue" / TILES[0]
    comp, src = pd.read_parquet(cat / "components.parquet"), pd.read_parquet(cat / "sources.parquet")
    assert comp.component_id.is_unique and src.source_id.is_unique
    assert set(comp.source_id) <= set(src.source_id)
    members = {c for ids in src.component_ids for c in ids}
    assert members == set(comp.component_id)
    assert (src.n_components == src.component_ids.map(len)).all()
    # a source owning no component is a detection with no SEP component, flagged as such
    lone = ~src.source_id.isin(comp.source_id)
    assert (src.n_components[lone] == 0).all() and (src["flags"][lone] & FLAG_NO_COMPONENT).all()
    assert (src.origin[lone] == "detection").all()


def test_catalogue_tables_read_in_astropy_with_units(run):
    """astropy's Table.read: every row, the contract's units and descriptions, the provenance as meta."""
    import astropy.units as u
    from astropy.table import Table

    from skysift.columns import TABLES

    for table in ("sources", "components", "cutouts"):
        path = run / "results" / "catalogue" / TILES[0] / f"{table}.parquet"
        t = Table.read(path)
        df = pd.read_parquet(path)
        assert t.colnames == list(df.columns) and len(t) == len(df)
        for col in TABLES[f"catalogue_{table}"]:
            assert t[col.name].description == col.description, (table, col.name)
            assert (t[col.name].unit or "") == (u.Unit(col.unit) if col.unit else ""), (table, col.name)
        assert t.meta["tile_id"] == TILES[0] and t.meta["config_hash"] == df.config_hash.iloc[0]
    src = Table.read(run / "results" / "catalogue" / TILES[0] / "sources.parquet")
    df = pd.read_parquet(run / "results" / "catalogue" / TILES[0] / "sources.parquet")
    assert np.array_equal(src["ra"].quantity.to_value(u.deg), df.ra.to_numpy())
    assert list(src["source_id"]) == list(df.source_id)
    detected = (df.origin == "detection").to_numpy()
    assert detected.any() and list(src["morph_class"][detected]) == list(df.morph_class[detected])
    assert (src["flux_int"].quantity.to(u.Jy).value[detected] > 0).any()


def test_survey_dataset_reads_in_one_call(run):
    import dask.dataframe as dd
    import duckdb
    import pyarrow.dataset as ds

    survey = run / "results" / "survey"
    summary = json.loads((survey / "survey.json").read_text())
    assert sorted(summary["tiles"]) == sorted(TILES)
    for table in ("sources", "components", "cutouts"):
        expected = sum(len(pd.read_parquet(run / "results" / "catalogue" / t / f"{table}.parquet")) for t in TILES)
        assert summary["rows"][table] == expected
        folder = survey / table
        assert ds.dataset(folder, format="parquet").count_rows() == expected
        assert duckdb.sql(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall()[0][0] == expected
        with warnings.catch_warnings():
            # dask 2026.8 still calls reset_index(inplace=True), deprecated by pandas 3.1
            warnings.filterwarnings("ignore", message="The inplace keyword", category=DeprecationWarning)
            assert len(dd.read_parquet(str(folder)).compute()) == expected
        df = pd.read_parquet(folder)
        assert len(df) == expected and sorted(df.tile_id.unique()) == sorted(TILES)
    # a survey-wide query users run: bright compact components per tile
    q = duckdb.sql(f"select tile_id, count(*) n from read_parquet('{survey}/components/*.parquet') "
                   "where snr > 10 group by tile_id order by tile_id").fetchall()
    assert [t for t, _ in q] == sorted(TILES) and all(n > 100 for _, n in q)


# lsdb 0.11 and nested-pandas under pandas 3.1
@pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning",
                            "ignore:The 'mode.chained_assignment' option:DeprecationWarning")
def test_survey_hats_catalogues_cross_match_in_lsdb(run):
    """results/hats/{sources,components}: every survey row once; a cross-match with the truth in LSDB."""
    import lsdb

    for table, key in (("sources", "source_id"), ("components", "component_id")):
        got = lsdb.open_catalog(run / "results" / "hats" / table).compute()
        want = pd.read_parquet(run / "results" / "survey" / table)
        assert sorted(got[key]) == sorted(want[key]) and len(got) == len(want)
    truth = pd.read_parquet(run / "results" / "simulated" / TILES[0] / "truth_sources.parquet")
    bright = truth[(truth.morphology == "compact") & truth.in_footprint & (truth.flux_int > 0.5)]
    left = lsdb.from_dataframe(bright[["source_id", "ra", "dec", "flux_int"]], ra_column="ra", dec_column="dec",
                               margin_threshold=None)
    sources = lsdb.open_catalog(run / "results" / "hats" / "sources")
    matched = left.crossmatch(sources, radius_arcsec=5.0, n_neighbors=1, suffixes=("_truth", ""),
                              suffix_method="overlapping_columns").compute()
    # the same pairs as astropy's nearest-neighbour match of the survey dataset
    from astropy.coordinates import SkyCoord

    catalogue = pd.read_parquet(run / "results" / "survey" / "sources")
    idx, sep, _ = SkyCoord(bright.ra, bright.dec, unit="deg").match_to_catalog_sky(
        SkyCoord(catalogue.ra, catalogue.dec, unit="deg"))
    near = sep.arcsec <= 5.0
    want = set(zip(bright.source_id[near], catalogue.source_id.iloc[idx[near]]))
    assert set(zip(matched.source_id_truth, matched.source_id)) == want
    assert len(bright) > 50 and len(want) >= 0.9 * len(bright)
    assert (matched.tile_id == TILES[0]).all() and np.median(matched["_dist_arcsec"]) < 1.0


def test_held_out_tile_meets_the_extraction_goals(run):
    result = json.loads((run / "results" / "evaluation" / "components.json").read_text())
    held_out = result["tiles"]["SIM_2154-55"]
    for figures in (result, held_out):
        assert figures["completeness_snr7"] >= 0.95
        assert figures["reliability_5sigma"] >= 0.98
        assert 0.95 <= figures["flux_ratio_median"] <= 1.05
        assert figures["offset_median_arcsec_snr10"] < 1.0
        assert figures["n_truth_compact_snr7"] > 300
    assert all(g["passed"] for g in result["goals"].values())
    assert (run / "results" / "evaluation" / "components.png").stat().st_size > 10_000


def test_cutout_cores_cover_every_valid_pixel_once(run):
    from skysift.tileio import open_tile

    cut = pd.read_parquet(run / "results" / "catalogue" / TILES[0] / "cutouts.parquet")
    tile = open_tile(run / "results" / "simulated" / TILES[0] / "radio.fits")
    owned = np.zeros(tile.shape, dtype=np.int32)
    for r in cut.itertuples():
        owned[r.core_y_min : r.core_y_max, r.core_x_min : r.core_x_max] += 1
    valid = np.isfinite(tile.data)
    assert owned.max() == 1
    assert (owned[valid] == 1).all()  # dropped (all-NaN) cutouts owned no valid pixel
    assert cut.shard.value_counts().sort_index().index.tolist() == [0, 1]


def test_rerun_with_nothing_changed_does_nothing(run):
    proc = snakemake(run, "-n", configfiles=[run / "tiles.yaml"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_rerun_one_rule_redoes_it_and_its_dependants_only(run):
    proc = snakemake(run, "-n", "-R", "extract_sources", configfiles=[run / "tiles.yaml"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts.get("extract_sources") == len(TILES)
    assert counts.get("merge_tile_catalogue") == len(TILES)
    assert counts.get("evaluate_components") == 1 and counts.get("build_survey_dataset") == 1
    for upstream in ("simulate_survey", "inspect_tile", "shard_tile"):
        assert upstream not in counts


@pytest.mark.parametrize("override, reruns, kept", [
    ({"host_ir_psf_fwhm": 3.0}, {"infer_shard", "merge_tile_catalogue"}, {"train_detector", "extract_sources"}),
    ({"flag_score": 0.7}, {"merge_tile_catalogue"}, {"train_detector", "infer_shard", "shard_tile"}),
    ({"nms_iou": 0.4}, {"train_detector", "infer_shard", "merge_tile_catalogue"}, {"extract_sources"}),
])
def test_a_changed_setting_reruns_only_the_rules_that_read_it(run, override, reruns, kept):
    """An inference-only key reruns inference (and shard_tile, whose shards are temp()) but
    never the detector's training; a merge-only key reruns the merge alone."""
    cfg = run / "override.yaml"
    cfg.write_text(yaml.safe_dump({"detection": override}))
    proc = snakemake(run, "-n", configfiles=[run / "tiles.yaml", cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert reruns <= set(counts) and not kept & set(counts), counts


def test_reordered_config_keys_rerun_nothing(run):
    """The same simulated tiles and settings written with their keys in another order (as a
    YAML dump sorts them) are the same params: nothing is simulated again."""
    test_config = yaml.safe_load(TEST_CONFIG.read_text())
    tiles = [dict(reversed(list(t.items()))) for t in test_config["simulation"]["tiles"]]
    fractions = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["simulation"]["defects"]
    fractions = {k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v for k, v in fractions.items()}
    cfg = run / "reordered.yaml"
    cfg.write_text(yaml.safe_dump({"simulation": {"tiles": tiles, "defects": fractions}}, sort_keys=False))
    proc = snakemake(run, "-n", configfiles=[run / "tiles.yaml", cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr, job_counts(proc.stdout)


def test_detector_may_learn_from_the_simulated_quality_tiles(run):
    """training.tiles may name the QSIM tiles of quality.simulated_training_tiles (one simulated
    sky for both models); a QSIM tile beyond their number is refused by name."""
    cfg = run / "qsim.yaml"
    cfg.write_text(yaml.safe_dump({"quality": {"simulated_training_tiles": 2},
                                   "training": {"tiles": ["SIM_2057-50", "QSIM_000", "QSIM_001"]}}))
    proc = snakemake(run, "-n", configfiles=[run / "tiles.yaml", cfg])
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout)
    assert counts.get("simulate_survey") == 2 and counts.get("build_training_set") == 2, counts
    assert counts.get("train_detector") == 1 and counts.get("train_quality") == 1, counts
    cfg.write_text(yaml.safe_dump({"quality": {"simulated_training_tiles": 2},
                                   "training": {"tiles": ["SIM_2057-50", "QSIM_002"]}}))
    proc = snakemake(run, "-n", configfiles=[run / "tiles.yaml", cfg])
    assert proc.returncode != 0
    assert "unknown ['QSIM_002']" in proc.stdout + proc.stderr


def test_same_inputs_give_the_same_catalogue(run):
    paths = [run / "results" / "catalogue" / t / f"{n}.parquet" for t in TILES for n in ("sources", "components")]
    before = [table_digest(p) for p in paths]
    proc = snakemake(run, "--forcerun", "extract_sources", "merge_tile_catalogue", configfiles=[run / "tiles.yaml"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [table_digest(p) for p in paths] == before


def _bad_tiles(workdir):
    """Three broken copies of a good tile: truncated, beam removed, all NaN."""
    from astropy.io import fits

    good = workdir / "results" / "simulated" / TILES[0] / "radio.fits"
    bad = workdir / "bad"
    bad.mkdir(exist_ok=True)
    raw = good.read_bytes()
    (bad / "truncated.fits").write_bytes(raw[: len(raw) // 3])
    with fits.open(good) as hdul:
        header, data = hdul[0].header.copy(), np.asarray(hdul[0].data)
    nobeam = header.copy()
    del nobeam["BMAJ"], nobeam["BMIN"]
    fits.writeto(bad / "nobeam.fits", data, nobeam, overwrite=True)
    fits.writeto(bad / "allnan.fits", np.full_like(data, np.nan), header, overwrite=True)
    return {"BAD_truncated": bad / "truncated.fits", "BAD_nobeam": bad / "nobeam.fits",
            "BAD_allnan": bad / "allnan.fits"}


def test_bad_tiles_fail_alone_with_one_clear_line(run):
    bad = _bad_tiles(run)
    good_files = [run / "results" / "catalogue" / t / f"{n}.parquet" for t in TILES
                  for n in ("sources", "components", "cutouts")]
    before = {p: (p.stat().st_mtime_ns, table_digest(p)) for p in good_files}
    manifest = write_manifest(run / "bad", [sim_row(t) for t in TILES] + [(k, str(v), "") for k, v in bad.items()])
    cfg = run / "bad" / "tiles.yaml"
    cfg.write_text(yaml.safe_dump({"tiles": {"manifest": str(manifest)}}))
    proc = snakemake(run, "--keep-going", configfiles=[cfg])
    assert proc.returncode != 0
    expected = {"BAD_truncated": "truncated", "BAD_nobeam": "restoring beam", "BAD_allnan": "no finite pixel"}
    for tile, words in expected.items():
        log = (run / "logs" / "inspect_tile" / f"{tile}.log").read_text()
        errors = [line for line in log.splitlines() if line.startswith("ERROR")]
        assert len(errors) == 1, log
        assert str(bad[tile]) in errors[0] and words in errors[0]
        assert "Traceback" not in log
        assert not (run / "results" / "catalogue" / tile).exists()
    for p, (mtime, digest) in before.items():  # the good tiles' catalogues are untouched
        assert p.stat().st_mtime_ns == mtime and table_digest(p) == digest


@pytest.mark.parametrize("override, words", [
    ({"extract": {"thresh": 5}}, ["thresh"]),
    ({"cutouts": {"size": "big"}}, ["size", "big"]),
    ({"simulation": {"tiles": [{"tile_id": "bad id", "ra": 1, "dec": 2, "seed": 3}]}}, ["bad id"]),
])
def test_bad_config_stops_naming_the_key(tmp_path, override, words):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(override))
    proc = snakemake(tmp_path, "-n", configfiles=[cfg], timeout=120)
    assert proc.returncode != 0
    for w in words:
        assert w in proc.stdout + proc.stderr


@pytest.mark.parametrize("rows, words", [
    ([("A", "a.fits", ""), ("A", "b.fits", "")], ["duplicate tile_id", "'A'", ":3"]),
    ([("bad/id", "a.fits", "")], ["bad/id", "must match"]),
    ([("A", "", "")], ["empty radio_path"]),
])
def test_bad_manifest_stops_naming_file_and_line(tmp_path, rows, words):
    manifest = write_manifest(tmp_path, rows)
    cfg = tmp_path / "m.yaml"
    cfg.write_text(yaml.safe_dump({"tiles": {"manifest": str(manifest)}}))
    proc = snakemake(tmp_path, "-n", configfiles=[cfg], timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert str(manifest) in out
    for w in words:
        assert w in out


def test_lint_and_format():
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--lint"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    proc = subprocess.run([snakefmt, "--check", "Snakefile", "rules"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
