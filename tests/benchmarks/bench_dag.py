"""
Benchmark: time for Snakemake to parse skysift and build the DAG of a full EMU survey.

Writes, in a scratch folder, a manifest of N tiles (default 850, ids like EMU_0001+00 so the
wildcard regex meets '+') whose radio (and, by default, IR) files are empty placeholders (the
DAG checks that inputs exist, never reads them), and a --configfile that only points
tiles.manifest at it (the simulation tiles stay as configured, but none of them is in the
manifest, so nothing is simulated and evaluate_components is not in the DAG). Then times

    snakemake -n all_emu_tiles --directory <tmp> --configfile <cfg> -s Snakefile --quiet rules

(a fresh process each time; the first run also creates <tmp>/.snakemake) and parses the
"Job stats" table of the dry run. Prints the wall time of each run (goal <= 20 s) and the
number of jobs per rule and in total; checks that evaluate_components and simulate_survey
are absent and that every per-tile rule has one job per tile.

    .venv/bin/python tests/benchmarks/bench_dag.py [--tiles 850] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOAL_S = 20.0
PER_TILE_RULES = ("inspect_tile", "shard_tile", "extract_sources", "merge_tile_catalogue")


def tile_ids(n):
    """EMU-like ids with '+' (and, one in four, '-') declinations: EMU_0001+00, EMU_0002-05 ..."""
    out = []
    for i in range(n):
        sign = "-" if i % 4 == 3 else "+"
        out.append(f"EMU_{i + 1:04d}{sign}{(i * 5) % 90:02d}")
    return out


def make_inputs(work, n, with_ir):
    data = work / "data"
    data.mkdir(parents=True)
    lines = ["tile_id,radio_path,ir_path"]
    for t in tile_ids(n):
        radio = data / f"image.i.{t}.SB00000.cont.taylor.0.restored.conv.fits"
        radio.touch()
        ir = ""
        if with_ir:
            irp = data / f"{t}_w1.fits"
            irp.touch()
            ir = str(irp)
        lines.append(f"{t},{radio},{ir}")
    manifest = work / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    cfg = work / "bench_dag.yaml"
    cfg.write_text(f"tiles:\n  manifest: {manifest}\n")
    return manifest, cfg


def parse_job_stats(text):
    """{rule: count} from Snakemake's 'Job stats:' table (the last one printed)."""
    idx = text.rfind("Job stats:")
    if idx < 0:
        return None
    counts = {}
    for line in text[idx:].splitlines()[1:]:
        m = re.match(r"^\s*([A-Za-z_][\w]*)\s+(\d+)\s*$", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
        elif counts and not line.strip():
            break
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=850, help="tiles in the manifest (default 850, the EMU survey)")
    ap.add_argument("--repeat", type=int, default=2, help="dry runs to time (default 2: cold, then warm)")
    ap.add_argument("--no-ir", action="store_true", help="empty ir_path for every tile (default: placeholder IR)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_dag"),
                    help="scratch folder (default /tmp/bench_dag; removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--snakemake", default=str(Path(sys.executable).with_name("snakemake")),
                    help="snakemake executable (default: the one next to this Python)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a dry run is killed (default 600)")
    args = ap.parse_args(argv)

    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        manifest, cfg = make_inputs(work, args.tiles, not args.no_ir)
        t_make = time.perf_counter() - t0
        run_dir = work / "run"
        run_dir.mkdir()
        cmd = [args.snakemake, "-n", "all_emu_tiles", "--directory", str(run_dir), "--configfile", str(cfg),
               "-s", str(REPO / "Snakefile"), "--quiet", "rules"]
        print(f"{args.tiles} tiles ({'placeholder IR' if not args.no_ir else 'no IR'}), manifest {manifest} "
              f"written in {t_make:.2f} s; {os.cpu_count()} CPU(s)")
        print("command: " + " ".join(cmd))
        walls, cpus, counts = [], [], None
        load0 = os.getloadavg()[0]
        for k in range(args.repeat):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
                raise SystemExit(f"snakemake -n failed with exit status {proc.returncode}")
            walls.append(wall)
            c = parse_job_stats(proc.stdout + "\n" + proc.stderr)
            if c is None:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                raise SystemExit("no 'Job stats:' table in the dry run's output")
            counts = c
        print()
        print(f"{'run':<7} {'wall s':>8} {'cpu s':>7}")
        for k, (w, c) in enumerate(zip(walls, cpus)):
            print(f"{('cold' if k == 0 else 'warm ' + str(k)):<7} {w:>8.2f} {c:>7.2f}")
        print(f"load average before {load0:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs); "
              "cpu s = user + system time of the snakemake process")
        print()
        print(f"{'rule':<24} {'jobs':>6}")
        print("-" * 31)
        for rule, n in counts.items():
            if rule != "total":
                print(f"{rule:<24} {n:>6d}")
        print("-" * 31)
        print(f"{'total':<24} {counts.get('total', sum(counts.values())):>6d}")
        print()
        worst = max(walls)
        print(f"goal: dry-run DAG of {args.tiles} tiles <= {GOAL_S:.0f} s: slowest run {worst:.2f} s -> "
              f"{'MET' if worst <= GOAL_S else 'NOT MET'}")
        per_tile_ok = all(counts.get(r) == args.tiles for r in PER_TILE_RULES)
        print(f"check: one job per tile for {', '.join(PER_TILE_RULES)}: {'OK' if per_tile_ok else 'FAILED'}")
        absent = [r for r in ("evaluate_components", "simulate_survey") if r in counts]
        print(f"check: evaluate_components and simulate_survey not in the DAG: "
              f"{'OK' if not absent else 'FAILED (' + ', '.join(absent) + ')'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
