"""Run the real workflow in a scratch copy: shared by the end-to-end tests."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow_scripts", "envs", "schemas", "profiles", "report", "configs")
# Fields of metrics.json that measure the machine, not the result.
TIMING_FIELDS = {"wall_seconds", "tokens_per_second", "mfu", "achieved_flops_per_second", "versions",
                 "device", "time"}


def workflow_copy(where: Path, config: dict | None = None, extra_parts=()) -> Path:
    """A copy of the workflow (not its results) in `where`, with `config` as its config.yaml."""
    where.mkdir(parents=True, exist_ok=True)
    for name in (*WORKFLOW_PARTS, *extra_parts):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, where / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, where / name)
    if config is not None:
        (where / "config.yaml").write_text(yaml.safe_dump(config))
    return where


def snakemake_env() -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OPENBLAS_NUM_THREADS": "1"}


def run_snakemake(workdir: Path, *args, targets=(), check=True, timeout=900) -> str:
    """Run the real snakemake next to this Python; return its output (stdout + stderr)."""
    result = subprocess.run([str(SNAKEMAKE), "--cores", "2", *args, *targets], cwd=workdir,
                            env=snakemake_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def planned_rules(output: str) -> dict:
    """Rule -> job count from a dry run's "Job stats" table."""
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) != "total"}


def planned_run_ids(output: str) -> set:
    """Run ids of the train/transfer jobs a dry run plans (from their metrics.json outputs)."""
    return set(re.findall(r"output: results/runs/([^/\s]+)/metrics\.json", output))


# A study small enough to run the whole workflow in a test: the demo corpus cut to 14 families, three tiny sizes,
# two budgets. Tests lay their objectives, rounds, fit and export over it (merged).
TINY_STUDY = {
    "seed": 3,
    "data": {
        "demo": {"seed": 11, "n_families": 14, "members_per_family": 6, "n_exact_duplicates": 4,
                 "n_malformed": 4},
        "cluster": {"method": "linclust", "min_seq_id": 0.5, "threads": 2, "mem_mb": 4000},
        "split": {"valid_fraction": 0.2, "test_fraction": 0.1},
        "shards": {"max_tokens_per_shard": 20000},
    },
    "train": {
        "ladder": {
            "n6k": {"layers": 1, "d_model": 16, "heads": 2, "ffn_dim": 48},
            "n12k": {"layers": 2, "d_model": 16, "heads": 2, "ffn_dim": 48},
            "n20k": {"layers": 1, "d_model": 32, "heads": 2, "ffn_dim": 48},
        },
        "isoflop": {"budgets": ["3e9", "1e10"], "min_tokens_per_param": 0.5, "max_tokens_per_param": 400},
        "seq_len": 64, "batch_tokens": 1024, "micro_batch_size": 16, "lr": 0.003,
        "eval_every_steps": 20, "eval_tokens": 4096, "checkpoint_every_steps": 50,
        "device": "cpu", "precision": "fp32", "threads": 1,
    },
}


def merged(base: dict, override: dict) -> dict:
    """`override` laid over `base`, nested mappings merged key by key (as Snakemake merges configs)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def default_config_with(override: dict) -> dict:
    """The repository's config.yaml with `override` laid over it."""
    return merged(yaml.safe_load((REPO / "config.yaml").read_text()), override)


def fixed_demo_config_with(override: dict) -> dict:
    """The demo as a fixed grid (config.yaml, then configs/demo-fixed.yaml) with `override` laid over it: the
    adaptive demo's top-budget runs are decided while it runs, so tests that name them build on this."""
    fixed = yaml.safe_load((REPO / "configs" / "demo-fixed.yaml").read_text())
    return merged(default_config_with(fixed), override)


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def result_numbers(metrics: dict) -> dict:
    """metrics.json without the fields that measure the machine."""
    return {k: v for k, v in metrics.items() if k not in TIMING_FIELDS}
