"""The shipped configurations validate against the schema, and the schema fills defaults."""

import copy

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO

SCHEMA = str(REPO / "config" / "schema" / "config.schema.yaml")


def _load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


def _merged(*names):
    from snakemake.utils import update_config

    config = {}
    for n in names:
        update_config(config, _load(n))
    return config


@pytest.mark.parametrize("names", [("config.yaml",), ("config.yaml", "emu.yaml")])
def test_shipped_configs_validate(names):
    validate(_merged(*names), SCHEMA, set_default=True)


def test_defaults_are_filled():
    config = {}
    validate(config, SCHEMA, set_default=True)
    assert config["cutouts"] == {"size": 256, "overlap": 64, "n_shards": 2, "compression": "none"}
    assert config["extract"]["thresh_sigma"] == 5.0 and config["extract"]["filter_kernel"] == "none"
    assert config["tiles"]["manifest"] == "config/manifest.csv"


@pytest.mark.parametrize("bad", [{"extract": {"thresh": 5}}, {"cutouts": {"size": "big"}}, {"tilez": {}}])
def test_wrong_key_or_type_is_rejected(bad):
    from snakemake.utils import update_config

    config = copy.deepcopy(_load("config.yaml"))
    update_config(config, bad)
    with pytest.raises(Exception, match="thresh|big|tilez"):
        validate(config, SCHEMA, set_default=True)
