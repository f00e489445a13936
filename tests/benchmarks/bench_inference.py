"""
Benchmark: detector inference throughput (cutouts per second) of rule infer_shard.

Simulates one EMU-like tile (default 1024 x 1024 px, with the IR image), cuts it into 256 px
cutouts with the workflow's own code (one shard), and runs `skysift.detection.infer.infer_shard`
on it with a model file: the trained demo model by default, or an untrained model of the given
architecture (an untrained model emits the maximum number of detections per cutout, so it
measures the slow end). Prints cutouts/s (wall clock, after a warm-up pass), cutouts per
CPU-second (independent of other jobs on a shared machine), detections, device and threads. Goals: >= 5 cutouts/s
with the light CPU backbone (resnet10, 64 FPN channels) on this machine's CPU; >= 200 cutouts/s
for resnet50 + 256 FPN channels with AMP on one H100.

    .venv/bin/python tests/benchmarks/bench_inference.py [--model results/models/detector.pt]
    .venv/bin/python tests/benchmarks/bench_inference.py --untrained --backbone resnet50 --fpn-channels 256 \\
        --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "workflow_scripts"))

GOALS = {"cpu": 5.0, "cuda": 200.0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "results/models/detector.pt"), help="model file of train_detector")
    p.add_argument("--untrained", action="store_true", help="an untrained model of --backbone instead of --model")
    p.add_argument("--backbone", default="resnet10")
    p.add_argument("--fpn-channels", type=int, default=64)
    p.add_argument("--fusion", default="radio")
    p.add_argument("--size", type=int, default=1024, help="side of the simulated tile (pixels)")
    p.add_argument("--cutout", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="as detection.workers")
    p.add_argument("--host-min-score", type=float, default=0.5, help="as detection.source_min_score")
    p.add_argument("--host-ir-psf-fwhm", type=float, default=6.1, help="as detection.host_ir_psf_fwhm (arcsec)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)

    import torch

    from skysift import simulate as sim
    from skysift.cutouts import write_shards
    from skysift.detection import labels
    from skysift.detection.infer import infer_shard
    from skysift.detection.model import ModelSettings, build_model
    from skysift.detection.train import model_file_content
    from skysift.tileio import open_tile

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_inference_"))
    work.mkdir(parents=True, exist_ok=True)
    paths = [work / n for n in ("radio.fits", "ir.fits", "tc.parquet", "ts.parquet", "meta.json")]
    if not paths[0].exists():
        sim.simulate_tile("BENCH", 150.0, -30.0, 11, sim.SimulationSettings(size=args.size), *paths)
    shard = work / "shard-0.h5"
    if not shard.exists():
        write_shards(open_tile(paths[0]), "BENCH", [str(shard)], size=args.cutout, overlap=64, ir_path=paths[1])
    model_path = Path(args.model)
    if args.untrained or not model_path.exists():
        if not args.untrained:
            print(f"{model_path} not found: benchmarking an untrained {args.backbone}", file=sys.stderr)
        ms = ModelSettings(backbone=args.backbone, fpn_channels=args.fpn_channels, size=args.cutout, num_classes=6)
        model_path = work / "untrained.pt"
        torch.save(model_file_content(build_model(ms), ms, labels.SCHEMES["rgz"], args.fusion), model_path)
    infer_shard(shard, model_path, work / "warmup.parquet", batch_size=args.batch_size, device=args.device,
                host_min_score=args.host_min_score, host_ir_psf_fwhm=args.host_ir_psf_fwhm, workers=args.workers)  # warm-up
    t0 = time.process_time()
    info = infer_shard(shard, model_path, work / "detections.parquet", batch_size=args.batch_size,
                       device=args.device, host_min_score=args.host_min_score, host_ir_psf_fwhm=args.host_ir_psf_fwhm,
                       workers=args.workers)
    cpu = time.process_time() - t0
    kind = "cuda" if info["device"].startswith("cuda") else "cpu"
    # on a shared machine the wall rate depends on the load; the rate per CPU-second does not
    result = {**info, "threads": args.threads, "cpu_seconds": round(cpu, 1),
              "cutouts_per_cpu_s": round(info["n_cutouts"] / cpu, 2) if cpu > 0 else None, "model": str(model_path),
              "goal_cutouts_per_s": GOALS[kind], "passed": info["cutouts_per_s"] >= GOALS[kind]}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
