"""The config is validated before any job runs: defaults filled, typos and bad values named."""

import re

import pytest
import yaml

from plmscale.config import load_config, load_config_files
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
            if "an overlay, merged over config.yaml" in path.read_text():  # valid as it is used
                load_config_files([root / "config.yaml", path])
            else:
                load_config(path)


# ---- newcomer mistakes (issue 27): each is refused with the file, the key and what to do -----------------

def test_a_key_written_twice_is_refused_with_its_lines(tmp_path):
    """PyYAML keeps the last of two equal keys: the first ladder entry would silently not exist."""
    path = tmp_path / "study.yaml"
    path.write_text("train:\n  ladder:\n    m1: {layers: 2, d_model: 8, heads: 2}\n"
                    "    m1: {layers: 4, d_model: 8, heads: 2}\n")
    with pytest.raises(PlmscaleError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "'m1' appears twice" in message and "lines 3 and 4" in message
    path.write_text("train:\n  isoflop: {budgets: [1e19], budgets: [1e20]}\n")  # both on one line
    with pytest.raises(PlmscaleError, match="'budgets' appears twice in one mapping \\(lines 2 and 2\\)"):
        load_config(path)


def test_the_same_key_in_different_mappings_is_fine(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("data:\n  split: {valid_fraction: 0.1}\ntrain:\n  isoflop: {budgets: [1e19]}\n"
                    "  ladder:\n    a: {layers: 2, d_model: 8, heads: 2}\n    b: {layers: 2, d_model: 8, heads: 2}\n")
    assert sorted(load_config(path)["train"]["ladder"]) == ["a", "b"]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_budget_that_is_not_finite_names_the_key(tmp_path, value):
    path = tmp_path / "study.yaml"
    path.write_text(f"train:\n  isoflop:\n    budgets: [1e19, {value}]\n")
    with pytest.raises(PlmscaleError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "train.isoflop.budgets" in message and "finite positive" in message


def test_any_setting_that_is_not_finite_names_its_key():
    with pytest.raises(PlmscaleError, match=r"data\.split\.valid_fraction holds nan; settings must be finite"):
        load_config({"data": {"split": {"valid_fraction": float("nan")}}})


@pytest.mark.parametrize("text, kind", [("- data: {}\n- train: {}\n", "list"), ("just words\n", "string")])
def test_a_config_that_is_not_a_mapping_says_so(tmp_path, text, kind):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(PlmscaleError, match=rf"{re.escape(str(path))}: the config file must be a mapping of "
                                            rf"sections \(data, train, fit, ...\), got a {kind}"):
        load_config(path)


def test_plan_refuses_a_list_config_without_traceback(tmp_path, capsys):
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text("- train: {}\n")
    assert main(["plan", "--config", str(path)]) == 2
    assert "must be a mapping of sections" in capsys.readouterr().err


@pytest.mark.slow
def test_the_workflow_refuses_a_repeated_key_and_an_empty_budget(tmp_path):
    """Snakemake reads the config files itself (keeping the last of a repeated key): common.smk reads them
    again to refuse that; an IsoFLOP budget with no run stops the workflow instead of training nothing."""
    from workflow_helpers import run_snakemake, workflow_copy

    workdir = workflow_copy(tmp_path / "wf", extra_parts=("config.yaml",))
    (workdir / "repeated.yaml").write_text("train:\n  isoflop:\n    budgets: [3.125e10]\n    budgets: [1e40]\n")
    output = run_snakemake(workdir, "-n", "--configfile", "config.yaml", "repeated.yaml", check=False)
    assert "the key 'budgets' appears twice in one mapping (lines 3 and 4)" in output and "repeated.yaml" in output
    (workdir / "empty.yaml").write_text("train:\n  isoflop:\n    budgets: [3.125e10, 1e40]\n")
    output = run_snakemake(workdir, "-n", "--configfile", "config.yaml", "empty.yaml", check=False)
    assert "train.isoflop.budgets 1e+40 has no run" in output and "This was a dry-run" not in output
