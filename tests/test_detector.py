"""The Mask R-CNN detector: model, augmentation, resumable and distributed training, shard inference."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import simulate_files
from skysift import simulate as sim
from skysift.columns import DETECTIONS
from skysift.cutouts import write_shards
from skysift.detection import labels, model as M
from skysift.detection.peaks import PEAK_COUNT_ERROR, peak_class_probs
from skysift.detection.train import (TrainSettings, augment, load_model_file, model_file_content, settings_digest,
                                     train)
from skysift.masks import decode_mask
from skysift.tileio import open_tile

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
# the smallest useful detector: 64 px cutouts, 16 FPN channels
TINY = {"backbone": "resnet10", "fpn_channels": 16, "anchor_sizes": [4, 8, 16, 32, 64], "min_score": 0.3}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A 256 px simulated tile, its training set on 64 px cutouts, and a 10-cutout subset of it."""
    folder = tmp_path_factory.mktemp("detector")
    settings = sim.SimulationSettings(size=256, density_5sigma=3000.0, extended_fraction=0.3)
    paths = simulate_files(folder, "T1", 3, settings)
    labels.build_simulated_training_set(paths[0], paths[3], paths[2], "T1", folder / "train.h5", folder / "train.json",
                                        ir_path=paths[1], size=64, overlap=16)
    doc = json.loads((folder / "train.json").read_text())

    def subset(name, n):
        keep = [im for im in doc["images"] if im["id"] in range(6, 6 + n)]
        ids = {im["id"] for im in keep}
        sub = dict(doc, images=keep, annotations=[a for a in doc["annotations"] if a["image_id"] in ids])
        (folder / name).write_text(json.dumps(sub))
        return str(folder / name)

    return {"folder": folder, "radio": paths[0], "ir": paths[1], "ten": subset("ten.json", 10),
            "four": subset("four.json", 4)}


def _settings(folder, train_set, name, **kw):
    kw = {"model": dict(TINY), "batch_size": 2, "epochs": 2, "warmup_steps": 2, "checkpoint_every": 3,
          "val_fraction": 0.2, "seed": 5, **kw}
    return TrainSettings(train_sets=[train_set], out=str(folder / f"{name}.pt"),
                         checkpoint_dir=str(folder / f"ckpt-{name}"), metrics_csv=str(folder / f"{name}.csv"),
                         curves_png=str(folder / f"{name}.png"), **kw)


def test_model_keeps_the_cutout_size_and_returns_class_probabilities():
    ms = M.ModelSettings(**{**TINY, "size": 64, "num_classes": 4, "min_score": 0.0, "detections_per_image": 7})
    model = M.build_model(ms).eval()
    assert model.transform.min_size == (64,) and model.transform.max_size == 64
    sizes = model.rpn.anchor_generator.sizes
    assert [s[0] for s in sizes] == [4, 8, 16, 32, 64]
    assert model.rpn.anchor_generator.num_anchors_per_location() == [len(ms.aspect_ratios)] * 5 == [5] * 5
    with torch.inference_mode():
        out = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)])
    for o in out:
        assert o["probs"].shape == (len(o["boxes"]), 4) and len(o["boxes"]) <= 7
        assert torch.all(o["probs"].sum(1) <= 1 + 1e-5)
        assert torch.allclose(o["probs"].max(1).values, o["scores"])
        assert torch.equal(o["probs"].argmax(1) + 1, o["labels"])  # one class per detection
        assert o["masks"].shape[-2:] == (64, 64)
    with pytest.raises(ValueError, match="backbone must be one of"):
        M.ModelSettings(backbone="vgg16")


def test_low_layers_frozen_or_slowed(tmp_path):
    ms = M.ModelSettings(**{**TINY, "size": 64, "num_classes": 2, "trainable_layers": 3})
    model = M.build_model(ms)
    frozen = {n.split(".")[2] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    groups = M.parameter_groups(model, 0.01, 0.1)
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.001, 0.01])  # layer2-3, then top; stem frozen
    model5 = M.build_model(replace(ms, trainable_layers=5))
    assert sorted(g["lr"] for g in M.parameter_groups(model5, 0.01, 0.1)) == pytest.approx([1e-4, 1e-3, 1e-2])


def test_initial_weights_come_from_a_local_file_only(tmp_path):
    from torchvision.models import resnet

    ms = M.ModelSettings(**{**TINY, "backbone": "resnet18", "size": 64, "num_classes": 2})
    body = resnet.resnet18(weights=None)  # stands for a locally saved ImageNet backbone
    torch.save(body.state_dict(), tmp_path / "backbone.pth")
    model = M.build_model(ms)
    n = M.load_initial_weights(model, tmp_path / "backbone.pth")
    assert n == len(body.state_dict()) - 2  # every tensor but the classifier (fc)
    assert torch.equal(model.backbone.body.layer1[0].conv1.weight, body.layer1[0].conv1.weight)
    torch.save({"model": model.state_dict()}, tmp_path / "detector.pt")
    assert M.load_initial_weights(M.build_model(ms), tmp_path / "detector.pt") == len(model.state_dict())
    torch.save({"x": torch.zeros(3)}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no tensor fits"):
        M.load_initial_weights(model, tmp_path / "junk.pt")


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_moves_masks_with_pixels(seed):
    radio = np.zeros((16, 16), np.float32)
    radio[3, 5] = 1.0
    ir = np.zeros((16, 16), np.float32)
    ir[3, 5] = 2.0
    masks = np.zeros((1, 16, 16), bool)
    masks[0, 2:5, 4:7] = True
    r, i, m = augment(radio, ir, masks, np.random.default_rng(seed), noise=0.0)
    y, x = np.unravel_index(np.argmax(r), r.shape)
    assert i[y, x] == 2.0 and m[0, y, x] and m.sum() == 9
    # noise is added on about half the cutouts, correlated on the beam scale, never to the IR
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(9).normal(0, 1, (64, 64)).astype(np.float32)
    r2, i2, _ = augment(base, base.copy(), np.zeros((0, 64, 64), bool), rng, geometric=False, noise=1.0,
                        beam_sigma_px=3.0)
    assert np.array_equal(i2, base)
    assert r2.shape == base.shape


def test_noise_augmentation_happens_about_half_the_time():
    base = np.random.default_rng(9).normal(0, 1, (32, 32)).astype(np.float32)
    changed = [not np.array_equal(augment(base, None, np.zeros((0, 32, 32), bool), np.random.default_rng(s),
                                          geometric=False, noise=1.0)[0], base) for s in range(200)]
    assert 0.4 < np.mean(changed) < 0.6


def test_repeat_factor_sampling_by_hand():
    from types import SimpleNamespace

    from skysift.detection.train import epoch_order, repeat_factors

    # 4 cutouts: class 1 on all, class 2 on one (f = 1/4); t = 1: r = sqrt(1 / 0.25) = 2 for that one
    items = [(None, 0, [{"category_id": 1}], 0)] * 3 + [(None, 0, [{"category_id": 1}, {"category_id": 2}], 0)]
    data = SimpleNamespace(items=items)
    idx = np.arange(4)
    assert repeat_factors(data, idx, 1.0) == pytest.approx([1, 1, 1, 2])
    assert repeat_factors(data, idx, 0.0) == pytest.approx([1, 1, 1, 1])
    order = epoch_order(idx, np.array([1, 1, 1, 2.0]), seed=3, epoch=0)
    assert sorted(order) == [0, 1, 2, 3, 3]
    assert np.array_equal(order, epoch_order(idx, np.array([1, 1, 1, 2.0]), seed=3, epoch=0))
    halves = [np.sum(epoch_order(idx, np.array([1, 1, 1, 1.5]), 3, e) == 3) for e in range(400)]
    assert np.mean(halves) == pytest.approx(1.5, abs=0.08)


KILLER = textwrap.dedent("""
    import json, logging, os, signal, sys
    from skysift.detection.train import TrainSettings, train
    logging.basicConfig(level=logging.INFO)
    cfg = TrainSettings(**json.load(open(sys.argv[1])))
    kill_at = int(sys.argv[2])
    train(cfg, on_step=lambda step: step == kill_at and os.kill(os.getpid(), signal.SIGKILL))
""")


def test_killed_training_resumes_from_its_last_checkpoint(survey, tmp_path, caplog):
    cfg = _settings(tmp_path, survey["ten"], "run")
    (tmp_path / "cfg.json").write_text(json.dumps(asdict(cfg)))
    (tmp_path / "killer.py").write_text(KILLER)
    # 8 training cutouts, batches of 2: 4 steps per epoch; checkpoints at steps 3, 4 (epoch end), 6
    proc = subprocess.run([sys.executable, tmp_path / "killer.py", tmp_path / "cfg.json", "7"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (tmp_path / "run.pt").exists()
    ckpt = tmp_path / "ckpt-run" / f"checkpoint-{settings_digest(cfg)}.pt"
    state = torch.load(ckpt, weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)
    with caplog.at_level(logging.INFO, logger="skysift.detection.train"):
        resumed = train(cfg)
    assert "resuming from checkpoint" in caplog.text and "batch 2 (step 6 of 8)" in caplog.text
    # the resumed run equals an uninterrupted one (same data order, augmentation and RNG on CPU)
    straight = train(_settings(tmp_path, survey["ten"], "straight"))
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    metrics = pd.read_csv(cfg.metrics_csv)
    assert list(metrics.epoch) == [0, 1] and list(metrics.step) == [4, 8]
    assert {"loss", "loss_mask", "val_box_map50", "val_mask_map50"} <= set(metrics.columns)
    assert (tmp_path / "run.png").stat().st_size > 0
    model, meta = load_model_file(cfg.out)
    assert meta["categories"] == list(labels.SCHEMES["rgz"]) and meta["fusion"]["mode"] == "radio"
    # the model id depends on the weights and settings only, not on the run's time or paths
    assert meta["model_id"] == straight["model_id"] == resumed["model_id"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        result = train(TrainSettings(**cfg_dict))
        torch.save(result["model"], f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_hold_identical_weights_after_a_step(survey, tmp_path):
    cfg = _settings(tmp_path, survey["four"], "ddp", epochs=1, val_fraction=0.0)  # 4 cutouts = 1 step of 2 x 2
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), asdict(cfg), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    ms = M.ModelSettings(**{**TINY, "size": 64, "num_classes": 6})
    torch.manual_seed(cfg.seed)
    initial = M.build_model(ms).state_dict()
    names = [n for n, p in M.build_model(ms).named_parameters() if p.requires_grad]
    for n in names:
        assert torch.equal(a[n], b[n]), n
    assert any(not torch.equal(a[n], initial[n]) for n in names)  # the step changed the weights
    assert (tmp_path / "ddp.pt").exists()  # written by rank 0 only


def test_infer_shard_writes_the_detection_contract(survey, tmp_path):
    ms = M.ModelSettings(**{**TINY, "size": 64, "num_classes": 6, "min_score": 0.0, "detections_per_image": 3})
    torch.manual_seed(0)
    model = M.build_model(ms)
    torch.save(model_file_content(model, ms, labels.SCHEMES["rgz"], "d3"), tmp_path / "model.pt")
    shard = tmp_path / "shard-0.h5"
    table = write_shards(open_tile(survey["radio"]), "T1", [str(shard)], size=64, overlap=16, ir_path=survey["ir"])
    from skysift.detection.infer import infer_shard

    info = infer_shard(shard, tmp_path / "model.pt", tmp_path / "det.parquet", batch_size=4, device="cpu")
    det = pd.read_parquet(tmp_path / "det.parquet")
    meta = pq.read_schema(tmp_path / "det.parquet").metadata
    assert list(det.columns) == [c.name for c in DETECTIONS] and info["n_cutouts"] == len(table) == 25
    assert len(det) == info["n_detections"] == 3 * 25
    stored = torch.load(tmp_path / "model.pt", weights_only=True)["model_id"]
    assert meta[b"model_id"].decode() == stored and meta[b"fusion"] == b"d3"
    assert json.loads(meta[b"categories"]) == list(labels.SCHEMES["rgz"]) and meta[b"device"] == b"cpu"
    assert float(meta[b"cutouts_per_s"]) > 0
    geo = table.set_index("cutout_id").loc[det.cutout_id]
    assert np.allclose(det.tile_box_x_min, det.box_x_min + geo.x_min.to_numpy())
    assert np.allclose(det.tile_box_y_max, det.box_y_max + geo.y_min.to_numpy())
    assert all(len(p) == 6 for p in det.class_probs)
    for row in det.itertuples():
        m = decode_mask(row.mask_rle)
        assert m.sum() == row.mask_npix > 0
    with h5py.File(shard) as f:
        assert f.attrs["has_ir"]
    # the peak recount: each component count's probability goes to the class of the counted peaks
    rgz = list(labels.SCHEMES["rgz"])
    assert meta[b"recount_peaks"] == b"true" and float(meta[b"peak_count_error"]) == PEAK_COUNT_ERROR
    assert (det.n_peaks >= 0).all()
    for row in det.itertuples():
        assert np.allclose(row.class_probs, peak_class_probs(row.model_probs, rgz, row.n_peaks, PEAK_COUNT_ERROR))
        assert row.morph_class == rgz[int(np.argmax(row.class_probs))] and np.isclose(row.score, max(row.class_probs))
    raw = infer_shard(shard, tmp_path / "model.pt", tmp_path / "raw.parquet", batch_size=4, device="cpu",
                      recount_peaks=False)
    raw = pd.read_parquet(tmp_path / "raw.parquet")
    assert raw.n_peaks.equals(det.n_peaks) and all(np.array_equal(a, b) for a, b in zip(raw.class_probs, raw.model_probs))
    same = ["detection_id", "tile_box_x_min", "mask_rle", "model_probs"]
    assert raw[same].equals(det[same]) and not raw.morph_class.equals(det.morph_class)

    # worker processes and the host gate change where the work happens, never the rows
    pool = infer_shard(shard, tmp_path / "model.pt", tmp_path / "det2.parquet", batch_size=4, device="cpu", workers=2)
    assert pool["n_detections"] == len(det)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "det2.parquet"), det)
    infer_shard(shard, tmp_path / "model.pt", tmp_path / "det3.parquet", batch_size=4, device="cpu",
                host_min_score=1.1)
    gated = pd.read_parquet(tmp_path / "det3.parquet")
    assert det.host_x.notna().any() and gated.host_x.isna().all() and gated.drop(columns=["host_x", "host_y", "host_score"]).equals(
        det.drop(columns=["host_x", "host_y", "host_score"]))
    # the IR PSF's matched filter changes where hosts are found, nothing else
    infer_shard(shard, tmp_path / "model.pt", tmp_path / "det4.parquet", batch_size=4, device="cpu", host_ir_psf_fwhm=6.1)
    smoothed = pd.read_parquet(tmp_path / "det4.parquet")
    assert smoothed.drop(columns=["host_x", "host_y", "host_score"]).equals(det.drop(columns=["host_x", "host_y", "host_score"]))
    assert smoothed.host_x.notna().any() and not np.allclose(smoothed.host_x, det.host_x, equal_nan=True)


def test_data_loading_workers_give_the_same_batches(survey):
    from skysift.detection.train import CutoutSet, epoch_batches

    cfg = _settings(survey["folder"], survey["ten"], "loader", noise_augment=0.5)
    data = CutoutSet(cfg.train_sets)
    order = np.arange(len(data))[::-1].copy()
    here = list(epoch_batches(data, order, cfg, None, epoch=1, start=1))
    pooled = list(epoch_batches(data, order, replace(cfg, workers=2), None, epoch=1, start=1))
    assert len(here) == len(pooled) == len(data) // cfg.batch_size - 1
    for a, b in zip(here, pooled):
        for (img_a, t_a), (img_b, t_b) in zip(a, b):
            assert torch.equal(img_a, img_b) and all(torch.equal(t_a[k], t_b[k]) for k in t_a)
