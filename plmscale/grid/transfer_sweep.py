"""The transfer sweep's runs (config train.transfer_sweep; docs/transfer.md): one total budget C split between CLM
pre-training and MLM, as Cheng et al. 2024 measured transfer.

For each model, CLM share s of train.transfer_sweep.clm_shares and replicate r:

- `xfer_clm_{model}_c{C}_s{s}`: a CLM run of s·C FLOPs (s > 0 only);
- `xfer_mlm_{model}_c{C}_s{s}`: an MLM run of (1 − s)·C FLOPs started from that CLM run's final weights, through
  the same machinery as train.transfer (init_from); at s = 0 it is the MLM run from scratch with all of C, the
  partner every share is compared with.

Replicate r > 1 appends `_r{r}` to both ids. FLOPs become tokens by train.flops_definition, as grid budgets do.
Every run of one (model, replicate) shares a seed: common random numbers (the same batch order and masks),
so the losses of two shares differ by their split of compute more than by their draws. The `xfer_` prefix is
used by no other run id (grid `clm_`/`mlm_`, `tmlm_`, `rep_`/`mix_`, `ad<k>_`, closed loop). These runs are
trained by the grid's train rule but are not part of the scaling fits: rules/transfer.smk analyses them
(plmscale.scaling.transfer).
"""

from plmscale.errors import PlmscaleError
from plmscale.grid import shapes
from plmscale.grid.expand import GridBuilder, format_number, run_seed
from plmscale import recipe as recipes

PREFIX = "xfer"


def sweep_settings(config: dict) -> dict | None:
    """config train.transfer_sweep when it asks for runs (models listed), else None."""
    sweep = config["train"].get("transfer_sweep") or {}
    return sweep if sweep.get("models") else None


def share_label(share: float) -> str:
    """0 -> "0", 0.1 -> "0.1", 0.25 -> "0.25": shares as written in the config, for run ids."""
    return f"{share:.6g}"


def sweep_run_id(objective: str, model: str, total_flops: float, share: float, replicate: int = 1) -> str:
    base = f"{PREFIX}_{objective}_{model}_c{format_number(total_flops)}_s{share_label(share)}"
    return base if replicate == 1 else f"{base}_r{replicate}"


def _check(sweep: dict, builder: GridBuilder, where: str) -> None:
    key = "train.transfer_sweep"
    unknown = [m for m in sweep["models"] if m not in builder.shapes]
    if unknown:
        raise PlmscaleError(f"{where}: {key}.models {unknown} must name shapes of train.ladder "
                            f"({', '.join(builder.shapes)})")
    if len(set(sweep["models"])) != len(sweep["models"]):
        raise PlmscaleError(f"{where}: {key}.models lists a model twice ({sweep['models']}); list each once")
    if sweep.get("total_flops") is None:
        raise PlmscaleError(f"{where}: {key}.total_flops is not set; give the budget C every share splits "
                            f"(e.g. 5.0e+11), or empty {key}.models to turn the sweep off")
    shares = [float(s) for s in sweep["clm_shares"]]
    if 0.0 not in shares:
        raise PlmscaleError(f"{where}: {key}.clm_shares {sweep['clm_shares']} lacks 0: the MLM run from scratch with "
                            f"all of total_flops is the baseline every share is compared with; add 0")
    if len({share_label(s) for s in shares}) != len(shares):
        raise PlmscaleError(f"{where}: {key}.clm_shares {sweep['clm_shares']} repeats a share; list each once")
    if len(shares) < 2:
        raise PlmscaleError(f"{where}: {key}.clm_shares {sweep['clm_shares']} has no share above 0; add shares "
                            f"of CLM pre-training (e.g. 0.1, 0.2, 0.4)")


def _tokens(builder: GridBuilder, model: str, flops: float) -> int:
    per_token = shapes.flops_per_token(builder.shapes[model], builder.train["seq_len"],
                                       builder.train["flops_definition"])
    return round(flops / per_token)


def _check_trainable(builder: GridBuilder, model: str, objective: str, share: float, tokens: int, where: str):
    n = shapes.n_params(builder.shapes[model])
    batch = recipes.resolve(builder.recipe, builder.train, n, tokens)["batch_tokens"]
    if tokens < batch:
        part = "CLM pre-training" if objective == "clm" else "MLM"
        raise PlmscaleError(
            f"{where}: train.transfer_sweep: at CLM share {share_label(share)}, {model}'s {part} run gets {tokens} "
            f"tokens, less than one batch ({batch} tokens); raise train.transfer_sweep.total_flops or drop the "
            f"share from clm_shares")


def transfer_sweep_plan(config: dict, source: str | None = None) -> list[dict]:
    """One row per MLM run of the sweep: run_id, model, n_params, share, replicate, total_flops, tokens, and its
    CLM source (source_run_id, source_tokens; None at share 0). [] when there is no sweep. The analysis joins
    these rows with the runs' metrics (plmscale.scaling.transfer.sweep_table)."""
    return [row for row, _ in _plan(config, source)]


def transfer_sweep_specs(config: dict, source: str | None = None) -> list:
    """The sweep's RunSpecs, each CLM run before the MLM run that starts from it; [] when there is no sweep."""
    return [spec for _, specs in _plan(config, source) for spec in specs]


def _plan(config: dict, source: str | None):
    sweep = sweep_settings(config)
    if sweep is None:
        return []
    where = f"config {source}" if source else "config"
    builder = GridBuilder(config, source)
    _check(sweep, builder, where)
    total = float(sweep["total_flops"])
    plan = []
    for model in sweep["models"]:
        for replicate in range(1, sweep["replicates"] + 1):
            seed = run_seed(config["seed"], f"{PREFIX}_{model}_c{format_number(total)}_r{replicate}")
            for share in sorted(float(s) for s in sweep["clm_shares"]):
                specs, source_spec = [], None
                if share > 0:
                    clm_tokens = _tokens(builder, model, share * total)
                    _check_trainable(builder, model, "clm", share, clm_tokens, where)
                    source_spec = builder.make(sweep_run_id("clm", model, total, share, replicate), "clm", model,
                                               clm_tokens, seed=seed)
                    specs.append(source_spec)
                mlm_tokens = _tokens(builder, model, (1 - share) * total)
                _check_trainable(builder, model, "mlm", share, mlm_tokens, where)
                mlm = builder.make(sweep_run_id("mlm", model, total, share, replicate), "mlm", model, mlm_tokens,
                                   init_from=None if source_spec is None else source_spec.run_id, seed=seed)
                if sweep.get("eval_every_steps"):  # finer curves: the from-scratch curve is read for ETT
                    mlm.train.eval_every_steps = int(sweep["eval_every_steps"])
                specs.append(mlm)
                plan.append(({"run_id": mlm.run_id, "model": model, "n_params": shapes.n_params(builder.shapes[model]),
                              "share": share, "replicate": replicate, "total_flops": total, "tokens": mlm.tokens,
                              "source_run_id": None if source_spec is None else source_spec.run_id,
                              "source_tokens": None if source_spec is None else source_spec.tokens}, specs))
    return plan

