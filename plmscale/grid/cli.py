"""`plmscale plan`: the grid a config describes, as a table (or JSON) — before anything is trained."""

import json
import sys

from plmscale.config import load_config
from plmscale.grid import recipe as recipes
from plmscale.grid.expand import expand_grid
from plmscale.grid.repetition import repetition_specs
from plmscale.grid.wsd import describe_cost


def configure_parser(parser) -> None:
    parser.add_argument("--config", nargs="+", default=["config.yaml"],
                        help="config file (default: config.yaml); several are merged left to right, as "
                             "snakemake --configfile merges them (e.g. config.yaml configs/demo-wsd.yaml)")
    parser.add_argument("--json", action="store_true", help="print every run spec as JSON instead")


def _si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _duration(minutes: int) -> str:
    hours, rest = divmod(int(minutes), 60)
    return f"{hours}h{rest:02d}" if hours else f"{rest}m"


def format_table(specs) -> str:
    header = ("run_id", "obj", "model", "N", "D", "C", "D/N", "lr", "batch", "gpus", "nodes", "strategy",
              "runtime")
    rows = []
    for s in specs:
        r = s.resources
        runtime = _duration(r["runtime_min"]) + ("!" if r.get("over_max_runtime") else "")
        rows.append((s.run_id, s.objective, s.model, _si(s.n_params), _si(s.tokens), f"{s.flops:.3g}",
                     f"{s.tokens / s.n_params:.1f}", f"{s.lr:.3g}", _si(s.batch_tokens), str(r["gpus"]), str(r["nodes"]), r["strategy"], runtime))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    gpu_hours = sum(s.resources["gpus"] * s.resources["runtime_min"] / 60 for s in specs)
    points = [s for s in specs if s.wsd_role != "trunk"]  # a WSD trunk is paid for, but is no grid point
    trunks = len(specs) - len(points)
    lines.append(f"{len(points)} runs" + (f" + {trunks} WSD trunks" if trunks else "") +
                 f", {sum(s.flops for s in points):.3g} FLOPs (budget definition), "
                 f"~{gpu_hours:,.0f} GPU-hours requested" + (
                     "; ! = estimated runtime over train.resources.max_runtime_min even at the GPU limit"
                     if any(s.resources.get("over_max_runtime") for s in specs) else ""))
    return "\n".join(lines)


def merged_config(paths) -> tuple[dict, str]:
    """One config from one or more YAML files, nested mappings merged key by key (lists replaced)."""
    from plmscale.config import read_yaml

    def merge(base, over):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out

    paths = [paths] if isinstance(paths, str) else list(paths)
    config = {}
    for path in paths:
        config = merge(config, read_yaml(path) or {})
    source = " + ".join(map(str, paths))
    return load_config(config, source=source), source


def main(args) -> int:
    config, source = merged_config(args.config)
    specs = expand_grid(config, source=source, trunks=True)
    specs += repetition_specs(config, source=source)  # trained too, though not part of the fits
    if args.json:
        json.dump([s.to_dict() for s in specs], sys.stdout, indent=1)
        print()
    else:
        print(recipes.describe(recipes.recipe_from_config(config["train"], str(args.config)), config["train"]))
        print(format_table(specs))
        if config["train"]["isoflop"]["schedule"] == "wsd":
            print(describe_cost(specs))
    return 0
