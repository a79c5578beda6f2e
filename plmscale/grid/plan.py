"""The grid a config describes, as text for `plmscale plan` (plmscale.cli.plan) — before anything is trained."""

from plmscale import recipe as recipes
from plmscale.grid.expand import expand_grid
from plmscale.grid.repetition import repetition_specs
from plmscale.grid.wsd import describe_cost


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


def planned_specs(config: dict, source=None) -> list:
    """Every run the config trains: the grid (with WSD trunks) and the repetition study's runs, which are
    trained too though not part of the fits."""
    return expand_grid(config, source=source, trunks=True) + repetition_specs(config, source=source)


def describe_plan(config: dict, specs, source=None) -> str:
    """The recipe line, the run table, and for a WSD grid its cost against a cosine grid."""
    recipe = recipes.recipe_from_config(config["train"], f"config {source}" if source else "config")
    lines = [recipes.describe(recipe, config["train"]), format_table(specs)]
    if config["train"]["isoflop"]["schedule"] == "wsd":
        lines.append(describe_cost(specs))
    return "\n".join(lines)
