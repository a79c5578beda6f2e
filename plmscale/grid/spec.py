"""The run spec: one grid point as the planner writes it and the trainer reads it.

`RunSpec` says what to train (objective, shape, tokens, seed, peak lr, batch) and `TrainSettings` how
(config.train's per-run keys: sequence length, schedule shape, optimizer, evaluation, device). As JSON a
spec is one flat object (`to_dict`), the form `plmscale train --spec` and the train rule's params use;
`from_dict` reads it back, fills a setting it lacks from the config schema's default (the one place
defaults are written), and refuses keys it does not know. Counts and FLOPs are derived from the shape,
never stored twice.
"""

import dataclasses

from plmscale.arithmetic import ModelShape
from plmscale.config import read_json_object, schema_defaults
from plmscale.errors import PlmscaleError
from plmscale import recipe as recipes

# What a run trains on. A mixed run trains one model on CLM and MLM batches (spec.mixed holds its
# mlm_fraction; plmscale.train.mixed its step schedule) and is evaluated on both objectives.
OBJECTIVES = ("clm", "mlm", "mixed")
MIXED = "mixed"


@dataclasses.dataclass
class TrainSettings:
    """config.train's per-run training keys (schemas/config.schema.yaml documents each)."""

    seq_len: int
    micro_batch_size: int
    warmup_fraction: float
    min_lr_ratio: float
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    mask_prob: float
    eval_every_steps: int
    eval_tokens: int
    checkpoint_every_steps: int
    sampling: dict
    device: str
    precision: str
    compile: bool
    threads: int
    packing: bool | str  # auto | true | false (plmscale.train.packing.resolve_packing)
    flops_definition: str
    distributed: dict

    @classmethod
    def from_mapping(cls, values: dict) -> "TrainSettings":
        """Settings from a mapping holding (some of) config.train's keys; the rest take schema defaults."""
        defaults = schema_defaults("train")
        chosen = {}
        for field in dataclasses.fields(cls):
            value = values.get(field.name, defaults[field.name])
            chosen[field.name] = field.type(value) if field.type in (int, float, bool, str) else value
        return cls(**chosen)

    @property
    def by_cluster(self) -> bool:
        return bool(self.sampling.get("by_cluster", True))

    @property
    def crop_framing(self) -> str:
        return str(self.sampling.get("crop_framing", "protein_ends"))

    @property
    def strategy(self) -> str:
        return self.distributed.get("strategy", "auto")


SETTING_KEYS = tuple(f.name for f in dataclasses.fields(TrainSettings))


@dataclasses.dataclass
class RunSpec:
    """One grid point: what to train, for how long, how, and what the planner expects it to cost."""

    run_id: str
    objective: str
    model: str
    shape: dict
    tokens: int
    budget: float | None
    init_from: str | None
    seed: int
    lr: float
    batch_tokens: int
    source_weights: dict | None
    train: TrainSettings
    recipe: dict  # plmscale.recipe.record: name, version, constants, sha256, the config's overrides
    resources: dict = dataclasses.field(default_factory=dict)
    # The repetition study's restricted data (plmscale.train.subset): {source, unique_tokens, seed}, or None
    # to train on the whole split. Written only when set, so other runs' specs (and params) are unchanged.
    subset: dict | None = None
    # A warmup-stable-decay grid's trunk or branch (plmscale.grid.wsd); None for a run with its own schedule.
    wsd: dict | None = None
    # A mixed run's objective mix: {"mlm_fraction": share of its steps on MLM batches}; None for clm and mlm.
    # Written only when set, so other runs' specs (and params) are unchanged.
    mixed: dict | None = None

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise PlmscaleError(f"run spec of {self.run_id}: objective {self.objective!r} is not one of "
                                f"{', '.join(OBJECTIVES)}")
        if (self.objective == MIXED) != (self.mixed is not None):
            raise PlmscaleError(f"run spec of {self.run_id}: a mixed run needs its mix ({{'mlm_fraction': ...}}, "
                                f"from the config's train.mixed) and only a mixed run has one; objective "
                                f"{self.objective!r}, mixed {self.mixed!r}")
        if self.mixed is not None:
            fraction = self.mixed.get("mlm_fraction")
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise PlmscaleError(f"run spec of {self.run_id}: mixed.mlm_fraction is {fraction!r}; it must be "
                                    f"a number strictly between 0 and 1 (train.mixed.mlm_fraction)")
            if self.wsd is not None:
                raise PlmscaleError(f"run spec of {self.run_id}: a mixed run has its own cosine schedule; "
                                    f"train.isoflop.schedule wsd does not take objective mixed")

    # ---- derived from the shape (plmscale.arithmetic), never stored ----------------------------------------
    @property
    def model_shape(self) -> ModelShape:
        return ModelShape.from_dict(self.shape)

    @property
    def wsd_role(self) -> str | None:
        """"trunk", "branch", or None (a run with its own cosine schedule)."""
        return self.wsd["role"] if self.wsd else None

    @property
    def n_params(self) -> int:
        return self.model_shape.n_params(non_embedding=True)

    @property
    def n_params_with_embeddings(self) -> int:
        return self.model_shape.n_params(non_embedding=False)

    @property
    def flops_per_token(self) -> float:
        """Per token under the study's budget definition (train.flops_definition)."""
        return self.model_shape.flops_per_token(self.train.seq_len, self.train.flops_definition)

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens

    # ---- JSON ----------------------------------------------------------------------------------------------
    _CORE = ("run_id", "objective", "model", "shape", "tokens", "budget", "init_from", "seed", "lr",
             "batch_tokens", "source_weights", "recipe", "resources", "wsd")
    _DERIVED = ("n_params", "n_params_with_embeddings", "flops_per_token", "flops")

    def to_dict(self) -> dict:
        """One flat object: the core fields, the derived counts (for readers) and every training setting."""
        data = {key: getattr(self, key) for key in self._CORE + self._DERIVED}
        if self.subset is not None:
            data["subset"] = dict(self.subset)
        if self.mixed is not None:
            data["mixed"] = dict(self.mixed)
        if data["wsd"] is None:  # left out, so that a cosine run's params (and its checkpoint hash) stay as they were
            del data["wsd"]
        data.update(dataclasses.asdict(self.train))
        return data

    def training_dict(self) -> dict:
        """The spec without the planner's resource estimate: what decides the trained model.

        Snakemake reruns a job when its params change; resources are estimates (an assumed MFU), so a
        new estimate must not retrain the grid.
        """
        data = self.to_dict()
        data.pop("resources")
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str | None = None) -> "RunSpec":
        """A spec from its flat JSON form. Derived counts are recomputed; a missing setting takes its
        schema default, or its recipe's value (lr, batch, warm-up, min_lr_ratio, β2; the default recipe when
        the spec names none); an unknown key is an error."""
        where = where or f"run spec {data.get('run_id', '?')}"
        missing = [key for key in ("run_id", "objective", "shape", "tokens") if key not in data]
        if missing:
            raise PlmscaleError(f"{where} lacks {', '.join(missing)}; write it with the grid (RunSpec.to_dict)")
        unknown = sorted(set(data) - set(cls._CORE) - set(cls._DERIVED) - set(SETTING_KEYS) - {"subset", "mixed"})
        if unknown:
            raise PlmscaleError(f"{where}: unknown keys {unknown}; a run spec holds {sorted(cls._CORE)} and "
                                f"config.train's settings {sorted(SETTING_KEYS)}")
        try:
            shape = ModelShape.from_dict(data["shape"]).to_dict()
        except (KeyError, TypeError, ValueError) as error:
            raise PlmscaleError(f"{where}: shape {data['shape']!r} is not a model shape ({error})") from None
        recipe = recipes.from_record(data.get("recipe"), where)
        n_params = ModelShape.from_dict(shape).n_params()
        resolved = recipes.resolve(recipe, data, n_params, int(data["tokens"]))
        return cls(
            run_id=str(data["run_id"]), objective=data["objective"], model=str(data.get("model", "")),
            shape=shape, tokens=int(data["tokens"]), budget=data.get("budget"),
            init_from=data.get("init_from"), seed=int(data.get("seed", 0)),
            lr=resolved["lr"], batch_tokens=resolved["batch_tokens"], source_weights=data.get("source_weights"),
            train=TrainSettings.from_mapping({**data, **resolved}),
            recipe=data.get("recipe") or recipes.record(recipe), resources=data.get("resources") or {},
            subset=data.get("subset"),
            wsd=data.get("wsd"), mixed=data.get("mixed"))


def read_spec(path) -> RunSpec:
    """The RunSpec in a JSON file; a missing, malformed or incomplete file is an error that names it."""
    data = read_json_object(path, "run spec", "; `plmscale plan --json` lists the runs of a config")
    return RunSpec.from_dict(data, where=str(path))
