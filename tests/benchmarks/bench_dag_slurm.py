"""
Benchmark: the full EMU survey's DAG through the SLURM profile, and how many SLURM jobs it means.

Writes the same scratch inputs as bench_dag.py (a manifest of N tiles, default 850, whose radio
and IR files are empty placeholders; a --configfile pointing tiles.manifest at it), then times

    snakemake -n all_emu_tiles --profile profiles/slurm --directory <tmp> --configfile <cfg>

(a fresh process each run; dry-run mode, so nothing is submitted and no SLURM is needed) and
reads the dry run's job listing: a "Group job NAME" block is one sbatch, however many rules it
holds; every other job is one sbatch, except those of local rules (the `localrules:` directive or
`localrule: True` in Snakefile and rules/*.smk), which run in the snakemake process itself.
Prints the wall and CPU time of each run and the load average before it (goal <= 20 s wall;
the CPU time tells a busy machine from a slow DAG), the jobs per rule, and the SLURM jobs per
group and per ungrouped rule, with their total. Checks that each group is one job per tile.

Run it where a SLURM controller answers (a login node, or this machine after
../shared/tools/start-local-slurm.sh): the slurm plugin asks ``scontrol show config`` for
MinJobAge when Snakemake starts, and where the SLURM client is installed but no controller
answers that call waits for its 10 s timeout, which then shows as wall time without CPU time.
The benchmark times that call first and says which case it measured.

    .venv/bin/python tests/benchmarks/bench_dag_slurm.py [--tiles 850] [--repeat 2] [--configfile config/emu.yaml]
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
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOAL_S = 20.0
PER_TILE_GROUPS = ("tile_prep", "tile_finish")


def tile_ids(n):
    """EMU-like ids with '+' (and, one in four, '-') declinations: EMU_0001+00, EMU_0002-05 ..."""
    return [f"EMU_{i + 1:04d}{'-' if i % 4 == 3 else '+'}{(i * 5) % 90:02d}" for i in range(n)]


def make_inputs(work, n, with_ir):
    """Placeholder radio (and IR) files, their manifest, and a config naming it (as bench_dag.py)."""
    data = work / "data"
    data.mkdir(parents=True)
    lines = ["tile_id,radio_path,ir_path"]
    for t in tile_ids(n):
        radio = data / f"image.i.{t}.SB00000.cont.taylor.0.restored.conv.fits"
        radio.touch()
        ir = ""
        if with_ir:
            ir = data / f"{t}_w1.fits"
            ir.touch()
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
        m = re.match(r"^\s*([A-Za-z_]\w*)\s+(\d+)\s*$", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
        elif counts and not line.strip():
            break
    return counts


def local_rules(workflow_dir=REPO):
    """Rule names declared local in the Snakefile and rules/*.smk (a dry run prints them as `rule`)."""
    names = set()
    for path in [workflow_dir / "Snakefile", *sorted((workflow_dir / "rules").glob("*.smk"))]:
        text = path.read_text()
        for block in re.finditer(r"^localrules:\s*\n((?:[ \t]+\S.*\n?)+)", text, re.M):
            names.update(n.strip() for n in block.group(1).replace("\n", ",").split(",") if n.strip())
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*?)(?=^\S)", text + "\nEOF", re.M):
            if re.search(r"^\s+localrule:\s*True", m.group(2), re.M):
                names.add(m.group(1))
    return names


def count_slurm_jobs(text, local_names):
    """
    SLURM submissions of a dry run's job listing.

    Returns ``(groups, rules, local)``: Counters of group jobs by group name, of ungrouped
    jobs by rule, and of local jobs by rule. A group's member rules are indented under its
    "Group job" line; ungrouped and local jobs start at the left margin.
    """
    groups, rules, local = Counter(), Counter(), Counter()
    for line in text.splitlines():
        m = re.search(r"\] Group job (\S+) \(", line)
        if m:
            groups[m.group(1)] += 1
            continue
        m = re.match(r"^(local)?rule (\w+):$", line)
        if m:
            name = m.group(2)
            (local if m.group(1) or name in local_names else rules)[name] += 1
    return groups, rules, local


def scontrol_answer_s(timeout=10.0):
    """Seconds `scontrol show config` takes to answer (None: no scontrol, no answer or an error)."""
    t0 = time.perf_counter()
    try:
        subprocess.run(["scontrol", "show", "config"], capture_output=True, check=True, timeout=timeout)
    except (FileNotFoundError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=850, help="tiles in the manifest (default 850, the EMU survey)")
    ap.add_argument("--repeat", type=int, default=2, help="dry runs to time (default 2: cold, then warm)")
    ap.add_argument("--no-ir", action="store_true", help="empty ir_path for every tile (default: placeholder IR)")
    ap.add_argument("--profile", type=Path, default=REPO / "profiles" / "slurm", help="profile (default profiles/slurm)")
    ap.add_argument("--configfile", type=Path, action="append", default=[],
                    help="config layered under the benchmark's manifest (repeatable), e.g. config/emu.yaml "
                         "for the real survey's settings (1 shard per tile; the demo's config.yaml has 2)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_dag_slurm"),
                    help="scratch folder (default /tmp/bench_dag_slurm; removed unless --keep)")
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
        manifest, cfg = make_inputs(work, args.tiles, not args.no_ir)
        run_dir = work / "run"
        run_dir.mkdir()
        cmd = [args.snakemake, "-n", "all_emu_tiles", "--profile", str(args.profile), "--directory", str(run_dir),
               "-s", str(REPO / "Snakefile"), "--configfile", *map(str, args.configfile), str(cfg)]
        print(f"{args.tiles} tiles ({'no IR' if args.no_ir else 'placeholder IR'}), manifest {manifest}; "
              f"{os.cpu_count()} CPU(s)")
        print("command: " + " ".join(cmd))
        answer = scontrol_answer_s()
        print(f"scontrol show config answered in {answer:.3f} s (as on a cluster)" if answer is not None else
              "scontrol show config: no answer (no controller, or no SLURM client): where the client is "
              "installed, the slurm plugin waits up to 10 s for it in every run below")
        walls, cpus, loads = [], [], []
        for _ in range(args.repeat):
            loads.append(os.getloadavg()[0])
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            walls.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            out = proc.stdout + "\n" + proc.stderr
            if proc.returncode != 0:
                sys.stderr.write(out[-8000:])
                raise SystemExit(f"snakemake -n failed with exit status {proc.returncode}")
        counts = parse_job_stats(out)
        groups, rules, local = count_slurm_jobs(out, local_rules())
        if counts is None:
            sys.stderr.write(out[-3000:])
            raise SystemExit("no 'Job stats:' table in the dry run's output")

        print()
        print(f"{'run':<8} {'wall s':>8} {'CPU s':>8} {'load avg':>9}   (CPU s: user + system of snakemake)")
        for k, (w, c, la) in enumerate(zip(walls, cpus, loads)):
            print(f"{'cold' if k == 0 else f'warm {k}':<8} {w:>8.2f} {c:>8.2f} {la:>9.2f}")
        print()
        print(f"{'rule (Snakemake jobs)':<28} {'jobs':>6}")
        print("-" * 35)
        for rule, n in counts.items():
            if rule != "total":
                print(f"{rule:<28} {n:>6d}")
        print(f"{'total':<28} {counts.get('total', sum(counts.values())):>6d}")
        print()
        n_slurm = sum(groups.values()) + sum(rules.values())
        print(f"{'SLURM submissions':<28} {'jobs':>6}")
        print("-" * 35)
        for name, n in sorted(groups.items()):
            print(f"{'group ' + name:<28} {n:>6d}")
        for name, n in sorted(rules.items()):
            print(f"{'rule ' + name:<28} {n:>6d}")
        print(f"{'total SLURM jobs':<28} {n_slurm:>6d}   "
              f"({n_slurm / args.tiles:.2f} per tile; local, not submitted: {', '.join(sorted(local)) or 'none'})")
        print()
        worst = max(walls)
        print(f"goal: dry-run DAG of {args.tiles} tiles with the slurm profile <= {GOAL_S:.0f} s: "
              f"slowest run {worst:.2f} s wall, {max(cpus):.2f} s CPU -> {'MET' if worst <= GOAL_S else 'NOT MET'}"
              + ("" if worst <= GOAL_S or max(cpus) > GOAL_S else
                 f" (CPU time within the goal: the wall time is other load, {max(loads):.1f} on {os.cpu_count()} CPUs)"))
        per_tile_ok = all(groups.get(g) == args.tiles for g in PER_TILE_GROUPS)
        print(f"check: one SLURM job per tile for each of {', '.join(PER_TILE_GROUPS)}: "
              f"{'OK' if per_tile_ok else 'FAILED ' + str(dict(groups))}")
        if "infer_shard" in counts:
            print(f"check: infer_shard one SLURM job per shard ({counts['infer_shard']} shards): "
                  f"{'OK' if rules.get('infer_shard') == counts['infer_shard'] else 'FAILED'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
