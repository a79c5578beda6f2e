"""Load and validate a plmscale config: defaults filled in, unknown keys rejected with a clear error."""

import copy
import functools
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

try:
    import jsonschema
except ImportError:  # a bare GPU machine (benchmarks/gpu_check.py) trains from specs, validating no config
    jsonschema = None

from plmscale import recipe as recipes
from plmscale.errors import PlmscaleError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class):
    """A validator that writes each property's default into the instance before checking it."""
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_then_check})


_Validator = _with_defaults(jsonschema.Draft202012Validator) if jsonschema else None


def _fill_defaults_without_jsonschema(schema: dict, instance: dict) -> None:
    """What _Validator's filling does for nested objects, for a machine without jsonschema."""
    for name, subschema in schema.get("properties", {}).items():
        if "default" in subschema and name not in instance:
            instance[name] = copy.deepcopy(subschema["default"])
        if isinstance(instance.get(name), dict):
            _fill_defaults_without_jsonschema(subschema, instance[name])


def load_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return _numbers_from_scientific_strings(yaml.safe_load(handle))


@functools.lru_cache(maxsize=None)
def _section_defaults(section: str) -> dict:
    filled = {}
    if _Validator is None:
        _fill_defaults_without_jsonschema(load_schema()["properties"][section], filled)
    else:
        _Validator(load_schema()["properties"][section]).validate(filled)  # {} is valid: this only fills
    return filled


def schema_defaults(section: str) -> dict:
    """A top-level section (e.g. "train") with nothing set: every key at its schema default.

    The schema is the one place defaults are written; code that accepts a partial mapping (a run spec
    written by hand, a test) fills it from here.
    """
    return copy.deepcopy(_section_defaults(section))


def _describe(error: "jsonschema.ValidationError") -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        return f"at {where}: {error.message} — check the spelling against schemas/config.schema.yaml"
    return f"at {where}: {error.message}"


# YAML 1.1 (PyYAML, and so Snakemake) reads `1e19` as a string; budgets are written that way.
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers_from_scientific_strings(value):
    if isinstance(value, dict):
        return {k: _numbers_from_scientific_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_from_scientific_strings(v) for v in value]
    if isinstance(value, str) and _SCIENTIFIC.match(value):
        return float(value)
    return value


class _RepeatedKey(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key written twice in one mapping is an error (PyYAML keeps the last one
    silently: two `m1:` ladder entries would train only the second)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error says so below
                continue
            if first is not None:
                raise _RepeatedKey(problem=f"the key {key!r} appears twice in one mapping (lines {first} and "
                                           f"{line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path, what="config file", hint="", sections="data, train, fit, ...") -> dict:
    """A YAML file's top-level mapping ({} when empty); a missing or malformed file, a key written twice,
    or a file that is not a mapping is an error that names the file."""
    try:
        with open(path) as handle:
            data = yaml.load(handle, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise PlmscaleError(f"{what} {path} does not exist{hint}") from None
    except _RepeatedKey as error:
        raise PlmscaleError(f"{what} {path}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise PlmscaleError(f"{what} {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PlmscaleError(f"{path}: the {what} must be a mapping of sections ({sections}), got a "
                            f"{_yaml_type(data)}")
    return data


def _yaml_type(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__)


def read_json_object(path, what="JSON file", hint="") -> dict:
    """A JSON file holding one object; a missing or malformed file, or another JSON value, is an error
    that names the file."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise PlmscaleError(f"{what} {path} does not exist{hint}") from None
    except json.JSONDecodeError as error:
        raise PlmscaleError(f"{what} {path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise PlmscaleError(f"{what} {path} holds a JSON {type(data).__name__}, not an object")
    return data


def load_config(config, source=None) -> dict:
    """Validate a config (a dict or a YAML path) and return a copy with every default filled in."""
    if isinstance(config, (str, Path)):
        source = source or str(config)
        config = read_yaml(config)
    where = f"config {source}" if source else "config"
    if not isinstance(config, Mapping):
        raise PlmscaleError(f"{where}: the config must be a mapping of sections (data, train, fit, ...), got a "
                            f"{_yaml_type(config)}")
    filled = _numbers_from_scientific_strings(copy.deepcopy(dict(config)))
    _check_finite(filled, where)
    if _Validator is None:
        raise PlmscaleError("validating a config needs the jsonschema package: pip install jsonschema")
    errors = sorted(_Validator(load_schema()).iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        raise PlmscaleError(f"{where} is invalid:\n  " + "\n  ".join(_describe(e) for e in errors))
    _check_consistency(filled, source)
    _fill_from_recipe(filled["train"], source)
    return filled


def _merge(base: dict, over: dict) -> dict:
    """Nested mappings merged key by key, the later file winning; lists are replaced (as Snakemake merges
    several --configfile)."""
    merged = dict(base)
    for key, value in over.items():
        both_mappings = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value) if both_mappings else value
    return merged


def load_config_files(paths) -> tuple[dict, str]:
    """One validated config from one or more YAML files merged left to right, and the files' names joined
    with " + " (what error messages call the config)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    config = {}
    for path in paths:
        config = _merge(config, read_yaml(path))
    source = " + ".join(map(str, paths))
    return load_config(config, source=source), source


def _check_finite(value, where: str, key: str = "") -> None:
    """YAML's .nan and .inf are floats that pass every schema bound; a setting must be a finite number."""
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(item, where, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for item in value:
            _check_finite(item, where, key)
    elif isinstance(value, float) and not math.isfinite(value):
        what = ("budgets in FLOPs must be finite positive numbers (e.g. 1e19)" if key == "train.isoflop.budgets"
                else "settings must be finite numbers")
        raise PlmscaleError(f"{where}: {key} holds {value}; {what}")


def _of_objective(value, objective: str, missing=None):
    """A train.isoflop setting for one objective: the value itself (the same for every objective) or the
    objective's entry of a per-objective mapping (PER_OBJECTIVE_ISOFLOP; validated configs name every one)."""
    return value.get(objective, missing) if isinstance(value, Mapping) else value


def objective_budgets(isoflop: dict, objective: str) -> list:
    """train.isoflop.budgets of one objective."""
    return list(_of_objective(isoflop["budgets"], objective, []))


def objective_window(isoflop: dict, objective: str) -> tuple[float, float]:
    """(min, max) tokens per parameter of one objective's IsoFLOP runs (train.isoflop.min_tokens_per_param,
    max_tokens_per_param)."""
    return (float(_of_objective(isoflop["min_tokens_per_param"], objective)),
            float(_of_objective(isoflop["max_tokens_per_param"], objective)))


def all_budgets(isoflop: dict) -> list:
    """Every IsoFLOP budget of train.isoflop.budgets, over all objectives, sorted, each once."""
    budgets = isoflop["budgets"]
    values = ([b for entry in budgets.values() for b in entry] if isinstance(budgets, Mapping) else budgets)
    return sorted({float(b) for b in values})


# Settings of train.isoflop that may be a per-objective mapping, with an example entry for the error message.
PER_OBJECTIVE_ISOFLOP = {"budgets": "[1e18, 3e18]", "min_tokens_per_param": "1", "max_tokens_per_param": "2000"}


def _check_per_objective_settings(train: dict, where: str) -> None:
    """A per-objective mapping (budgets, the tokens-per-parameter window) names exactly the objectives
    train.objectives trains."""
    for key, example in PER_OBJECTIVE_ISOFLOP.items():
        value = train["isoflop"][key]
        if not isinstance(value, Mapping):
            continue
        missing = [o for o in train["objectives"] if o not in value]
        if missing:
            empty = " (an empty list: no IsoFLOP runs of it)" if key == "budgets" else ""
            raise PlmscaleError(
                f"{where}: train.isoflop.{key} is a per-objective mapping without an entry for "
                f"{', '.join(missing)} (train.objectives trains it); add e.g. `{missing[0]}: {example}` under "
                f"train.isoflop.{key}{empty}, or write it as one value for every objective")
        extra = sorted(set(value) - set(train["objectives"]))
        if extra:
            raise PlmscaleError(
                f"{where}: train.isoflop.{key}.{extra[0]} is set for an objective train.objectives does not "
                f"train ({train['objectives']}); add {extra[0]} to train.objectives or remove the entry")


def _fill_from_recipe(train: dict, source) -> None:
    """warmup_fraction, min_lr_ratio and beta2 left null take the chosen recipe's values; lr and batch
    depend on each run's size and budget, so the grid resolves them (plmscale.recipe.resolve)."""
    recipe = recipes.recipe_from_config(train, f"config {source}" if source else "config")
    for key in recipes.FIXED_KEYS:
        if train[key] is None:
            train[key] = getattr(recipe, key)


def _check_consistency(config: dict, source) -> None:
    """Rules a schema cannot say: names that must refer to each other."""
    where = f"config {source}" if source else "config"
    names = [s["name"] for s in config["data"]["sources"]]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PlmscaleError(f"{where}: data.sources names must be unique; repeated: {duplicated}")
    ladder = config["train"]["ladder"]
    wanted = list(config["train"]["isoflop"]["models"] or []) + [r["model"] for r in config["train"]["runs"]]
    unknown = sorted({m for m in wanted if m not in ladder})
    if unknown:
        raise PlmscaleError(f"{where}: train models {unknown} are not in train.ladder {sorted(ladder)}")
    _check_per_objective_settings(config["train"], where)
    split = config["data"]["split"]
    if split["valid_fraction"] + split["test_fraction"] >= 1:
        raise PlmscaleError(f"{where}: data.split valid_fraction + test_fraction must be below 1")
    has_grid = all_budgets(config["train"]["isoflop"]) or config["train"]["runs"]
    if split["valid_fraction"] == 0 and config["fit"]["use_own_runs"] and has_grid:
        # Every run's scaling point is its final validation loss: without a valid split there is none.
        raise PlmscaleError(f"{where}: data.split.valid_fraction is 0, but the training grid (train.isoflop / "
                            "train.runs) scores every run on the valid split; set valid_fraction above 0 (with no grid, "
                            "the data stage alone runs with valid_fraction 0)")
