"""
The workflow on a live SLURM controller, through profiles/slurm (not a mock).

CI starts a one-machine cluster first (.ci/run: ``WITH_DBD=1 FAKE_GPU=1 bash
../shared/tools/start-local-slurm.sh``: slurmctld, slurmd, slurmdbd for sacct, one fake GPU).
The module is skipped only when no controller answers ``scontrol ping``.

One module-scoped local run (profiles/local) and one SLURM run (profiles/slurm, with the site
values overridden for this machine's partition and memory) of the demo survey at a small size
(tests/configs/slurm.yaml); the tests compare their catalogues, read the jobs' records from
sacct, interrupt a run (scancel one job, SIGKILL snakemake) and rerun it, and kill a training
job half-way. Every snakemake runs under ``timeout -s KILL``; every SLURM job a test submitted
is cancelled and every process it started is killed when the module ends.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slurm

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = REPO / "profiles" / "slurm"
TEST_CONFIG = REPO / "tests" / "configs" / "slurm.yaml"
SCHEMA = REPO / "config" / "schema" / "config.schema.yaml"
TILE = "SIM_2154-55"  # tests/configs/slurm-manifest.csv: the first of the demo's held-out tiles
TABLES = ("sources", "components", "cutouts")
GPU_RULES = ("train_quality", "train_detector", "infer_shard")
TRAIN_RULES = ("train_detector", "train_quality")
PER_TILE_CPU_RULES = ("inspect_tile", "shard_tile", "extract_sources", "map_som", "build_stamps",
                      "predict_quality", "merge_tile_catalogue")
RUN_TIMEOUT_S = 900  # one snakemake run; `timeout -s KILL` ends it after this (a loaded 2-core machine: ~10 min)
START_HINT = "start one with: WITH_DBD=1 FAKE_GPU=1 bash ../shared/tools/start-local-slurm.sh"


# --------------------------------------------------------------------------------------------
# SLURM and snakemake plumbing


def sh(*cmd, timeout=60):
    """Run a short command; its CompletedProcess (never raises on a non-zero exit)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def controller_problem():
    """None when a SLURM controller answers, else why not (the module's skip reason)."""
    if not shutil.which("scontrol") or not shutil.which("sbatch"):
        return "no SLURM client commands (scontrol, sbatch) on PATH"
    try:
        ping = sh("scontrol", "ping", timeout=30)
    except subprocess.TimeoutExpired:
        return "`scontrol ping` did not answer in 30 s"
    if "UP" not in ping.stdout:
        return f"no SLURM controller answers `scontrol ping`: {(ping.stdout + ping.stderr).strip()!r}"
    return None


def sacct_works():
    return shutil.which("sacct") is not None and sh("sacct", "-n", "-X", "-S", "now-1hours").returncode == 0


@dataclass
class Run:
    """One snakemake process started by a test."""

    workdir: Path
    log: Path
    proc: subprocess.Popen
    started_ns: int
    returncode: int | None = None
    uuids: list = field(default_factory=list)

    def text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def slurm_uuid(self):
        m = re.search(r"SLURM run ID: (\S+)", self.text())
        return m.group(1) if m else None

    def wait(self):
        self.returncode = self.proc.wait(timeout=RUN_TIMEOUT_S + 60)
        return self.returncode

    def kill(self):
        """SIGKILL the whole process group (timeout, snakemake, its sbatch/sacct children)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)


STARTED: list[Run] = []  # every process this module started, stopped at the end
CONFIG = [TEST_CONFIG]  # the test configuration as passed to snakemake (see known_to_schema)


def known_to_schema(config, schema):
    """
    ``config`` without the keys ``schema`` does not define, and the dropped keys' paths.

    tests/configs/slurm.yaml shrinks every stage's models and trainings; a stage whose settings
    are not in the schema yet (it is being written) is not in the workflow yet either.
    """
    kept, dropped = {}, []
    props = schema.get("properties", {})
    for key, value in config.items():
        if key not in props:
            dropped.append(key)
        elif isinstance(value, dict) and props[key].get("type") == "object" and "properties" in props[key]:
            kept[key], sub = known_to_schema(value, props[key])
            dropped += [f"{key}.{d}" for d in sub]
        else:
            kept[key] = value
    return kept, dropped


def start(workdir, *args, profiles, name, configfiles=()):
    """Start ``snakemake all_emu_tiles`` (or the targets in ``args``) in ``workdir`` under
    ``timeout -s KILL``, in its own process group, logging to ``<workdir>/../<name>.log``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f"{name}.log"
    profile_args = [a for p in profiles for a in ("--profile", str(p))]
    cmd = ["timeout", "-s", "KILL", str(RUN_TIMEOUT_S), SNAKEMAKE, "-s", str(REPO / "Snakefile"),
           "--directory", str(workdir), *profile_args, *args,
           "--configfile", str(CONFIG[0]), *map(str, configfiles)]
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    run = Run(workdir, log, proc, time.time_ns())
    STARTED.append(run)
    return run


def finish(run):
    """Wait for ``run``; assert it succeeded (the end of its log in the message)."""
    rc = run.wait()
    assert rc == 0, f"snakemake exit status {rc} ({run.log}):\n" + run.text()[-6000:]
    return run


def wait_for(predicate, timeout, what, interval=0.5):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def active_jobs(uuid):
    """[(jobid, state, comment)] of the run's jobs still known to squeue as pending/running."""
    out = sh("squeue", "-h", "--name", uuid, "-t", "PENDING,RUNNING,COMPLETING,CONFIGURING", "-o", "%i|%T|%k")
    return [tuple(line.split("|", 2)) for line in out.stdout.splitlines() if line.strip()]


def cancel_run(uuid, timeout=60):
    """scancel every job of a snakemake SLURM run (they share the run ID as job name)."""
    sh("scancel", "--name", uuid)
    wait_for(lambda: not active_jobs(uuid), timeout, f"the jobs of run {uuid} to leave the queue")


@dataclass
class SlurmJob:
    jobid: str
    state: str
    req_tres: str
    submit_line: str

    @property
    def rules(self):
        """Rules of the Snakemake jobs this SLURM job ran (from sbatch's --wrap command)."""
        m = re.search(r"--target-jobs ((?:'[^']*'\s*)+)", self.submit_line)
        return [t.split(":", 1)[0] for t in re.findall(r"'([^']*)'", m.group(1))] if m else []

    @property
    def targets(self):
        m = re.search(r"--target-jobs ((?:'[^']*'\s*)+)", self.submit_line)
        return re.findall(r"'([^']*)'", m.group(1)) if m else []


def run_jobs(uuid):
    """The sacct records (allocations only) of every SLURM job of a snakemake run."""
    sep = "\x1f"
    out = sh("sacct", "-X", "-n", "-P", f"--delimiter={sep}", "-S", "now-6hours", "--name", uuid,
             "-o", "JobID,State,ReqTRES,SubmitLine", timeout=120)
    assert out.returncode == 0, out.stderr
    return [SlurmJob(*line.split(sep, 3)) for line in out.stdout.splitlines() if line.strip()]


def site_profile(folder, uuid_hint=None):
    """
    The site's edits for this one-machine cluster, layered after profiles/slurm (a second
    --profile overrides the keys it names): this machine's default partition, no account,
    memory capped to fit its one node, quick status checks, and the squeue status command when
    there is no accounting database.
    """
    base = yaml.safe_load((PROFILE / "config.yaml").read_text())
    partition = next(p.rstrip("*") for p in sh("sinfo", "-h", "-o", "%P").stdout.split() if p.endswith("*"))
    node_mem = min(int(m.rstrip("+")) for m in sh("sinfo", "-h", "-o", "%m").stdout.split())
    cap = max(1000, min(4000, node_mem // 4))

    def capped(res):
        res = dict(res)
        if "mem_mb" in res:
            res["mem_mb"] = f"min({res['mem_mb']}, {cap})"
        return res

    site = {
        "default-resources": {**capped(base["default-resources"]), "slurm_partition": partition},
        "set-resources": {rule: capped(res) for rule, res in base["set-resources"].items()},
        "slurm-no-account": True,
        "slurm-init-seconds-before-status-checks": 2,
        "latency-wait": 5,
    }
    if not sacct_works():
        site["slurm-status-command"] = "squeue"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return folder


# --------------------------------------------------------------------------------------------
# what the tests compare


def table_digest(path):
    """SHA-256 of a Parquet table's content: column names, types and values, not the file's bytes."""
    table = pq.read_table(path)
    df = table.to_pandas()
    h = hashlib.sha256(str([(f.name, str(f.type)) for f in table.schema]).encode())
    h.update(pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes())
    return h.hexdigest()


def catalogue_digests(workdir):
    return {t: table_digest(Path(workdir) / "results" / "catalogue" / TILE / f"{t}.parquet") for t in TABLES}


def incomplete_outputs(workdir):
    """Outputs Snakemake has marked incomplete (.snakemake/incomplete/<urlsafe base64 of path>)."""
    root = Path(workdir) / ".snakemake" / "incomplete"
    found = set()
    for path in root.rglob("*") if root.exists() else []:
        if path.is_file() and path.name != "migration_underway":
            parts = path.relative_to(root).parts
            encoded = "".join(p.lstrip("@") for p in parts)
            found.add(base64.urlsafe_b64decode(encoded.encode()).decode())
    return found


def result_mtimes(workdir):
    results = Path(workdir) / "results"
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}


def jobs_in_log(text):
    """[(rule, outputs)] of every job a snakemake log says it ran (group members included)."""
    jobs = []
    for m in re.finditer(r"^\s*(?:local)?rule (\w+):\n((?:\s+\w[\w ]*: .*\n)+)", text, re.M):
        out = re.search(r"^\s+output: (.*)$", m.group(2), re.M)
        jobs.append((m.group(1), [o.strip() for o in out.group(1).split(",")] if out else []))
    return jobs


def job_stats(text):
    """Rule -> job count from the first 'Job stats' table of a log."""
    counts = {}
    idx = text.find("Job stats:")
    for line in text[idx:].splitlines()[3:] if idx >= 0 else []:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m or m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def job_state(jobid):
    """sacct's state of a job, without the "by <uid>" of a cancellation."""
    out = sh("sacct", "-X", "-n", "-P", "-j", str(jobid), "-o", "State")
    return out.stdout.strip().split(" ")[0] if out.returncode == 0 and out.stdout.strip() else None


def training_rule():
    """The first training rule (train_detector, then train_quality) the workflow has, or None."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    return next((r for r in TRAIN_RULES if re.search(rf"^rule {r}:", text, re.M)), None)


def checkpoints(workdir):
    """Resumable training checkpoints (checkpoint*.pt, .pth) anywhere under results/."""
    return {p for p in (Path(workdir) / "results").rglob("checkpoint*") if p.suffix in (".pt", ".pth")}


def checkpoint_step(path):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return next((int(state[k]) for k in ("step", "global_step", "epoch") if k in state), None)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    problem = controller_problem()
    if problem:
        pytest.skip(f"{problem}; {START_HINT}")
    folder = site_profile(tmp_path_factory.mktemp("site-profile"))
    config, dropped = known_to_schema(yaml.safe_load(TEST_CONFIG.read_text()), yaml.safe_load(SCHEMA.read_text()))
    CONFIG[0] = folder / "test-config.yaml"
    CONFIG[0].write_text(yaml.safe_dump(config, sort_keys=False))
    if dropped:
        print(f"\n{TEST_CONFIG.name}: keys the schema does not define (yet), left out: {', '.join(dropped)}")
    yield folder
    for run in STARTED:  # stop what this module started: processes, then their SLURM jobs
        if run.proc.poll() is None:
            run.kill()
        for uuid in {run.slurm_uuid(), *run.uuids} - {None}:
            sh("scancel", "--name", uuid)


@pytest.fixture(scope="module")
def reference_runs(cluster, tmp_path_factory):
    """The demo survey run locally and through SLURM, side by side (the SLURM run mostly waits)."""
    slurm = start(tmp_path_factory.mktemp("slurm") / "work", "all_emu_tiles", profiles=[PROFILE, cluster],
                  name="slurm")
    local = start(tmp_path_factory.mktemp("local") / "work", "all_emu_tiles", "--cores", "2",
                  profiles=[REPO / "profiles" / "local"], name="local")
    return finish(local), finish(slurm)


@pytest.fixture(scope="module")
def local_run(reference_runs):
    return reference_runs[0]


@pytest.fixture(scope="module")
def slurm_run(reference_runs):
    return reference_runs[1]


@dataclass
class Interrupted:
    workdir: Path
    run: Run
    victim: tuple
    train_rule: str | None
    checkpoint: Path | None
    checkpoint_step: int | None
    before: dict
    incomplete: set
    finished: set
    unfinished: set
    rerun: Run


@pytest.fixture(scope="module")
def interrupted(cluster, slurm_run, tmp_path_factory):
    """
    A copy of the SLURM run redoes its tile's catalogue with a fresh training
    (-R inspect_tile <training rule>, target: the tile's catalogue tables). Once the training
    job has written a checkpoint it is scancelled; once the tile's tile_prep group job is done,
    snakemake is SIGKILLed; then, as a user would, the run's other jobs are cancelled, the
    folder unlocked, and the same command run again.

    Without a training rule, the job cancelled is the tile's first later job (tile_finish or
    infer_shard). snakemake-executor-plugin-slurm 2.8.0 reads sacct's "CANCELLED by <uid>" as
    still running, so a snakemake whose job was scancelled waits for it for ever (it does
    finish the jobs that do not depend on it): killing it is the user's way out (README
    "Running on a cluster").
    """
    workdir = tmp_path_factory.mktemp("interrupted") / "work"
    shutil.copytree(slurm_run.workdir, workdir, symlinks=True)  # copy2 keeps the mtimes
    shutil.rmtree(workdir / ".snakemake" / "slurm_logs", ignore_errors=True)
    train = training_rule()
    for ckpt in checkpoints(workdir):  # a finished training's checkpoint would end a rerun at once
        ckpt.unlink()
    profiles = [PROFILE, cluster]
    targets = [f"results/catalogue/{TILE}/{t}.parquet" for t in TABLES]
    forced = ["inspect_tile"] + ([train] if train else [])
    run = start(workdir, *targets, "-R", *forced, profiles=profiles, name="interrupted")
    uuid = wait_for(run.slurm_uuid, 120, "the SLURM run ID in the log")
    run.uuids.append(uuid)
    inspect_json = workdir / "results" / "tiles" / TILE / "inspect.json"

    def tile_prep_done():
        return inspect_json.exists() and inspect_json.stat().st_mtime_ns > run.started_ns and not any(
            "tile_prep" in j[2] for j in active_jobs(uuid))

    def running(*markers):
        return next((j for j in active_jobs(uuid) if j[1] == "RUNNING" and any(m in j[2] for m in markers)), None)

    def cancel(job):
        sh("scancel", job[0])
        wait_for(lambda: job_state(job[0]) == "CANCELLED", 60, f"job {job[0]} to be CANCELLED")

    if train:
        def training_checkpointed():
            job = running(f"rule_{train}")
            if job and any(c.stat().st_mtime_ns > run.started_ns for c in checkpoints(workdir)):
                return job
            assert run.proc.poll() is None, "snakemake ended before the training could be killed:\n" + run.text()[-3000:]
            assert f"(Rule: {train})" not in run.text(), (
                f"{train} finished before it could be killed after a checkpoint: make it longer or checkpoint "
                f"sooner in {TEST_CONFIG}")
            return None

        victim = wait_for(training_checkpointed, 600, f"{train} to run and write a checkpoint")
        cancel(victim)  # snakemake does not notice (see above) and goes on with the tile
        wait_for(tile_prep_done, 600, "the tile's tile_prep job to finish")
    else:
        victim = wait_for(lambda: running("tile_finish", "infer_shard"), 600, "a tile_finish or infer_shard job")
        time.sleep(2)  # mid-run
        cancel(victim)
    run.kill()  # SIGKILL: no clean-up; outputs of the jobs it was running stay marked incomplete
    cancel_run(uuid)  # what the user does next: the run's other jobs go too

    ckpt = next(iter(checkpoints(workdir)), None) if train else None
    step = checkpoint_step(ckpt) if ckpt else None
    before = result_mtimes(workdir)
    planned = {o for _, outs in jobs_in_log(run.text()) for o in outs if o.startswith("results/")}
    incomplete = incomplete_outputs(workdir)
    # the interrupted run's jobs: finished (written whole) or not (marked incomplete, or missing:
    # a scancelled job's snakemake removes its outputs on SIGTERM)
    used_temp = set(re.findall(r"Removing temporary output (\S+)\.$", run.text(), re.M))  # done and consumed
    finished = {p for p in planned if p in before and before[p] > run.started_ns and p not in incomplete} | used_temp
    unfinished = planned - finished
    finish(start(workdir, "--unlock", profiles=profiles, name="unlock"))
    rerun = finish(start(workdir, *targets, profiles=profiles, name="rerun"))
    return Interrupted(workdir, run, victim, train, ckpt, step, before, incomplete, finished, unfinished, rerun)


# --------------------------------------------------------------------------------------------
# tests


def test_slurm_catalogue_matches_the_local_run(local_run, slurm_run):
    assert catalogue_digests(slurm_run.workdir) == catalogue_digests(local_run.workdir)
    assert slurm_run.slurm_uuid(), "the run did not go through the slurm executor"
    assert not incomplete_outputs(slurm_run.workdir)


def test_gpu_rules_ask_for_a_gpu_and_cpu_rules_do_not(slurm_run):
    jobs = run_jobs(slurm_run.slurm_uuid())
    assert jobs and all(j.state == "COMPLETED" for j in jobs), [(j.jobid, j.state, j.rules) for j in jobs]
    ran = {r for j in jobs for r in j.rules}
    assert {"inspect_tile", "extract_sources", "merge_tile_catalogue"} <= ran, ran
    gpu_jobs = [j for j in jobs if set(j.rules) & set(GPU_RULES)]
    for j in jobs:
        if j in gpu_jobs:
            assert set(j.rules) <= set(GPU_RULES), f"GPU and CPU rules share SLURM job {j.jobid}: {j.rules}"
            assert re.search(r"--gpus=1(\s|$)", j.submit_line), (j.rules, j.submit_line[:400])
            assert "gres/gpu=1" in j.req_tres, (j.rules, j.req_tres)
        else:
            assert "--gpus" not in j.submit_line and "--gres" not in j.submit_line, (j.rules, j.submit_line[:400])
            assert "gres/gpu" not in j.req_tres, (j.rules, j.req_tres)
    if not gpu_jobs:
        pytest.skip(f"CPU jobs checked; no GPU rule ({', '.join(GPU_RULES)}) in the workflow yet")
    print(f"\nGPU jobs: {sorted(r for j in gpu_jobs for r in j.targets)}")


def test_a_tile_costs_at_most_two_cpu_jobs_and_one_per_shard(slurm_run):
    jobs = run_jobs(slurm_run.slurm_uuid())
    per_tile_cpu = [j for j in jobs if set(j.rules) & set(PER_TILE_CPU_RULES)]
    assert 1 <= len(per_tile_cpu) <= 2, [j.rules for j in per_tile_cpu]
    shard_jobs = [j for j in jobs if "infer_shard" in j.rules]
    for j in shard_jobs:
        assert j.rules == ["infer_shard"], j.rules
    if shard_jobs:
        n_shards = yaml.safe_load(TEST_CONFIG.read_text())["cutouts"]["n_shards"]
        assert len(shard_jobs) == n_shards


def test_scancel_and_sigkill_then_rerun_redoes_only_unfinished_jobs(local_run, interrupted):
    it = interrupted
    assert {f"results/tiles/{TILE}/inspect.json", f"results/components/{TILE}.parquet"} <= it.finished
    assert it.unfinished, "the interrupted run left nothing unfinished"
    redone = jobs_in_log(it.rerun.text())
    redone_rules = {r for r, _ in redone}
    redone_outputs = {o for _, outs in redone for o in outs}
    assert not redone_outputs & it.finished, sorted(redone_outputs & it.finished)
    assert it.unfinished <= redone_outputs, sorted(it.unfinished - redone_outputs)
    assert not redone_rules & {"simulate_survey", "inspect_tile", "shard_tile", "extract_sources"}, redone_rules
    after = result_mtimes(it.workdir)  # (temp() outputs, the cutout shards, are gone once used)
    assert all(after[p] == it.before[p] for p in it.finished if p in it.before and p in after)
    assert catalogue_digests(it.workdir) == catalogue_digests(local_run.workdir)
    assert not incomplete_outputs(it.workdir)
    print(f"\nscancelled job {it.victim[0]} ({it.victim[2]}), SIGKILLed snakemake; the rerun redid "
          f"{sorted(redone_rules - {'all_emu_tiles'})}")


def test_killed_training_resumes_from_its_last_checkpoint(slurm_run, interrupted):
    it = interrupted
    if it.train_rule is None:
        pytest.skip(f"no training rule ({', '.join(TRAIN_RULES)}) in the workflow yet")
    assert it.checkpoint is not None and it.checkpoint_step, "the killed training left no checkpoint"
    redone = {r for r, _ in jobs_in_log(it.rerun.text())}
    assert it.train_rule in redone
    logs = [p for p in (it.workdir / "logs" / it.train_rule).rglob("*.log")]
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    resumed = re.search(r"resum\w*.*?step (\d+)", text, re.I)
    assert resumed, f"no 'resuming' line in {logs}:\n{text[-3000:]}"
    assert int(resumed.group(1)) == it.checkpoint_step, (resumed.group(0), it.checkpoint_step)
    # a resumed training gives the model an uninterrupted one gave (CPU, same seed and data order)
    import torch

    output = next(o for r, outs in jobs_in_log(it.rerun.text()) if r == it.train_rule for o in outs)
    resumed_model = torch.load(it.workdir / output, map_location="cpu", weights_only=True)["model"]
    original_model = torch.load(slurm_run.workdir / output, map_location="cpu", weights_only=True)["model"]
    assert resumed_model.keys() == original_model.keys()
    assert all(torch.equal(resumed_model[k], original_model[k]) for k in original_model)
    print(f"\n{it.train_rule} killed after its checkpoint at step {it.checkpoint_step}; the rerun resumed there")
