"""From a finished study to the next run: a config overlay that trains the forecast compute-optimal model at
a budget C with the workflow (`plmscale predict --flops C --emit-config OUT.yaml`).

The run is planned as the closed loop plans its run (scaling/closed_loop.py): N_opt(C) from the first
identified method of fit.closed_loop.methods, a shape of the ladder's family sized to it
(grid.shapes.ladder_like_shape; at the depth of fit.closed_loop.layers where that lists one), D = C / FLOPs per token, and a run spec made by the grid builder (recipe
lr and batch, seed, resources). The overlay adds that shape to train.ladder and the run to train.runs;
`snakemake --configfile config.yaml OUT.yaml` then trains it and nothing else new.
"""

import tempfile
from pathlib import Path

import yaml

from plmscale.config import load_config_files
from plmscale.data.atomic import write_text
from plmscale.errors import PlmscaleError
from plmscale.grid import shapes
from plmscale.grid.expand import GridBuilder, expand_grid, format_number
from plmscale.scaling.closed_loop import method_forecast
from plmscale.scaling.fitfile import parse_fit, read_fit


def forecast_optimum(fit, objective: str, flops: float, methods) -> dict:
    """{"method", "n_opt", "n_opt_ci", "loss", "loss_ci"} of the first identified method in `methods` with a
    finite N_opt at C = flops; a PlmscaleError naming every method's reason when there is none."""
    fit = parse_fit(fit)
    if objective not in fit.objectives:
        raise PlmscaleError(f"{fit.source} has no {objective} fit: no forecast optimum to train")
    why = []
    for method in methods:
        forecast = method_forecast(fit, objective, method, flops)
        if forecast["identified"] and forecast["n_opt"] and forecast["n_opt"] > 0:
            return {"method": method, **{key: forecast[key] for key in ("n_opt", "n_opt_ci", "loss", "loss_ci")}}
        why.append(f"{method}: {'; '.join(forecast['reasons']) or 'no finite N_opt'}")
    raise PlmscaleError(f"no identified method among {list(methods)} (fit.closed_loop.methods) forecasts N_opt at "
                        f"C = {flops:.3g} in {fit.source} ({' | '.join(why)}); nothing to emit")


def _model_name(base: str, ladder: dict) -> str:
    name, index = f"{base}-like", 2
    while name in ladder:
        name, index = f"{base}-like{index}", index + 1
    return name


def next_run(config: dict, fit, objective: str, flops: float, source: str | None = None) -> dict:
    """The forecast optimum at C as one run of the workflow: {"overlay" (the config mapping to merge over
    `config`), "run_id", "model", "shape", "n_params", "tokens", "lr", "batch_tokens", "resources",
    "forecast" (forecast_optimum's), "nearest_ladder_entry"}."""
    if not (flops > 0):
        raise PlmscaleError(f"--flops must be a positive budget to emit a run for, got {flops!r}")
    train = config["train"]
    forecast = forecast_optimum(fit, objective, flops, config["fit"]["closed_loop"]["methods"])
    ladder = train["ladder"]
    if not ladder:
        raise PlmscaleError(f"config {source}: train.ladder is empty; the next run's shape is made from the ladder")
    # One depth listed in fit.closed_loop.layers sets the depth, as it does for the closed loop's run (on the
    # demo the ladder's 2 layers fell short of the frontier at 3x and 3 layers met it); otherwise, or for a
    # depth search, the ladder's rule: the depth of the nearest entry.
    depths = config["fit"]["closed_loop"].get("layers") or []
    layers = depths[0] if len(depths) == 1 else None
    nearest = shapes.nearest_ladder_entry(forecast["n_opt"], ladder)
    shape = shapes.normalise_shape(shapes.ladder_like_shape(forecast["n_opt"], ladder, layers=layers))
    tokens = round(flops / shapes.flops_per_token(shape, train["seq_len"], train["flops_definition"]))
    model = _model_name(nearest + (f"-L{layers}" if layers else ""), ladder)
    run_id = f"{objective}_{model}_d{format_number(tokens)}"
    builder = GridBuilder(config, source)
    builder.add_shape(model, shape)
    spec = builder.make(run_id, objective, model, tokens)
    if tokens < spec.batch_tokens:
        raise PlmscaleError(f"the forecast N_opt {forecast['n_opt']:.3g} leaves {tokens} tokens at C = {flops:.3g}, "
                            f"less than one batch ({spec.batch_tokens}): nothing to train")
    # The ladder feeds the IsoFLOP grid when train.isoflop.models is null: the overlay names the grid's
    # models so that the new shape trains this one run only, not a point at every budget.
    grid_models = train["isoflop"]["models"] if train["isoflop"]["models"] is not None else list(ladder)
    overlay = {"train": {"ladder": {model: shape}, "isoflop": {"models": list(grid_models)},
                         # Lists are replaced when configs merge: the config's own runs come along.
                         "runs": [dict(r) for r in train["runs"]] +
                                 [{"objective": objective, "model": model, "tokens": int(tokens)}]}}
    return {"overlay": overlay, "run_id": run_id, "model": model, "shape": shape, "layers_from_config": layers,
            "n_params": spec.n_params,
            "tokens": int(tokens), "lr": spec.lr, "batch_tokens": spec.batch_tokens, "resources": spec.resources,
            "forecast": forecast, "nearest_ladder_entry": nearest, "flops": float(flops), "objective": objective}


def overlay_text(plan: dict, config_source: str | None, fit_source: str) -> str:
    """The overlay as YAML with a header that says what it trains and why."""
    f = plan["forecast"]
    ci = f" [{f['n_opt_ci'][0]:.3g}, {f['n_opt_ci'][1]:.3g}]" if f["n_opt_ci"] else ""
    loss = f", forecast loss {f['loss']:.4g}" if f["loss"] is not None else ""
    r = plan["resources"]
    header = [
        f"# The forecast compute-optimal {plan['objective'].upper()} run at C = {plan['flops']:.3g} FLOPs "
        "(plmscale predict --emit-config).",
        f"# From {fit_source}: the {f['method']} law's N_opt {f['n_opt']:.3g}{ci}{loss}.",
        f"# Trains {plan['run_id']}: {plan['model']} {plan['shape']} ({plan['n_params']:,} non-embedding parameters, "
        f"nearest ladder entry {plan['nearest_ladder_entry']}" +
        (f"; {plan['layers_from_config']} layers from fit.closed_loop.layers" if plan["layers_from_config"] else "") +
        f") on {plan['tokens']:,} tokens,",
        f"# recipe lr {plan['lr']:.4g}, batch {plan['batch_tokens']:,} tokens; planned resources: " +
        (f"{r['cpus']} CPU thread(s)" if r["device"] == "cpu" else
         f"{r['gpus']} GPU(s) on {r['nodes']} node(s), {r['strategy']}") + f", ~{r['runtime_min']} min.",
        f"# Use: snakemake --configfile {config_source or 'config.yaml'} THIS_FILE (merged over the config: it adds "
        "the shape and the run, and keeps the IsoFLOP grid's models as they are)",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(plan["overlay"], sort_keys=False)


def emit_next_run_config(fit_path, flops: float, objective: str, config_paths, out_path) -> str:
    """Write the overlay for the forecast optimum at C to out_path; returns a line saying what it trains.
    The overlay is checked before it is written: merged over the config it expands to exactly one new run."""
    config_paths = [config_paths] if isinstance(config_paths, (str, Path)) else list(config_paths)
    config, source = load_config_files(config_paths)
    plan = next_run(config, read_fit(fit_path), objective, flops, source)
    files = " ".join(str(p) for p in config_paths)
    text = overlay_text(plan, files, str(fit_path))
    with tempfile.TemporaryDirectory() as scratch:
        overlay_path = Path(scratch) / "overlay.yaml"
        overlay_path.write_text(text)
        merged, _ = load_config_files([*config_paths, overlay_path])
    added = {s.run_id for s in expand_grid(merged)} - {s.run_id for s in expand_grid(config, source)}
    if added != {plan["run_id"]}:
        raise PlmscaleError(f"the overlay for {plan['run_id']} would add {sorted(added)} to the grid of {source}; "
                            "not written (report this: the overlay should add exactly one run)")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with write_text(out_path) as handle:
        handle.write(text)
    return (f"wrote {out_path}: {plan['run_id']} ({plan['n_params']:,} parameters, {plan['tokens']:,} tokens) at "
            f"C = {flops:.3g}; train it with snakemake --configfile {files} {out_path}")

