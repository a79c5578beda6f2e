"""The curve importer on a small fixture in the released format (folders + `Wall time,Step,Value` CSVs)."""

import math

import pytest
import yaml

from plmscale.cli import main as cli_main
from plmscale.errors import PlmscaleError
from plmscale.scaling.importer import import_curves, load_import_config, read_scalar_csv

TAIL = "-tag-lm-loss-validation_valid_lm loss validation vs gigaflos (without embeddings).csv"
SIZES = {"10M": 10_000_000, "13M": 13_000_000, "50M": 50_000_000, "100M": 100_000_000}


def write_curve(path, flops_end, loss_end, points=5, loss_start=3.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["Wall time,Step,Value"]
    for i in range(1, points + 1):
        step = flops_end / 1e9 * i / points  # Step in gigaFLOPs
        loss = loss_start + (loss_end - loss_start) * i / points
        lines.append(f"{1700000000 + i}.5,{step:.0f},{loss}")
    path.write_text("\n".join(lines) + "\n")


def import_config(tmp_path):
    config = {
        "format": {"header": ["Wall time", "Step", "Value"], "flops_column": "Step", "loss_column": "Value",
                   "flops_unit": 1.0e9, "flops_per_param_token": 6},
        "run_name_regex": "^(?:dep-)?run-(?P<name>.+?)-tag-",
        "final_loss": "last",
        "size_map": SIZES,
        "budget_regex": r"(?<![0-9.])(?P<budget>[0-9]+(?:\.[0-9]+)?e[0-9]+)flops",
        "isoflop_budgets": ["1e18", "1e19"],
        "min_budget_fraction": 0.95,
        "exclude_name_regex": ["ur50"],
        "groups": [
            {"glob": "logs/gpt_valid/*/*.csv", "objective": "clm", "size_from": "folder",
             "size_regex": "^(?P<label>[0-9.]+[MB])(?:_flops)?$"},
            {"glob": "logs/mlm_valid/*/*.csv", "objective": "mlm", "size_from": "folder",
             "size_regex": "^(?P<label>[0-9.]+[MB])(?:_flops)?$"},
        ],
        "transfer": {
            "tokens_globs": ["logs/transfer/tokens/*.csv"],
            "label_aliases": {},
            "groups": [
                {"glob": "logs/transfer/ft/*.csv", "objective": "mlm", "kind": "transfer", "source_objective": "clm",
                 "name_regex": r"^mlm(?P<budget>[0-9.]+e[0-9]+)_transfer_from_gpt(?P<source_flops>[0-9.]+e[0-9]+)_(?P<label>[0-9.]+[MB])"},
                {"glob": "logs/transfer/scratch/*.csv", "objective": "mlm", "kind": "scratch",
                 "name_regex": r"^mlm_(?P<label>[0-9.]+[MB])_1024l_(?P<budget>[0-9.]+e[0-9]+)flops"},
            ],
        },
    }
    path = tmp_path / "import.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def released(tmp_path):
    root = tmp_path / "data"
    gpt = root / "logs" / "gpt_valid"
    # The run name says 10M, the folder 13M: the folder wins.
    write_curve(gpt / "13M_flops" / f"run-gpt_10M_1024l_1e18flops_all0.1ep{TAIL}", 1.0e18, 2.70)
    write_curve(gpt / "50M_flops" / f"run-gpt_50M_1024l_1e18flops_all0.02ep{TAIL}", 1.0e18, 2.65)
    # an identical twin export (other wall times) is dropped
    write_curve(gpt / "50M_flops" / f"run-tensorboard_gpt_50M_1024l_1e18flops_all0.02ep{TAIL}", 1.0e18, 2.65)
    write_curve(gpt / "100M_flops" / f"run-gpt_100M_1024l_1e18flops_all0.01ep{TAIL}", 1.0e18, 2.68)
    write_curve(gpt / "100M_flops" / f"run-gpt_100M_1024l_1e19flops_all0.1ep{TAIL}", 1.0e19, 2.50)
    write_curve(gpt / "100M_flops" / f"run-gpt_100M_1024l_6e18flops_all0.06ep{TAIL}", 6.0e18, 2.55)  # off grid
    write_curve(gpt / "100M_flops" / f"run-gpt_100M_all1ep{TAIL}", 3.0e19, 2.40)  # long run
    write_curve(gpt / "100M_flops" / f"run-gpt_100M_ur50_all1ep{TAIL}", 3.0e19, 2.30)  # ablation: excluded
    write_curve(gpt / "50M_flops" / f"run-gpt_50M_1024l_1e19flops_all0.2ep{TAIL}", 0.8e19, 2.52)  # stopped early
    write_curve(gpt / "77M_flops" / f"run-gpt_77M_all1ep{TAIL}", 3.0e19, 2.45)  # size not in the map: skipped
    mlm = root / "logs" / "mlm_valid"
    write_curve(mlm / "13M_flops" / f"run-mlm_10M_1024l_1e19flops_all1ep{TAIL}", 1.0e19, 2.40, loss_start=2.9)
    write_curve(mlm / "50M_flops" / f"run-mlm_50M_1024l_1e19flops_all0.2ep{TAIL}", 1.0e19, 2.30, loss_start=2.8)
    # transfer: CLM->MLM fine-tune of the "10M" (really 13M) model and its scratch twin
    transfer = root / "logs" / "transfer"
    write_curve(transfer / "ft" / f"run-mlm1e19_transfer_from_gpt1e18_10M{TAIL}", 1.0e19, 2.35, loss_start=2.6)
    write_curve(transfer / "scratch" / f"run-mlm_10M_1024l_1e19flops_all1ep{TAIL}", 1.0e19, 2.40, loss_start=2.9)
    # loss-vs-tokens companion of the fine-tune: same losses, tokens = C / (6 * 13M)
    tokens = transfer / "tokens" / "13M_1e19_clm_pretrain.csv"
    tokens.parent.mkdir(parents=True, exist_ok=True)
    rows = ["Wall time,Step,Value"] + [f"1.0,{1.0e19 * i / 5 / (6 * 13_000_000):.0f},{2.6 + (2.35 - 2.6) * i / 5}"
                                       for i in range(1, 6)]
    tokens.write_text("\n".join(rows) + "\n")
    return root


def test_import_reads_sizes_budgets_and_kinds(released, tmp_path):
    runs, curves = import_curves(released, load_import_config(import_config(tmp_path)))
    clm = runs[runs.objective == "clm"].set_index("name")
    assert len(clm) == 7  # twin, ur50 and unknown-size runs left out
    assert clm.loc["gpt_10M_1024l_1e18flops_all0.1ep", "n_params"] == 13_000_000  # folder wins
    assert clm.loc["gpt_10M_1024l_1e18flops_all0.1ep", "label"] == "13M"
    assert clm.loc["gpt_100M_1024l_1e19flops_all0.1ep", "design"] == "isoflop"
    assert clm.loc["gpt_100M_1024l_1e19flops_all0.1ep", "budget"] == 1e19
    assert clm.loc["gpt_100M_1024l_6e18flops_all0.06ep", "design"] == "off_grid"
    assert clm.loc["gpt_100M_all1ep", "design"] == "long"
    assert clm.loc["gpt_50M_1024l_1e19flops_all0.2ep", "design"] == "incomplete"
    assert math.isnan(clm.loc["gpt_50M_1024l_1e19flops_all0.2ep", "budget"])  # out of the IsoFLOP profiles
    row = clm.loc["gpt_100M_1024l_1e19flops_all0.1ep"]
    assert row["flops"] == pytest.approx(1e19)
    assert row["tokens"] == pytest.approx(1e19 / (6 * 100_000_000))
    assert row["loss"] == pytest.approx(2.50)  # last point
    assert set(runs["source"]) == {"imported"}
    for column in ("run_id", "objective", "n_params", "tokens", "flops", "loss", "budget", "source", "init_from"):
        assert column in runs.columns
    assert runs["run_id"].is_unique
    # curves keep every point
    one = curves[curves.run_id == row["run_id"]]
    assert len(one) == 5 and one["flops"].max() == pytest.approx(1e19)
    report = runs.attrs["import_report"]
    assert len(report["duplicates"]) == 1 and len(report["unknown_size"]) == 1


def test_transfer_pairs_and_sizes_from_tokens(released, tmp_path):
    runs, _ = import_curves(released, load_import_config(import_config(tmp_path)))
    transfer = runs[runs.kind == "transfer"].iloc[0]
    assert transfer["objective"] == "mlm"
    assert transfer["n_params"] == 13_000_000  # from the tokens companion, not the "10M" label
    assert transfer["init_from"].startswith("clm@")
    # the scratch export duplicates the main MLM run: that run is the partner, no twin row
    partner = runs[(runs.pair == transfer["pair"]) & (runs.kind != "transfer")]
    assert len(partner) == 1 and partner.iloc[0]["name"] == "mlm_10M_1024l_1e19flops_all1ep"
    assert not (runs.kind == "scratch").any()


def test_final_loss_min(released, tmp_path):
    config = load_import_config(import_config(tmp_path))
    config["final_loss"] = "min"
    runs, _ = import_curves(released, config)
    assert (runs["loss"] > 0).all()


@pytest.mark.parametrize("body, where", [
    ("Wall time,Step,Value\n1.0,100,2.5\n2.0,abc,2.4\n", ":3:"),
    ("Wall time,Step,Value\n1.0,100,2.5\n2.0,200\n", ":3:"),
    ("Wall,Step,Loss\n1.0,100,2.5\n", ":1:"),
    ("Wall time,Step,Value\n1.0,100,nan\n", ":2:"),
    ("", "empty"),
])
def test_malformed_file_names_file_and_line(tmp_path, body, where):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(PlmscaleError) as error:
        read_scalar_csv(path, "Step", "Value", ["Wall time", "Step", "Value"])
    assert str(path) in str(error.value) and where in str(error.value)


def test_malformed_file_in_tree_is_an_error(released, tmp_path):
    bad = released / "logs" / "gpt_valid" / "50M_flops" / f"run-gpt_50M_1024l_1e19flops_all0.1ep{TAIL}"
    bad.write_text("Wall time,Step,Value\n1.0,100,2.5\n2.0,200,oops\n")
    with pytest.raises(PlmscaleError, match=r"50M_flops.*:3:"):
        import_curves(released, load_import_config(import_config(tmp_path)))


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(PlmscaleError, match="does not exist"):
        import_curves(tmp_path / "nope", load_import_config(import_config(tmp_path)))
    with pytest.raises(PlmscaleError, match="does not exist"):
        load_import_config(tmp_path / "missing.yaml")


def test_cli_writes_tables(released, tmp_path, capsys):
    out, curves = tmp_path / "out" / "runs.csv", tmp_path / "out" / "curves.csv"
    code = cli_main(["import-curves", str(released), "--config", str(import_config(tmp_path)),
                     "--out", str(out), "--curves-out", str(curves)])
    assert code == 0 and out.exists() and curves.exists()
    assert "wrote" in capsys.readouterr().out
