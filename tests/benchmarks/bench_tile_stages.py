"""
Benchmark: wall time and peak memory of each CPU stage of skysift's per-tile pipeline.

Simulates one EMU-like tile (default 12288 x 12288 px, no IR image), then runs every CPU stage
the workflow runs for a tile, each in a fresh Python process (as a Snakemake `script:` job is),
and calls the same library functions with the same arguments as the rule entry points in
workflow_scripts/:

    inspect_tile          skysift.inspect.inspect_tile -> inspect.json
    shard_tile            skysift.cutouts.write_shards (256 px / 64 px overlap, 4 shards, no compression: the default)
                          + write_parquet(CUTOUTS)
    extract_sources       skysift.extract.extract_components (default ExtractSettings)
                          + write_parquet(COMPONENTS)
    merge_tile_catalogue  skysift.catalogue.merge_tile
    evaluate_components   skysift.evaluate.evaluate_component_tiles (score_tile + summarise +
                          the PNG), against the simulator's truth

Per stage it prints: wall time of the process (interpreter start and imports included, as for
a Snakemake job), its CPU time (user + system), the time to import the stage's modules (those its entry point imports), the
time inside the stage function(s), peak RSS of the process (from
`/usr/bin/time -v`, or getrusage when that is missing), peak anonymous RSS (sampled from
/proc/self/status: memory that is not a page of a memory-mapped file) and peak RSS over the
tile size in memory (size**2 * 4 bytes). Goals: all stages together <= 180 s, peak RSS of
every stage <= 3 x tile bytes.

    .venv/bin/python tests/benchmarks/bench_tile_stages.py [--size 12288] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
TIME_BIN = "/usr/bin/time"
TILE_ID = "SIM_2154-55"
STAGES = ["inspect_tile", "shard_tile", "extract_sources", "merge_tile_catalogue", "evaluate_components"]
GOAL_TOTAL_S = 180.0
STAGE_IMPORTS = {
    "simulate": "from skysift.simulate import SimulationSettings, simulate_tile",
    "inspect_tile": "from skysift.inspect import inspect_tile",
    "shard_tile": "from skysift.catalogue import write_parquet\nfrom skysift.columns import CUTOUTS\n"
                  "from skysift.cutouts import write_shards\nfrom skysift.tileio import open_tile",
    "extract_sources": "from skysift.catalogue import write_parquet\nfrom skysift.columns import COMPONENTS\n"
                       "from skysift.extract import ExtractSettings, extract_components\n"
                       "from skysift.tileio import open_tile",
    "merge_tile_catalogue": "from skysift.catalogue import merge_tile",
    "evaluate_components": "from skysift.evaluate import evaluate_component_tiles",
}
GOAL_RSS_FACTOR = 3.0


# --------------------------------------------------------------------------- child side


class _AnonPeak:
    """Samples RssAnon of this process every `interval` seconds in a daemon thread."""

    def __init__(self, interval=0.01):
        self.peak_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _sample(self):
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                        break
        except OSError:
            pass

    def _run(self, interval):
        while not self._stop.is_set():
            self._sample()
            time.sleep(interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self._sample()


def _paths(work):
    w = Path(work)
    return dict(
        radio=w / "simulated" / "radio.fits",
        truth_components=w / "simulated" / "truth_components.parquet",
        truth_sources=w / "simulated" / "truth_sources.parquet",
        meta=w / "simulated" / "tile.json",
        info=w / "tiles" / "inspect.json",
        shards=[w / "cutouts" / f"shard-{k}.h5" for k in range(4)],
        cutouts=w / "cutouts" / "cutouts.parquet",
        components=w / "components" / f"{TILE_ID}.parquet",
        catalogue={t: w / "catalogue" / f"{t}.parquet" for t in ("components", "cutouts", "sources")},
        eval_json=w / "evaluation" / "components.json",
        eval_png=w / "evaluation" / "components.png",
    )


def run_stage(stage, args):
    """Run one stage in this process; returns a dict for the parent (printed as JSON)."""
    import logging
    import resource

    logging.basicConfig(level=logging.WARNING)
    p = _paths(args.workdir)
    for v in p.values():
        for q in (v if isinstance(v, list) else v.values() if isinstance(v, dict) else [v]):
            q.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    with _AnonPeak() as anon:
        # import only what the rule's entry point imports, as a Snakemake job does
        t_import = time.perf_counter()
        g = {}
        exec(STAGE_IMPORTS[stage], g)
        globals().update(g)
        out["import_s"] = time.perf_counter() - t_import
        t0 = time.perf_counter()
        if stage == "simulate":
            meta = simulate_tile(TILE_ID, 328.5, -55.0, args.seed, SimulationSettings(size=args.size, ir=False),
                                 radio_path=p["radio"], ir_path=None,
                                 truth_components_path=p["truth_components"],
                                 truth_sources_path=p["truth_sources"], meta_path=p["meta"])
            out["n_sources"], out["n_components"] = meta["n_sources"], meta["n_components"]
        elif stage == "inspect_tile":
            info = inspect_tile(p["radio"], TILE_ID)
            p["info"].write_text(json.dumps(info, indent=2))
            out["noise_mjy_beam"] = info["noise_mjy_beam"]
        elif stage == "shard_tile":
            table = write_shards(open_tile(p["radio"]), TILE_ID, [str(s) for s in p["shards"][: args.n_shards]],
                                 size=args.cutout_size, overlap=args.overlap, ir_path=None, compression=None)
            write_parquet(table, CUTOUTS, p["cutouts"], {"tile_id": TILE_ID})
            out["n_cutouts"] = len(table)
            out["shard_bytes"] = sum(s.stat().st_size for s in p["shards"][: args.n_shards])
        elif stage == "extract_sources":
            comps = extract_components(open_tile(p["radio"]), TILE_ID, ExtractSettings())
            write_parquet(comps, COMPONENTS, p["components"], {"tile_id": TILE_ID})
            out["n_components"] = len(comps)
        elif stage == "merge_tile_catalogue":
            counts = merge_tile(TILE_ID, p["components"], p["cutouts"], {k: str(v) for k, v in p["catalogue"].items()},
                                config_digest="benchmark")
            out["rows"] = counts
        elif stage == "evaluate_components":
            res = evaluate_component_tiles([str(p["components"])], [str(p["truth_components"])],
                                           [str(p["truth_sources"])], [str(p["info"])],
                                           json_path=str(p["eval_json"]), png_path=str(p["eval_png"]),
                                           match_radius_beams=0.5)
            out["summary"] = {k: v for k, v in res.items() if not isinstance(v, (list, dict))}
            out["goals"] = res["goals"]
        else:
            raise SystemExit(f"unknown stage {stage}")
        out["stage_s"] = time.perf_counter() - t0
    out["anon_peak_kb"] = anon.peak_kb
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["self_maxrss_kb"] = ru.ru_maxrss
    out["self_cpu_s"] = ru.ru_utime + ru.ru_stime
    return out


# --------------------------------------------------------------------------- parent side


def _parse_time_v(text):
    """(maxrss kB, user + system CPU s) from `/usr/bin/time -v` output; None where missing."""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    u = re.search(r"User time \(seconds\): ([\d.]+)", text)
    s = re.search(r"System time \(seconds\): ([\d.]+)", text)
    cpu = float(u.group(1)) + float(s.group(1)) if u and s else None
    return (int(m.group(1)) if m else None), cpu


class StageFailed(RuntimeError):
    pass


def launch(stage, args):
    """Run one stage in a fresh interpreter; returns (wall_s, maxrss_kb, rss_source, child_result).

    Raises StageFailed with the last line of the stage's error output when it fails.
    """
    cmd = [sys.executable, str(HERE), "--_stage", stage, "--workdir", str(args.workdir), "--size", str(args.size),
           "--seed", str(args.seed), "--n-shards", str(args.n_shards), "--cutout-size", str(args.cutout_size),
           "--overlap", str(args.overlap)]
    use_time = os.path.exists(TIME_BIN) and not args.no_time_v
    if use_time:
        cmd = [TIME_BIN, "-v"] + cmd
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow_scripts") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.stage_timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("\t", "Command "))]
        if args.verbose:
            sys.stderr.write(proc.stdout + proc.stderr)
        raise StageFailed(f"exit status {proc.returncode} after {wall:.1f} s: {err[-1] if err else '?'}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT ")]
    child = json.loads(lines[-1][len("@@RESULT "):])
    maxrss, cpu = _parse_time_v(proc.stderr) if use_time else (None, None)
    source = "time -v"
    if maxrss is None:
        maxrss, source = child["self_maxrss_kb"], "getrusage"
    child["cpu_s"] = cpu if cpu is not None else child["self_cpu_s"]
    return wall, maxrss, source, child


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=12288, help="tile side in pixels (default 12288, an EMU tile)")
    ap.add_argument("--seed", type=int, default=1001, help="simulation seed (default 1001)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_tile_stages"),
                    help="scratch folder (default /tmp/bench_tile_stages; removed at the end unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (tile, shards, catalogues)")
    ap.add_argument("--reuse-tile", action="store_true",
                    help="do not re-simulate when the workdir already holds a tile of this size")
    ap.add_argument("--n-shards", type=int, default=4, help="shards of shard_tile (default 4)")
    ap.add_argument("--cutout-size", type=int, default=256, help="cutout side (default 256)")
    ap.add_argument("--overlap", type=int, default=64, help="cutout overlap (default 64)")
    ap.add_argument("--stage-timeout", type=float, default=900, help="seconds before a stage is killed (default 900)")
    ap.add_argument("--no-time-v", action="store_true", help="use getrusage in the child instead of /usr/bin/time -v")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="comma-separated stages to run, in pipeline order (default all; with --reuse-tile --keep a "
                         "later call can rerun one stage on the outputs of an earlier call)")
    ap.add_argument("--verbose", action="store_true", help="print the full output of a failing stage")
    ap.add_argument("--_stage", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._stage:
        print("@@RESULT " + json.dumps(run_stage(args._stage, args), default=float), flush=True)
        return

    args.workdir = args.workdir.resolve()
    tile_bytes = args.size * args.size * 4
    meta_path = _paths(args.workdir)["meta"]
    reuse = args.reuse_tile and meta_path.exists() and json.loads(meta_path.read_text())["size"] == args.size
    if not reuse and args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    mb = 1e6
    print(f"tile {TILE_ID}: {args.size} x {args.size} px, tile bytes {tile_bytes / mb:.1f} MB "
          f"(float32), workdir {args.workdir}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)")
    try:
        if reuse:
            print("simulation: reusing the tile in the workdir")
        else:
            wall, rss, src, r = launch("simulate", args)
            fits_mb = _paths(args.workdir)["radio"].stat().st_size / mb
            print(f"simulation (not a pipeline stage): {wall:.1f} s wall, peak RSS {rss / 1024:.0f} MB, "
                  f"{r['n_sources']} sources, {r['n_components']} truth components, FITS {fits_mb:.0f} MB")
        rows, results, failed = [], {}, {}
        load0 = os.getloadavg()[0]
        src = "time -v"
        stages = [x for x in STAGES if x in args.stages.split(",")]
        for stage in stages:
            try:
                wall, rss, src, r = launch(stage, args)
            except StageFailed as err:
                failed[stage] = str(err)
                continue
            results[stage] = r
            rss_b = rss * 1024
            rows.append((stage, wall, r["cpu_s"], r["import_s"], r["stage_s"], rss_b / mb,
                         r["anon_peak_kb"] * 1024 / mb, rss_b / tile_bytes))
        print()
        print(f"load average before the stages {load0:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs): "
              "wall times are inflated when it exceeds the CPU count; cpu s = user + system time of the process")
        print(f"peak RSS from {src}; anon = peak RssAnon sampled every 10 ms (excludes mapped file pages)")
        hdr = (f"{'stage':<22} {'wall s':>8} {'cpu s':>7} {'import s':>8} {'func s':>8} {'peak RSS MB':>12} "
               f"{'anon MB':>9} {'RSS/tile':>9}")
        print(hdr)
        print("-" * len(hdr))
        by_name = {r[0]: r for r in rows}
        for stage in stages:
            if stage in failed:
                print(f"{stage:<22} FAILED: {failed[stage]}")
                continue
            name, wall, cpu, imp, inner, rss, anon, ratio = by_name[stage]
            print(f"{name:<22} {wall:>8.1f} {cpu:>7.1f} {imp:>8.1f} {inner:>8.1f} {rss:>12.0f} {anon:>9.0f} {ratio:>9.2f}")
        print("-" * len(hdr))
        if rows:
            total = sum(r[1] for r in rows)
            peak = max(r[5] for r in rows)
            peak_stage = max(rows, key=lambda r: r[5])[0]
            print(f"{'total':<22} {total:>8.1f} {sum(r[2] for r in rows):>7.1f} {sum(r[3] for r in rows):>8.1f} "
                  f"{sum(r[4] for r in rows):>8.1f} {peak:>12.0f} {'':>9} {peak * mb / tile_bytes:>9.2f}")
            print()
            missing = [x for x in STAGES if x not in results]
            partial = f" (without {', '.join(missing)})" if missing else ""
            ok_t = total <= GOAL_TOTAL_S and not missing
            ok_m = peak * mb <= GOAL_RSS_FACTOR * tile_bytes and not missing
            print(f"goal: all CPU stages <= {GOAL_TOTAL_S:.0f} s: {total:.1f} s{partial} -> {'MET' if ok_t else 'NOT MET'}")
            print(f"goal: peak RSS <= {GOAL_RSS_FACTOR:.0f} x tile bytes ({GOAL_RSS_FACTOR * tile_bytes / mb:.0f} MB): "
                  f"{peak:.0f} MB ({peak_stage}){partial} -> {'MET' if ok_m else 'NOT MET'}")
            print()
        if "extract_sources" in results:
            print(f"extracted {results['extract_sources']['n_components']} components")
        if "shard_tile" in results:
            print(f"{results['shard_tile']['n_cutouts']} cutouts in {args.n_shards} shards "
                  f"({results['shard_tile']['shard_bytes'] / mb:.0f} MB)")
        if "evaluate_components" in results:
            s, goals = results["evaluate_components"]["summary"], results["evaluate_components"]["goals"]
            print("extraction accuracy on this tile (skysift.evaluate.summarise):")
            for k in ("completeness_snr7", "reliability_5sigma", "flux_ratio_median", "offset_median_arcsec_snr10"):
                print(f"  {k:<28} {s[k]:>8.4f}   goal {goals[k]['rule']:<22} {'MET' if goals[k]['passed'] else 'NOT MET'}")
            print(f"  (n_truth_compact_snr7 {s['n_truth_compact_snr7']}, n_detections_5sigma {s['n_detections_5sigma']})")
        if failed:
            raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
