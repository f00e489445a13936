"""The conda env files (for --software-deployment-method conda) stay in step with pyproject."""

import re
import tomllib

import pytest
import yaml

from conftest import REPO

# Runner-side packages: they run Snakemake itself, not the rules' code.
RUNNER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def _split(spec):
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", spec)
    return m.group(1).lower().replace("_", "-"), m.group(3).replace(" ", "")


def _pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(_split(d) for d in deps)


def _env(name):
    doc = yaml.safe_load((REPO / "envs" / name).read_text())
    out = {}
    for dep in doc["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            n, spec = _split(item)
            if n not in ("python", "pip"):
                out[n] = spec
    return out


@pytest.mark.parametrize("env", ["cpu.yaml", "torch.yaml"])
def test_env_pins_match_pyproject(env):
    project = _pyproject()
    for name, spec in _env(env).items():
        assert name in project, f"envs/{env} lists {name}, which pyproject.toml does not"
        assert spec == project[name], f"envs/{env}: {name}{spec} but pyproject.toml says {name}{project[name]}"


def test_every_runtime_dependency_is_in_an_env():
    listed = set(_env("cpu.yaml")) | set(_env("torch.yaml"))
    missing = set(_pyproject()) - listed - RUNNER_ONLY
    assert not missing, f"pyproject.toml dependencies missing from envs/*.yaml: {sorted(missing)}"


def test_torch_pinned_exactly():
    project = _pyproject()
    assert project["torch"] == "==2.14.1" and project["torchvision"] == "==0.29.1"
