"""
Benchmark: the quality SOM at survey scale (issue 3).

Two timed parts, each in a fresh Python process (as a Snakemake job is), calling the library
functions the rules call:

    train   skysift.som.train_som on 3M synthetic 5-D component features (the five SOM features
            drawn from a mixture like the simulated survey's: compact sources, extended ones,
            noise-edge and artefact-like spurious ones): 15 x 15 map, sigma 3, 20 batch epochs,
            K-means into 20 clusters. Prints the quantization and topographic errors.
            Goal: <= 60 s (the seed: 13 s per iteration x 200 iterations).
    stamps  on a 12288 x 12288 tile (float32, NaN outside a rotated footprint, beam-correlated
            noise written once as a 4-D FITS, not timed): SomModel.map of 3M components placed
            on the tile (rule map_som) and build_stamps of all its 1024 px regions (144 regions
            x 20 clusters; rule build_stamps). Goal: <= 30 s.

Per part it prints wall time, the time inside the timed functions, and the peak RSS of the
process (getrusage), as a table.

    .venv/bin/python tests/benchmarks/bench_som.py [--n 3000000] [--size 12288] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "workflow_scripts"))

GOALS = {"train": 60.0, "stamps": 30.0}


def synthetic_features(n, seed=0):
    """``(n, 5)`` features in `skysift.som.FEATURES` order, a mixture of four populations."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, size=n, p=[0.7, 0.1, 0.12, 0.08])
    log_snr = np.where(kind == 0, 0.7 + rng.exponential(0.35, n), 0.7 + rng.exponential(0.2, n))
    log_area = 0.9 + 0.8 * (log_snr - 0.7) + rng.normal(0, 0.15, n) + np.where(kind == 1, 0.6, 0.0)
    ell = np.clip(np.where(kind == 3, rng.beta(5, 2, n), rng.beta(2, 9, n)), 0, 1)
    log_rms = np.log10(0.025) + np.where(kind == 2, rng.uniform(0.2, 0.7, n), rng.normal(0, 0.05, n))
    log_comp = np.where(kind == 1, rng.normal(0.4, 0.2, n), rng.normal(0.02, 0.05, n))
    return np.column_stack([log_area, ell, log_snr, log_rms, log_comp])


def write_tile(path, size, seed=1):
    """A 4-D big-endian float32 tile of beam-correlated noise, NaN outside a rotated footprint."""
    from astropy.io import fits
    from skysift.simulate import SimulationSettings, footprint_mask, make_radio_noise, radio_header

    s = SimulationSettings(size=size, ir=False)
    img = make_radio_noise(np.random.default_rng(seed), s)
    xs = np.arange(size, dtype=float)[None, :]
    for r0 in range(0, size, 1024):
        ys = np.arange(r0, min(r0 + 1024, size), dtype=float)[:, None]
        img[r0 : r0 + 1024][~footprint_mask(xs, ys, s)] = np.nan
    fits.PrimaryHDU(img.reshape(1, 1, size, size).astype(">f4"), radio_header("BENCH", 328.5, -55.0, seed, s)).writeto(
        path, overwrite=True)


def part_train(args):
    from skysift.som import train_som

    x = synthetic_features(args.n)
    t0 = time.perf_counter()
    model = train_som(x, rows=15, cols=15, sigma=3.0, epochs=20, n_clusters=20, seed=42)
    dt = time.perf_counter() - t0
    np.savez(Path(args.workdir) / "bench_som.npz", codebook=model.codebook, node_cluster=model.node_cluster,
             center=model.center, scale=model.scale)
    return {"seconds": dt, "quantization_error": model.meta["quantization_error"],
            "topographic_error": model.meta["topographic_error"], "samples": int(len(x))}


def part_stamps(args):
    import pandas as pd
    from skysift.som import SomModel
    from skysift.stamps import build_stamps
    from skysift.tileio import open_tile

    saved = np.load(Path(args.workdir) / "bench_som.npz")
    model = SomModel(codebook=saved["codebook"], node_cluster=saved["node_cluster"], center=saved["center"],
                     scale=saved["scale"])
    tile = open_tile(Path(args.workdir) / "tile.fits")
    x = synthetic_features(args.n, seed=5)
    rng = np.random.default_rng(6)
    ny, nx = tile.shape
    comp = pd.DataFrame({
        "component_id": np.char.add("c", np.arange(args.n).astype(str)).astype(object),
        "x": rng.uniform(0, nx - 1, args.n), "y": rng.uniform(0, ny - 1, args.n),
        "npix": 10 ** x[:, 0], "maj_axis": 15.0 / np.sqrt(1 - x[:, 1] + 1e-3), "min_axis": 15.0 * np.sqrt(1 - x[:, 1] + 1e-3),
        "snr": 10 ** x[:, 2], "rms_image": 10 ** x[:, 3], "flux_peak": 10 ** (x[:, 2] + x[:, 3]),
    })
    comp["flux_int"] = comp["flux_peak"] * 10 ** x[:, 4]
    t0 = time.perf_counter()
    bx, by, cluster = model.map(comp)
    t_map = time.perf_counter() - t0
    mapping = pd.DataFrame({"component_id": comp["component_id"], "som_cluster": cluster})
    info = build_stamps(tile, "BENCH", comp, mapping, Path(args.workdir) / "stamps.h5", region_size=1024,
                        stamp_size=25, n_clusters=20, binning=2)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "map_seconds": t_map, "stamps_seconds": dt - t_map, "components": int(args.n),
            "regions": info["n_regions"], "compression_ratio": info["compression_ratio"]}


def child(args):
    out = {"train": part_train, "stamps": part_stamps}[args.part](args)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3_000_000, help="components (default 3M)")
    p.add_argument("--size", type=int, default=12288, help="tile side for the stamps part (default 12288)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--part", choices=["train", "stamps"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:
        return child(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_som_"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "tile.fits").exists():
        t0 = time.perf_counter()
        write_tile(work / "tile.fits", args.size)
        print(f"wrote a {args.size}^2 tile in {time.perf_counter() - t0:.1f} s (not timed)", flush=True)
    rows = {}
    for part in ("train", "stamps"):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE), "--part", part, "--n", str(args.n), "--size", str(args.size),
                               "--workdir", str(work)], capture_output=True, text=True, env=os.environ)
        if proc.returncode:
            sys.exit(f"{part} failed:\n{proc.stderr[-3000:]}")
        rows[part] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - t0}
    tr, st = rows["train"], rows["stamps"]
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'part':<8}{'timed (s)':>10}{'goal (s)':>10}{'process (s)':>13}{'peak RSS (MB)':>15}  details")
    print(f"{'train':<8}{tr['seconds']:>10.1f}{GOALS['train']:>10.0f}{tr['wall']:>13.1f}{tr['peak_rss_mb']:>15.0f}  "
          f"{tr['samples']} samples, quantization error {tr['quantization_error']:.4f}, "
          f"topographic error {tr['topographic_error']:.4f}")
    print(f"{'stamps':<8}{st['seconds']:>10.1f}{GOALS['stamps']:>10.0f}{st['wall']:>13.1f}{st['peak_rss_mb']:>15.0f}  "
          f"map {st['map_seconds']:.1f} s + stamps {st['stamps_seconds']:.1f} s; {st['components']} components, "
          f"{st['regions']} regions, compression ratio {st['compression_ratio']:.0f}")
    ok = tr["seconds"] <= GOALS["train"] and st["seconds"] <= GOALS["stamps"]
    print("goals met" if ok else "GOALS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
