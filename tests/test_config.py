"""The config is validated before any job runs: defaults filled, typos and bad values named."""

import pytest
import yaml

from plmscale.config import load_config
from plmscale.errors import PlmscaleError


def test_defaults_fill_an_empty_config():
    config = load_config({})
    assert config["data"]["cluster"]["method"] == "linclust"
    assert config["train"]["warmup_fraction"] == 0.025
    assert [s["name"] for s in config["data"]["sources"]] == ["reference", "metagenomic"]


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("data:\n  clusterr:\n    min_seq_id: 0.5\n")
    with pytest.raises(PlmscaleError) as error:
        load_config(path)
    message = str(error.value)
    assert "clusterr" in message and str(path) in message and "schemas/config.schema.yaml" in message


def test_scientific_notation_strings_are_numbers():
    # PyYAML reads 1e19 (no dot, no sign) as a string; budgets are written that way in practice.
    config = load_config(yaml.safe_load("train:\n  isoflop:\n    budgets: [1e19, 3e18]\n"))
    assert config["train"]["isoflop"]["budgets"] == [1e19, 3e18]


@pytest.mark.parametrize("snippet, expected", [
    ({"data": {"cluster": {"min_seq_id": 1.5}}}, "min_seq_id"),
    ({"data": {"sources": [{"name": "a", "url": "x"}, {"name": "a", "url": "y"}]}}, "unique"),
    ({"data": {"split": {"valid_fraction": 0.5, "test_fraction": 0.5}}}, "below 1"),
    ({"data": {"split": {"valid_fraction": 0}}, "train": {"isoflop": {"budgets": [1e12]}}},
     "valid_fraction is 0"),
    ({"train": {"runs": [{"objective": "clm", "model": "nope", "tokens": 1e6}]}}, "not in train.ladder"),
    ({"train": {"objectives": ["gpt"]}}, "objectives"),
])
def test_bad_values_are_rejected_with_their_location(snippet, expected):
    with pytest.raises(PlmscaleError, match=expected):
        load_config(snippet)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(PlmscaleError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_repository_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    configs = [root / "config.yaml", *sorted((root / "configs").glob("*.yaml"))]
    for path in configs:
        text = yaml.safe_load(path.read_text()) or {}
        if "train" in text or "data" in text or "fit" in text:  # import descriptions are not study configs
            load_config(path)
