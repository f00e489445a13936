"""
Benchmark: skysift's SEP extraction against peer source finders on one simulated EMU-like tile.

Simulates one tile (default 3000 x 3000 px, no IR image, fixed seed) with
`skysift.simulate.simulate_tile`, then runs on its FITS file:

    skysift-SEP        skysift.extract.extract_components, default ExtractSettings
                       (no matched filter, 5 sigma on SEP's rms map, Kron fluxes)
    SEP-3x3-filter     the same with filter_kernel="default" (SEP's 3x3 matched filter)
    photutils          Background2D (128 px boxes, 3x3 filter) + detect_sources (5 sigma on the
                       rms map, 5 px, no smoothing kernel: the image is already convolved with
                       the beam, so a second matched filter only correlates the noise further)
                       + deblend_sources (32 levels, contrast 0.005) + SourceCatalog
                       (centroid, Kron flux / beam area, peak / local rms)
    PyBDSF-gaul/-srl   bdsf.process_image(frequency=943.5e6, beam=15", thresh_isl=3,
                       thresh_pix=5); Gaussian list ('gaul') and source list ('srl') written
                       as FITS and read back (one process_image run; both rows show its time)

Every finder's catalogue becomes a DataFrame with the columns skysift.evaluate.score_tile
uses (x, y 0-based pixels, ra_deg_cont, dec_deg_cont ICRS, flux_int mJy, snr) and is scored
by the same score_tile + summarise against the simulator's truth. Wall times include reading
the FITS file; imports are done before timing.

    .venv/bin/python tests/benchmarks/bench_source_finders.py [--size 3000] [--seed 1001]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow_scripts"))

TILE_ID = "SIM_2154-55"
FINDERS = ("skysift-SEP", "SEP-3x3-filter", "photutils", "PyBDSF")
METRICS = ("completeness_snr7", "reliability_5sigma", "flux_ratio_median", "offset_median_arcsec_snr10")


def simulate(work, size, seed):
    from skysift.simulate import SimulationSettings, simulate_tile

    p = {k: work / n for k, n in (("radio", "radio.fits"), ("tc", "truth_components.parquet"),
                                  ("ts", "truth_sources.parquet"), ("meta", "tile.json"))}
    t0 = time.perf_counter()
    meta = simulate_tile(TILE_ID, 328.5, -55.0, seed, SimulationSettings(size=size, ir=False),
                         radio_path=p["radio"], ir_path=None, truth_components_path=p["tc"],
                         truth_sources_path=p["ts"], meta_path=p["meta"])
    return p, meta, time.perf_counter() - t0


def cpu_seconds():
    """User + system CPU time of this process and its waited-for children (PyBDSF forks)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _sky(tile, x, y):
    c = tile.wcs.pixel_to_world(np.asarray(x, float), np.asarray(y, float)).icrs
    return c.ra.deg, c.dec.deg


def run_skysift(path, filter_kernel="none"):
    from skysift.extract import ExtractSettings, extract_components
    from skysift.tileio import open_tile

    t0 = time.perf_counter()
    df = extract_components(open_tile(path), TILE_ID, ExtractSettings(filter_kernel=filter_kernel))
    return time.perf_counter() - t0, df


def run_photutils(path, box=128, nsigma=5.0, npix=5, deblend=True):
    from photutils.background import Background2D
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    from skysift.tileio import native_float32, open_tile

    t0 = time.perf_counter()
    tile = open_tile(path)
    data = native_float32(tile.data)
    mask = ~np.isfinite(data)
    data[mask] = 0.0
    bkg = Background2D(data, box, mask=mask, filter_size=(3, 3))
    data -= bkg.background
    rms = bkg.background_rms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm = detect_sources(data, nsigma * rms, n_pixels=npix, mask=mask)
        if deblend:
            segm = deblend_sources(data, segm, n_pixels=npix, n_levels=32, contrast=0.005, progress_bar=False)
        cat = SourceCatalog(data, segm, mask=mask)
        x, y = np.asarray(cat.x_centroid, float), np.asarray(cat.y_centroid, float)
        kron = np.asarray(cat.kron_flux, float)
        peak = np.asarray(cat.max_value, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, kron, peak = x[ok], y[ok], kron[ok], peak[ok]
    xi = np.clip(np.round(x).astype(int), 0, data.shape[1] - 1)
    yi = np.clip(np.round(y).astype(int), 0, data.shape[0] - 1)
    ra, dec = _sky(tile, x, y)
    df = pd.DataFrame(dict(x=x, y=y, ra_deg_cont=ra, dec_deg_cont=dec,
                           flux_int=kron / tile.beam_area * tile.mjy_per_unit,
                           flux_peak=peak * tile.mjy_per_unit, snr=peak / rms[yi, xi]))
    return time.perf_counter() - t0, df


def run_bdsf(path, work, ncores=None):
    import bdsf
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    from skysift.tileio import open_tile

    t0 = time.perf_counter()
    kw = dict(frequency=943.5e6, beam=(15 / 3600, 15 / 3600, 0.0), thresh_isl=3.0, thresh_pix=5.0, quiet=True)
    if ncores:
        kw["ncores"] = ncores
    # PyBDSF logs INFO lines to the console even with quiet=True: keep them out of the table
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        img = bdsf.process_image(str(path), **kw)
        out = {}
        for kind in ("gaul", "srl"):
            f = work / f"bdsf.{kind}.fits"
            img.write_catalog(outfile=str(f), format="fits", catalog_type=kind, clobber=True)
            out[kind] = Table.read(f).to_pandas()
    elapsed = time.perf_counter() - t0
    tile = open_tile(path)
    frame = tile.wcs.wcs.radesys.strip().lower() or "icrs"
    eq = f"J{tile.wcs.wcs.equinox:.1f}" if np.isfinite(tile.wcs.wcs.equinox) else None
    dfs, xy_check = {}, {}
    for kind, t in out.items():
        c = SkyCoord(t.RA.to_numpy(float), t.DEC.to_numpy(float), unit="deg", frame=frame,
                     **({"equinox": eq} if frame == "fk5" and eq else {}))
        x, y = tile.wcs.world_to_pixel(c)
        ra, dec = _sky(tile, x, y)
        if "Xposn" in t:  # the Gaussian list has bdsf's own pixel positions: check its convention
            xy_check[kind] = float(np.nanmedian(np.hypot(t.Xposn.to_numpy(float) - x, t.Yposn.to_numpy(float) - y)))
        dfs[kind] = pd.DataFrame(dict(x=x, y=y, ra_deg_cont=ra, dec_deg_cont=dec,
                                      flux_int=t.Total_flux.to_numpy(float) * 1e3,
                                      flux_peak=t.Peak_flux.to_numpy(float) * 1e3,
                                      snr=t.Peak_flux.to_numpy(float) / t.Isl_rms.to_numpy(float)))
    return elapsed, dfs, xy_check


def score(df, truth_c, truth_s, shape):
    from skysift.evaluate import score_tile, summarise

    t, d = score_tile(df, truth_c, truth_s, shape, 15.0, 2.0, match_radius_beams=0.5)
    return summarise(t, d)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=3000, help="tile side in pixels (default 3000)")
    ap.add_argument("--seed", type=int, default=1001, help="simulation seed (default 1001)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_source_finders"),
                    help="scratch folder (default /tmp/bench_source_finders; removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--finders", default=",".join(FINDERS),
                    help=f"comma-separated subset of {','.join(FINDERS)} (default all)")
    ap.add_argument("--no-deblend", action="store_true", help="photutils without deblend_sources")
    ap.add_argument("--bdsf-ncores", type=int, default=None, help="PyBDSF ncores (default: its own, all cores)")
    args = ap.parse_args(argv)
    global np, pd  # imported after argument parsing, so that --help works with any Python
    import numpy as np
    import pandas as pd

    finders = [f.strip() for f in args.finders.split(",") if f.strip()]
    bad = set(finders) - set(FINDERS)
    if bad:
        ap.error(f"unknown finder(s) {sorted(bad)}")
    if "skysift-SEP" not in finders:
        finders.insert(0, "skysift-SEP")  # the reference of the time ratios

    # import every finder before timing anything
    import sep  # noqa: F401

    import skysift.evaluate  # noqa: F401
    import skysift.extract  # noqa: F401
    if "photutils" in finders:
        import photutils.segmentation  # noqa: F401
    if "PyBDSF" in finders:
        import bdsf  # noqa: F401

    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        load0 = os.getloadavg()
        paths, meta, t_sim = simulate(work, args.size, args.seed)
        truth_c, truth_s = pd.read_parquet(paths["tc"]), pd.read_parquet(paths["ts"])
        shape = (args.size, args.size)
        compact7 = truth_c[~truth_c.extended & truth_c.in_footprint & (truth_c.snr >= 7)]
        print(f"tile {TILE_ID}: {args.size} x {args.size} px, seed {args.seed}, simulated in {t_sim:.1f} s: "
              f"{meta['n_sources']} sources, {meta['n_components']} truth components "
              f"({len(compact7)} compact at true S/N >= 7), NaN fraction {meta['nan_fraction']:.3f}")
        print(f"{os.cpu_count()} CPU(s); scoring: skysift.evaluate.score_tile (match radius 0.5 beam = 7.5\") "
              f"+ summarise for every finder")
        rows = []
        notes = []
        for name in finders:
            c0 = cpu_seconds()
            if name == "skysift-SEP":
                t, df = run_skysift(paths["radio"])
                rows.append((name, t, cpu_seconds() - c0, df))
            elif name == "SEP-3x3-filter":
                t, df = run_skysift(paths["radio"], filter_kernel="default")
                rows.append((name, t, cpu_seconds() - c0, df))
            elif name == "photutils":
                t, df = run_photutils(paths["radio"], deblend=not args.no_deblend)
                rows.append((name + ("" if not args.no_deblend else "-nodeblend"), t, cpu_seconds() - c0, df))
            elif name == "PyBDSF":
                t, dfs, chk = run_bdsf(paths["radio"], work, args.bdsf_ncores)
                c = cpu_seconds() - c0
                rows.append(("PyBDSF-gaul", t, c, dfs["gaul"]))
                rows.append(("PyBDSF-srl", t, c, dfs["srl"]))
                notes.append("PyBDSF: one process_image run (both rows share its time); x, y from its RA, DEC through "
                             f"the tile WCS (median |Xposn,Yposn - that| = {chk['gaul']:.3f} px in the gaul)")
        t_ref, c_ref = rows[0][1], rows[0][2]
        results = {}
        off_label = 'off>=10"'
        hdr = (f"{'finder':<16} {'wall s':>7} {'cpu s':>7} {'x SEP':>6} {'cpu x':>6} {'n_det':>6} {'compl>=7':>9} {'rel>=5':>7} "
               f"{'flux med':>9} {off_label:>9}")
        print()
        print(hdr)
        print("-" * len(hdr))
        for name, t, c, df in rows:
            s = score(df, truth_c, truth_s, shape)
            results[name] = (t, s, c)
            print(f"{name:<16} {t:>7.2f} {c:>7.2f} {t / t_ref:>6.1f} {c / c_ref:>6.1f} {len(df):>6d} {s['completeness_snr7']:>9.4f} "
                  f"{s['reliability_5sigma']:>7.4f} {s['flux_ratio_median']:>9.4f} "
                  f"{s['offset_median_arcsec_snr10']:>9.3f}")
        print("-" * len(hdr))
        print(f"load average at start {load0[0]:.2f}, at end {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs): "
              "wall times are inflated when it exceeds the CPU count; cpu s = user+sys incl. child processes")
        print("x SEP, cpu x = wall time, cpu time over skysift-SEP's; compl>=7 = completeness of compact truth at true S/N>=7;")
        print("rel>=5 = reliability of detections with measured S/N>=5; flux med = median flux_int ratio;")
        print("off>=10\" = median offset (arcsec) at true S/N>=10")
        for n in notes:
            print(n)

        bdsf_rows = [k for k in results if k.startswith("PyBDSF")]
        if bdsf_rows:
            print()
            t_sep, s_sep, c_sep = results["skysift-SEP"]
            # the PyBDSF reference: its more complete catalogue of the two
            ref = max(bdsf_rows, key=lambda k: results[k][1]["completeness_snr7"])
            t_b, s_b, c_b = results[ref]
            tol = 0.005
            checks = {
                "completeness_snr7": s_sep["completeness_snr7"] >= s_b["completeness_snr7"] - tol,
                "reliability_5sigma": s_sep["reliability_5sigma"] >= s_b["reliability_5sigma"] - tol,
                "flux_ratio_median": abs(s_sep["flux_ratio_median"] - 1) <= abs(s_b["flux_ratio_median"] - 1) + tol,
                "offset_median_arcsec_snr10": s_sep["offset_median_arcsec_snr10"]
                <= s_b["offset_median_arcsec_snr10"] + 0.05,
            }
            speed = t_b / t_sep
            print(f"skysift-SEP vs {ref} (accuracy 'reached' = no worse than PyBDSF within {tol} for completeness, "
                  f"reliability and |flux ratio - 1|, within 0.05\" for the offset):")
            for k, ok in checks.items():
                print(f"  {k:<28} SEP {s_sep[k]:>8.4f}  PyBDSF {s_b[k]:>8.4f}  {'reached' if ok else 'NOT reached'}")
            print(f"  speed (wall): PyBDSF {t_b:.2f} s / skysift-SEP {t_sep:.2f} s = {speed:.1f}x "
                  f"({'>=' if speed >= 10 else '<'} 10x); CPU time: {c_b:.2f} s / {c_sep:.2f} s = {c_b / c_sep:.1f}x")
            from skysift.evaluate import GOALS

            for k in ("skysift-SEP", ref):
                passed = [n for n in GOALS if results[k][1]["goals"][n]["passed"]]
                print(f"  {k} meets {len(passed)}/{len(GOALS)} of skysift's accuracy goals (skysift.evaluate.GOALS)"
                      + ("" if len(passed) == len(GOALS) else f"; fails {sorted(set(GOALS) - set(passed))}"))
            verdict = all(checks.values()) and speed >= 10
            print(f"skysift-SEP reaches PyBDSF's accuracy at >= 10x its speed: {'YES' if verdict else 'NO'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
