"""The grid a config describes, as text for `plmscale plan` (plmscale.cli.plan) — before anything is trained."""

from pathlib import Path

from plmscale import recipe as recipes
from plmscale.data.shards import read_split_pass_tokens
from plmscale.grid.expand import expand_grid
from plmscale.grid.repetition import repetition_specs
from plmscale.grid.resources import gpu_hours
from plmscale.grid.transfer_sweep import transfer_sweep_specs
from plmscale.grid.wsd import describe_cost


def _si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _duration(minutes: int) -> str:
    hours, rest = divmod(int(minutes), 60)
    return f"{hours}h{rest:02d}" if hours else f"{rest}m"


# Above this many passes over its training data a run's loss mixes model size with repetition.
EPOCH_WARNING = 1.0
TRAIN_MANIFEST = Path("data") / "shards" / "train" / "manifest.json"


def train_split_tokens(results) -> int | None:
    """Tokens one pass over the train split feeds a run: its residues plus <cls> and <eos> per sequence,
    from the data stage's manifest under `results`; None before the data stage has written it. A manifest
    that is there but unreadable is an error naming it (it used to read as "not written yet")."""
    path = Path(results) / TRAIN_MANIFEST
    return read_split_pass_tokens(path) if path.exists() else None


def epochs(spec, split_tokens: int | None) -> float | None:
    """How many times a run sees its data: its tokens over the train split's (or, for a repetition-study
    run, over its subset's unique tokens); None when the split's size is not known yet."""
    if spec.subset:
        return spec.tokens / spec.subset["unique_tokens"]
    return spec.tokens / split_tokens if split_tokens else None


def repetition_warning(specs, split_tokens: int | None, results) -> str | None:
    """A warning naming the grid's runs that repeat their data, or why epochs are unknown; None if none."""
    if split_tokens is None:
        return (f"epochs: unknown until the data stage has written {Path(results) / TRAIN_MANIFEST} "
                f"(run `snakemake --cores N {Path(results) / TRAIN_MANIFEST}`, then plan again)")
    # The repetition study's runs repeat their subset on purpose (train.repetition).
    repeated = [s for s in specs if not s.subset and epochs(s, split_tokens) > EPOCH_WARNING]
    if not repeated:
        return None
    shown = ", ".join(f"{s.run_id} ({epochs(s, split_tokens):.2g})" for s in repeated)
    return (f"warning: {len(repeated)} run(s) see their data more than {EPOCH_WARNING:g} time(s) (epochs of the "
            f"train split's {split_tokens:,} tokens): {shown}. Their losses mix model size with repetition; "
            f"add data (data.sources) or lower the budgets (train.isoflop.budgets)")


def format_table(specs, split_tokens: int | None = None) -> str:
    header = ("run_id", "obj", "model", "N", "D", "C", "D/N", "epochs", "lr", "batch", "gpus", "nodes",
              "strategy", "runtime")
    rows = []
    for s in specs:
        passes = epochs(s, split_tokens)
        r = s.resources
        runtime = _duration(r["runtime_min"]) + ("!" if r.get("over_max_runtime") else "")
        rows.append((s.run_id, s.objective, s.model, _si(s.n_params), _si(s.tokens), f"{s.flops:.3g}",
                     f"{s.tokens / s.n_params:.1f}", "?" if passes is None else f"{passes:.2g}", f"{s.lr:.3g}", _si(s.batch_tokens), str(r["gpus"]), str(r["nodes"]), r["strategy"], runtime))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    requested = sum(gpu_hours(s.resources) for s in specs)
    points = [s for s in specs if s.wsd_role != "trunk"]  # a WSD trunk is paid for, but is no grid point
    trunks = len(specs) - len(points)
    lines.append(f"{len(points)} runs" + (f" + {trunks} WSD trunks" if trunks else "") +
                 f", {sum(s.flops for s in points):.3g} FLOPs (budget definition), "
                 f"~{requested:,.0f} GPU-hours requested" + (
                     "; ! = estimated runtime over train.resources.max_runtime_min even at the GPU limit"
                     if any(s.resources.get("over_max_runtime") for s in specs) else ""))
    return "\n".join(lines)


def planned_specs(config: dict, source=None) -> list:
    """Every run the config trains: the grid (with WSD trunks), and the repetition study's and transfer sweep's
    runs, which are trained too though not part of the fits."""
    return (expand_grid(config, source=source, trunks=True) + repetition_specs(config, source=source)
            + transfer_sweep_specs(config, source=source))


def describe_plan(config: dict, specs, source=None, results="results") -> str:
    """The recipe line, the run table (with each run's epochs over the train split when the data stage has
    run under `results`), a warning for runs that repeat their data, and for a WSD grid its cost."""
    recipe = recipes.recipe_from_config(config["train"], f"config {source}" if source else "config")
    split_tokens = train_split_tokens(results)
    lines = [recipes.describe(recipe, config["train"]), format_table(specs, split_tokens)]
    if config["train"]["isoflop"]["schedule"] == "wsd":
        lines.append(describe_cost(specs))
    adaptive = config["train"]["isoflop"]["adaptive"]
    if adaptive["enabled"]:
        limit = "" if adaptive["study_flops"] is None else f", up to {adaptive['study_flops']:.3g} IsoFLOP FLOPs in all"
        lines.append(f"adaptive rounds on: the IsoFLOP runs above are the first round; up to {adaptive['max_rounds']} "
                     f"more are decided from the fit as the study runs{limit} (docs/design.md; `plmscale status` "
                     "lists them once decided)")
    warning = repetition_warning(specs, split_tokens, results)
    if warning:
        lines.append(warning)
    return "\n".join(lines)
