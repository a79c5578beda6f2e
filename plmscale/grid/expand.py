"""Config -> the list of training runs of a study: IsoFLOP points, explicit points and CLM->MLM transfers.

A run id names the run for ever (results/runs/{run_id}/), so it is built only from what defines the
grid point: objective, ladder label, and the budget (`_c1e19`) or token count (`_d2e9`). A mixed run's
id starts `mixed_` (its objective), unlike the repetition study's full-mixture runs (`mix_clm_...`).
"""

import dataclasses
import hashlib
import math

from plmscale.config import objective_budgets, objective_window
from plmscale.errors import PlmscaleError
from plmscale import recipe as recipes
from plmscale.grid import shapes
from plmscale.grid import wsd as wsd_grid
from plmscale.grid.resources import estimate_resources
from plmscale.grid.spec import MIXED, RunSpec, TrainSettings


def format_number(value: float) -> str:
    """Compact, exact scientific form for ids: 1e19, 3e18, 3.5e11, 2e9; integers below 1000 as is."""
    if value <= 0 or not math.isfinite(value):
        raise ValueError(f"cannot name a run after {value!r}")
    if value < 1000 and float(value).is_integer():
        return str(int(value))
    mantissa, exponent = f"{value:.14e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def run_seed(master_seed: int, run_id: str) -> int:
    """A stable per-run seed: the same id and master seed give the same seed on every machine."""
    digest = hashlib.sha256(f"{master_seed}:{run_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class GridBuilder:
    """Builds the run specs of one config: the grid's runs, and single runs others plan (LR calibration,
    the closed loop's forecast run), all with the same recipe, seeds and resource estimate."""

    def __init__(self, config: dict, source: str | None):
        self.config = config
        self.train = config["train"]
        self.where = f"config {source}" if source else "config"
        self.shapes = {name: shapes.ladder_shape(name, entry, self.where).to_dict()
                       for name, entry in self.train["ladder"].items()}
        self.recipe = recipes.recipe_from_config(self.train, self.where)
        self.recipe_record = recipes.record(self.recipe, recipes.overridden(self.recipe, self.train))

    def add_shape(self, name: str, shape: dict) -> None:
        """A shape that is not on the ladder (e.g. sized to a forecast N_opt), usable by make() as `name`."""
        self.shapes[name] = dict(shape)

    def make(self, run_id, objective, model, tokens, budget=None, init_from=None, lr=None, *, batch_tokens=None,
             seed=None, wsd=None, trained_tokens=None) -> RunSpec:
        """One run spec. A WSD trunk/branch passes its family's batch and seed, its `wsd` record, and the
        tokens it trains itself (a branch's decay only) for the resource estimate."""
        train = self.train
        shape = self.shapes[model]
        resolved = recipes.resolve(self.recipe, train, shapes.n_params(shape), int(tokens))
        if lr is not None:  # an lr sweep sets its own
            resolved["lr"] = float(lr)
        if batch_tokens is not None:  # a WSD family shares one batch: its largest budget's
            resolved["batch_tokens"] = int(batch_tokens)
        spec = RunSpec(
            run_id=run_id, objective=objective, model=model, shape=dict(shape), tokens=int(tokens),
            budget=budget, init_from=init_from, seed=run_seed(self.config["seed"], run_id) if seed is None else seed,
            lr=resolved["lr"], batch_tokens=resolved["batch_tokens"],
            source_weights={s["name"]: s["weight"] for s in self.config["data"]["sources"]},
            train=TrainSettings.from_mapping({**train, **resolved}), recipe=self.recipe_record, wsd=wsd,
            mixed={"mlm_fraction": float(train["mixed"]["mlm_fraction"])} if objective == MIXED else None)
        trained = spec if trained_tokens is None else dataclasses.replace(spec, tokens=int(trained_tokens))
        spec.resources = estimate_resources(trained, train, where=self.where)
        # The resolved strategy only: how many GPUs a node has is the launcher's business, not the run's.
        spec.train.distributed = {"strategy": spec.resources["strategy"]}
        return spec

    def isoflop(self):
        iso = self.train["isoflop"]
        models = iso["models"] if iso["models"] is not None else list(self.shapes)
        models = sorted(models, key=lambda m: shapes.n_params(self.shapes[m]))  # small to large in every budget
        for objective in self.train["objectives"]:
            for budget in objective_budgets(iso, objective):
                points = [(model, round(tokens)) for model, tokens in self._budget_tokens(models, budget)
                          if self._trainable(model, round(tokens), objective)]
                if not points:
                    raise PlmscaleError(self._empty_budget(models, budget, objective))
                run_id_base = f"{objective}_{{}}_c{format_number(budget)}"
                for model, tokens in points:
                    run_id = run_id_base.format(model)
                    # Replicates: the same point again under other seeds (batches, initial weights); the
                    # first keeps the plain id, so one replicate is the grid as it always was.
                    for replicate in range(1, iso["replicates"] + 1):
                        yield self.make(run_id if replicate == 1 else f"{run_id}_r{replicate}", objective, model,
                                        tokens, budget=float(budget))

    def _budget_tokens(self, models, budget):
        """(model, tokens) of every model at this budget: D = C / FLOPs per token (not rounded)."""
        for model in models:
            per_token = shapes.flops_per_token(self.shapes[model], self.train["seq_len"],
                                               self.train["flops_definition"])
            yield model, budget / per_token

    def _trainable(self, model, tokens, objective) -> bool:
        """Inside the objective's tokens-per-parameter window, and at least one optimizer step long."""
        low, high = objective_window(self.train["isoflop"], objective)
        n = shapes.n_params(self.shapes[model])
        if not low <= tokens / n <= high:
            return False
        return tokens >= recipes.resolve(self.recipe, self.train, n, tokens)["batch_tokens"]

    def _empty_budget(self, models, budget, objective) -> str:
        """Why a budget has no run: a budget that trains nothing is a mistake, not a smaller grid."""
        iso = self.train["isoflop"]
        key = f".{objective}" if isinstance(iso["budgets"], dict) else ""
        ratios = {model: tokens / shapes.n_params(self.shapes[model])
                  for model, tokens in self._budget_tokens(models, budget)}
        sizes = [shapes.n_params(self.shapes[m]) for m in models]
        low, high = objective_window(iso, objective)
        window = f"[{low:g}, {high:g}] (train.isoflop.min_tokens_per_param, max_tokens_per_param)"
        in_window = [m for m, r in ratios.items() if low <= r <= high]
        ladder = (f"the models ({models[0]} … {models[-1]}, N = {min(sizes):.3g} … {max(sizes):.3g} non-embedding "
                  f"parameters)")
        why = (f"{', '.join(in_window)} inside the tokens-per-parameter window {window} but shorter than one "
               f"optimizer step (batch) there" if in_window else
               f"D/N of {ladder} runs from {min(ratios.values()):.3g} ({min(ratios, key=ratios.get)}) to "
               f"{max(ratios.values()):.3g} ({max(ratios, key=ratios.get)}), outside the tokens-per-parameter "
               f"window {window}")
        return (f"{self.where}: train.isoflop.budgets{key} {budget:g} has no run: {why}; remove the budget, add ladder "
                f"sizes that fit it, or widen the window")

    def wsd_families(self, points):
        """The WSD grid of these IsoFLOP points: (branches in the points' order, one trunk per objective and
        size). The family's batch, lr and seed are its trunk's; the batch is resolved at its largest budget."""
        fraction = self.train["isoflop"]["decay_fraction"]
        families = {}
        for point in points:
            families.setdefault((point.objective, point.model), []).append(point)
        trunks, branch_of = [], {}
        for (objective, model), members in families.items():
            top = max(members, key=lambda p: p.tokens)
            trunk = wsd_grid.trunk_id(objective, model)
            record = {"trunk": trunk, "decay_fraction": fraction,
                      "branches": {p.run_id: p.tokens for p in members}}
            trunk_spec = self.make(trunk, objective, model, round((1 - fraction) * top.tokens),
                                   batch_tokens=top.batch_tokens, wsd={"role": "trunk", **record})
            trunks.append(trunk_spec)
            for p in members:
                branch_of[p.run_id] = self.make(
                    p.run_id, objective, model, p.tokens, budget=p.budget, batch_tokens=top.batch_tokens,
                    seed=trunk_spec.seed, wsd={"role": "branch", **record},
                    trained_tokens=max(1, round(fraction * p.tokens)))
        return [branch_of[p.run_id] for p in points], trunks

    def explicit(self):
        for entry in self.train["runs"]:
            run_id = f"{entry['objective']}_{entry['model']}_d{format_number(entry['tokens'])}"
            yield self.make(run_id, entry["objective"], entry["model"], round(entry["tokens"]))

    def transfers(self, planned: dict):
        for index, entry in enumerate(self.train["transfer"]):
            source = planned.get(entry["source_run"])
            if source is None or source.objective != "clm":
                clm_runs = sorted(r for r, s in planned.items() if s.objective == "clm")
                shown = ", ".join(clm_runs[:8]) + (" …" if len(clm_runs) > 8 else "")
                what = "is an MLM run" if source is not None else "is not a run of this grid"
                raise PlmscaleError(
                    f"{self.where}: train.transfer[{index}].source_run {entry['source_run']!r} {what}; "
                    f"a transfer starts from a CLM run of the grid (e.g. {shown or 'none planned'})")
            yield self.make(f"tmlm_{source.run_id}", "mlm", source.model, round(entry["tokens"]),
                            init_from=source.run_id)


def expand_grid(config: dict, source: str | None = None, *, trunks: bool = False) -> list[RunSpec]:
    """Every run of the study, in a stable order: IsoFLOP runs, explicit runs, then transfer runs.

    `config` is a validated config (plmscale.config.load_config); `source` names its file in errors.
    With train.isoflop.schedule wsd the IsoFLOP runs are WSD branches (plmscale.grid.wsd); their trunks
    are not grid points and come only with trunks=True, after everything else.
    """
    builder = GridBuilder(config, source)
    isoflop, trunk_specs = list(builder.isoflop()), []
    if config["train"]["isoflop"]["schedule"] == "wsd":
        if config["train"]["isoflop"]["replicates"] > 1:
            raise PlmscaleError(f"{builder.where}: train.isoflop.replicates > 1 needs schedule cosine (a WSD "
                                f"family shares one trunk, so its branches would not be independent replicates)")
        if MIXED in config["train"]["objectives"]:
            raise PlmscaleError(f"{builder.where}: train.objectives names mixed, which needs schedule cosine (a "
                                f"mixed run has its own cosine schedule); set train.isoflop.schedule cosine")
        isoflop, trunk_specs = builder.wsd_families(isoflop)
    if config["train"]["isoflop"]["adaptive"]["enabled"] and MIXED in config["train"]["objectives"]:
        raise PlmscaleError(f"{builder.where}: train.isoflop.adaptive refits clm and mlm only, so train.objectives "
                            f"cannot name mixed with it; list mixed runs under train.runs instead")
    specs = isoflop + list(builder.explicit())
    planned = {}
    for spec in specs:
        if spec.run_id in planned:
            raise PlmscaleError(
                f"{builder.where}: two grid points share the run id {spec.run_id!r}; remove the repeated "
                f"budget or explicit run (an explicit run must differ in objective, model or tokens)")
        planned[spec.run_id] = spec
    for spec in builder.transfers(planned):
        if spec.run_id in planned:
            raise PlmscaleError(
                f"{builder.where}: train.transfer names source run {spec.init_from!r} twice; one transfer "
                f"run per CLM source (its id is {spec.run_id!r})")
        planned[spec.run_id] = spec
        specs.append(spec)
    return specs + trunk_specs if trunks else specs
