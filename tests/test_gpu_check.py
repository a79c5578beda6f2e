"""benchmarks/gpu_check.sh in its CPU dry mode: the same code path as on a GPU, with the device machine's
missing packages (snakemake, jsonschema, ...) made unimportable, writes every section with finite figures."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Not on the GPU machine, or not to be needed by the trainer there.
ABSENT = ("snakemake", "pandas", "matplotlib", "scipy", "jsonschema")

BLOCKER = f"""
import importlib.abc, importlib.machinery, sys
class _Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # Found (torch only probes for some of these), but importing one fails.
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ImportError("gpu_check must not need " + spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, _Absent())
"""


def _finite_numbers(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    return all(_finite_numbers(v) for v in value)


def test_dry_run_writes_every_section_with_finite_figures(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)  # imported at start-up: blocks for the whole run
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}", "PYTHON": sys.executable,
           "OPENBLAS_NUM_THREADS": "1", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["errors"] == {}, report["errors"]
    assert report["environment"]["dry_run"] is True
    assert {"matmul", "packing_equivalence", "smoke", "resume", "throughput", "mfu_target"} <= set(report)
    assert _finite_numbers({k: v for k, v in report.items() if k != "errors"})
    assert report["matmul"]["flops_per_second"] > 0
    for value in report["packing_equivalence"].values():
        assert value["abs_diff"] < 1e-4
    for objective in ("clm", "mlm"):
        smoke = report["smoke"][objective]
        assert smoke["packing"] is True and smoke["finite"] and smoke["steps"] > 0
    assert report["resume"]["identical"] and report["resume"]["same_tokens"]
    rows = report["throughput"]
    assert {(r["packed"], r["compile"]) for r in rows} == {(False, False), (True, False)}
    assert all(r["real_tokens_per_second"] > 0 and 0 < r["useful_mfu"] for r in rows)
    assert report["mfu_target"]["best"] is not None
    assert "useful MFU at" in done.stdout


def test_schema_defaults_without_jsonschema_match_the_validators(tmp_path):
    # The GPU machine has no jsonschema: run specs there take their defaults from a plain walk of the schema.
    script = "import json; from plmscale.config import load_schema, schema_defaults; print(json.dumps({k: " \
             "schema_defaults(k) for k, v in load_schema()['properties'].items() if v.get('type') == 'object'}))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with_validator = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                    check=True).stdout
    without = subprocess.run([sys.executable, "-c", BLOCKER + script], env=env, capture_output=True, text=True,
                             check=True).stdout
    assert json.loads(without) == json.loads(with_validator)
    assert json.loads(without)["train"]["packing"] == "auto"
