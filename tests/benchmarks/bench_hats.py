"""
Benchmark: rule build_hats_catalogue at survey scale.

Writes ``--files`` per-tile sources tables (the `skysift.columns.CATALOGUE_SOURCES` contract,
filled with synthetic values of realistic size: 6 class probabilities, 1-3 component ids, a
mask RLE of ~40 characters) with ``--rows`` rows in all, spread over the southern sky, then
runs `skysift.hats.build_hats_catalogue` on them in a fresh Python process (as a Snakemake job)
under ``/usr/bin/time -v``. Per size it prints the input size, wall and CPU time, peak RSS,
the HEALPix partitions and the size written, as a table.

    .venv/bin/python tests/benchmarks/bench_hats.py [--rows 100000 1000000] [--files 100]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "workflow_scripts"))


def synthetic_sources(tile_id, n, rng):
    """``n`` rows of the CATALOGUE_SOURCES contract for one tile (values synthetic, sizes realistic)."""
    import pyarrow as pa

    from skysift.columns import CATALOGUE_SOURCES

    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 0.5, n)))  # uniform on the sky below dec +30
    ids = np.array([f"{tile_id}_s{i:06d}" for i in range(n)], dtype=object)
    data = {}
    for col in CATALOGUE_SOURCES:
        t = col.type
        if col.name in ("ra", "dec"):
            data[col.name] = ra if col.name == "ra" else dec
        elif col.name in ("source_id", "source_name"):
            data[col.name] = ids
        elif col.name == "tile_id":
            data[col.name] = np.full(n, tile_id, dtype=object)
        elif col.name == "component_ids":
            data[col.name] = [[f"{tile_id}_c{i:06d}_{k}" for k in range(1 + i % 3)] for i in range(n)]
        elif col.name == "mask_rle":
            data[col.name] = np.array([f"{i % 97}{'a3b5' * 9}" for i in range(n)], dtype=object)
        elif pa.types.is_list(t):
            data[col.name] = list(rng.dirichlet(np.ones(6), n).astype(np.float32))
        elif pa.types.is_string(t):
            data[col.name] = np.full(n, f"{col.name[:12]}", dtype=object)
        elif pa.types.is_floating(t):
            data[col.name] = rng.uniform(0, 10, n)
        elif pa.types.is_boolean(t):
            data[col.name] = rng.random(n) < 0.5
        else:
            data[col.name] = rng.integers(0, 4000, n)
    return data


def write_inputs(folder, rows, files, seed=0):
    from skysift.catalogue import write_parquet
    from skysift.columns import CATALOGUE_SOURCES

    rng = np.random.default_rng(seed)
    paths = []
    for k, n in enumerate(np.diff(np.linspace(0, rows, files + 1).astype(int))):
        tile_id = f"EMU_{k:04d}"
        paths.append(folder / f"{tile_id}.parquet")
        write_parquet(synthetic_sources(tile_id, int(n), rng), CATALOGUE_SOURCES, paths[-1], {"tile_id": tile_id})
    return paths


def run_build(paths, out):
    """build_hats_catalogue in a fresh process: wall, user+sys CPU, peak RSS (GB), its summary."""
    code = ("import sys, json; sys.path.insert(0, %r); from skysift.hats import build_hats_catalogue; "
            "s = build_hats_catalogue(sys.argv[2:], sys.argv[1], table='sources'); "
            "print('PARTITIONS', len(s['partitions']))" % str(HERE.parents[2] / "workflow_scripts"))
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-W", "ignore", "-c", code, str(out),
                           *map(str, paths)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    err = proc.stderr

    def field(name):
        return float(re.search(rf"{name}: ([0-9.]+)", err).group(1))

    cpu = field(r"User time \(seconds\)") + field(r"System time \(seconds\)")
    rss = field(r"Maximum resident set size \(kbytes\)") / 1024**2
    parts = int(re.search(r"PARTITIONS (\d+)", proc.stdout).group(1))
    return wall, cpu, rss, parts


def du(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1024**2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--files", type=int, default=100, help="per-tile files the rows are split into")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_hats_"))
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, scratch {work}")
    lines = ["| rows | files | input MB | wall s | CPU s | peak RSS GB | partitions | HATS MB | RSS / input |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    try:
        for rows in args.rows:
            folder = work / f"in_{rows}"
            folder.mkdir(parents=True, exist_ok=True)
            paths = write_inputs(folder, rows, args.files)
            out = work / f"hats_{rows}"
            shutil.rmtree(out, ignore_errors=True)
            wall, cpu, rss, parts = run_build(paths, out)
            size_in = du(folder)
            lines.append(f"| {rows} | {args.files} | {size_in:.1f} | {wall:.1f} | {cpu:.1f} | {rss:.2f} | {parts} | "
                         f"{du(out):.1f} | {rss * 1024 / size_in:.0f} |")
            print(lines[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
