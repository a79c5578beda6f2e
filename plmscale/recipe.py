"""Training recipes: how a run of N parameters and D tokens is trained, as one named, versioned object.

A recipe gives the peak learning rate as a function of N, the batch (in tokens) as a function of the run's
token budget, the warm-up fraction, the schedule and Adam's β2. It is chosen by `train.recipe`; the
config's explicit train.lr, batch_tokens (batch_tokens_large), warmup_fraction, min_lr_ratio and beta2 still
override it, and the overrides are recorded with it. Every run spec carries the recipe's record (name,
version, constants, sha256), so provenance.json and metrics.json say which recipe made a result.

- cheng2024: the paper's recipe (Cheng et al. 2024): peak lr 6e-4 (≤ 50M) … 3e-4 (≥ 1B), linear in
  log N between anchors; 0.5M-token batches, 1M from 1B parameters; 2.5% warm-up, cosine to lr/10; β2 0.95.
- small-scale: for studies of tiny models (the demo): lr = lr_ref·(N/n_ref)^lr_exponent (μP-style width
  scaling), and the batch shrinks with the budget so that a run gets at least min_steps optimizer steps:
  the largest power of two ≤ D/min_steps, clamped to [min_batch_tokens, max_batch_tokens]. Constants in
  train.small_scale. Warm-up 5%, cosine to 0, β2 0.95.

Bump a recipe's VERSION when its formulas change: the hash then separates results made before and after.
"""

import dataclasses
import math

from plmscale.arithmetic import peak_lr_cheng2024, peak_lr_power_law
from plmscale.errors import PlmscaleError
from plmscale.provenance import config_hash

# The settings a recipe decides; each is also a train.* key that overrides the recipe when not null.
# lr and batch_tokens depend on the run; the fixed ones are filled into a config when it loads.
FIXED_KEYS = ("warmup_fraction", "min_lr_ratio", "beta2")
RECIPE_KEYS = ("lr", "batch_tokens", *FIXED_KEYS)


@dataclasses.dataclass(frozen=True)
class Cheng2024:
    name = "cheng2024"
    version = 1
    schedule = "cosine"
    warmup_fraction = 0.025
    min_lr_ratio = 0.1
    beta2 = 0.95
    batch_tokens_small = 524288
    batch_tokens_large = 1048576
    large_model_params = 1e9

    def peak_lr(self, n_params: float) -> float:
        return peak_lr_cheng2024(n_params)

    def batch_tokens(self, n_params: float, tokens: float) -> int:
        return self.batch_tokens_large if n_params >= self.large_model_params else self.batch_tokens_small

    def constants(self) -> dict:
        return {}

    def formula(self) -> str:
        return ("peak lr = the paper's table (6e-4 at <=50M ... 3e-4 at >=1B, linear in log N); batch 0.5M tokens, "
                "1M from 1B params")


@dataclasses.dataclass(frozen=True)
class SmallScale:
    lr_ref: float
    n_ref: float
    lr_exponent: float
    min_steps: int
    min_batch_tokens: int
    max_batch_tokens: int
    name = "small-scale"
    version = 1
    schedule = "cosine"
    warmup_fraction = 0.05
    min_lr_ratio = 0.0
    beta2 = 0.95

    def peak_lr(self, n_params: float) -> float:
        return peak_lr_power_law(n_params, self.lr_ref, self.n_ref, self.lr_exponent)

    def batch_tokens(self, n_params: float, tokens: float) -> int:
        """The largest power of two that still gives min_steps steps, within [min, max] batch tokens."""
        per_step = max(1.0, tokens / self.min_steps)
        power_of_two = 2 ** math.floor(math.log2(per_step))
        return int(min(self.max_batch_tokens, max(self.min_batch_tokens, power_of_two)))

    def constants(self) -> dict:
        return dataclasses.asdict(self)

    def formula(self) -> str:
        return (f"peak lr = {self.lr_ref:g}·(N/{self.n_ref:g})^{self.lr_exponent:.4g}; batch = largest power of two "
                f"<= D/{self.min_steps} in [{self.min_batch_tokens}, {self.max_batch_tokens}] tokens")


RECIPES = {"cheng2024": Cheng2024, "small-scale": SmallScale}
DEFAULT_RECIPE = "cheng2024"


def make_recipe(name: str, constants: dict | None = None, where: str = "config"):
    """A recipe by name; small-scale takes its constants (train.small_scale)."""
    if name not in RECIPES:
        raise PlmscaleError(f"{where}: train.recipe {name!r} is not a recipe; use one of {sorted(RECIPES)}")
    if name == "small-scale":
        fields = [f.name for f in dataclasses.fields(SmallScale)]
        missing = [key for key in fields if key not in (constants or {})]
        if missing:
            raise PlmscaleError(f"{where}: the small-scale recipe needs train.small_scale {missing}")
        return SmallScale(**{key: constants[key] for key in fields})
    return RECIPES[name]()


def recipe_from_config(train: dict, where: str = "config"):
    return make_recipe(train["recipe"], train.get("small_scale"), where)


def resolve(recipe, overrides: dict, n_params: float, tokens: float) -> dict:
    """The recipe's settings for one run, with every key the mapping sets (not null) taking precedence.

    `overrides` is config.train or a run spec: lr, batch_tokens, warmup_fraction, min_lr_ratio, beta2, and
    batch_tokens_large from large_model_params on (the paper's preset writes its 1M batch that way).
    """
    large = overrides.get("batch_tokens_large")
    if large and n_params >= overrides.get("large_model_params", 1e9):
        batch = int(large)
    elif overrides.get("batch_tokens") is not None:
        batch = int(overrides["batch_tokens"])
    else:
        batch = recipe.batch_tokens(n_params, tokens)
    chosen = {"lr": recipe.peak_lr(n_params), "batch_tokens": batch, "warmup_fraction": recipe.warmup_fraction,
              "min_lr_ratio": recipe.min_lr_ratio, "beta2": recipe.beta2}
    for key in ("lr", "warmup_fraction", "min_lr_ratio", "beta2"):
        if overrides.get(key) is not None:
            chosen[key] = float(overrides[key])
    return chosen


def overridden(recipe, train: dict) -> list[str]:
    """The recipe settings a config sets to its own values (they win over the recipe)."""
    keys = [key for key in ("lr", "batch_tokens", "batch_tokens_large") if train.get(key)]
    return keys + [key for key in FIXED_KEYS if train.get(key) is not None and train[key] != getattr(recipe, key)]


def record(recipe, overrides: list[str] = ()) -> dict:
    """What a run spec and its provenance carry: the recipe's identity, its sha256, and the config's overrides."""
    identity = {"name": recipe.name, "version": recipe.version, "schedule": recipe.schedule,
                "warmup_fraction": recipe.warmup_fraction, "min_lr_ratio": recipe.min_lr_ratio,
                "beta2": recipe.beta2, "constants": recipe.constants()}
    return {**identity, "sha256": config_hash(identity), "overridden_by_config": list(overrides)}


def from_record(data: dict | None, where: str = "run spec"):
    """The recipe a run spec's record names (the default recipe when a hand-written spec has none)."""
    if not data:
        return make_recipe(DEFAULT_RECIPE)
    recipe = make_recipe(data.get("name", ""), data.get("constants"), where)
    if data.get("version") != recipe.version:
        raise PlmscaleError(f"{where}: recipe {recipe.name} version {data.get('version')} is not this plmscale's "
                            f"version {recipe.version}; plan the run again (plmscale plan / snakemake)")
    return recipe


def describe(recipe, train: dict | None = None) -> str:
    """One line for `plmscale plan`: name, version, hash, formulas, and what the config overrides."""
    rec = record(recipe, overridden(recipe, train or {}))
    text = (f"recipe {recipe.name} v{recipe.version} (sha256 {rec['sha256'][:12]}): {recipe.formula()}; "
            f"warm-up {recipe.warmup_fraction:g} of steps, {recipe.schedule} to {recipe.min_lr_ratio:g}·lr, "
            f"beta2 {recipe.beta2:g}")
    if rec["overridden_by_config"]:
        values = ", ".join(f"{key}={train[key]}" for key in rec["overridden_by_config"])
        text += f"\n  overridden by train.*: {values}"
    return text
