"""The repetition study's runs (config train.repetition; docs/repetition.md).

For every objective, model and token budget D of the study, two runs of the same shape, recipe and budget:

- `rep_{objective}_{model}_u{U}_d{D}`: trained on a restricted source, whole clusters of `source` holding
  ~U unique tokens (plmscale.train.subset), drawn D / U times over (its epoch count);
- `mix_{objective}_{model}_d{D}`: trained on the full mixture of data.sources, as the grid's runs are.

Both are evaluated on the same validation split. They are trained by the grid's train rule but are not
part of the scaling fits: repeated data is not a point of the unique-data laws (rules/repetition.smk fits
them on their own).
"""

from plmscale.errors import PlmscaleError
from plmscale.grid.expand import GridBuilder, format_number


def repetition_settings(config: dict) -> dict | None:
    """config train.repetition when it asks for runs (a source and at least one budget), else None."""
    study = config["train"].get("repetition") or {}
    if not study.get("source") or not study.get("tokens"):
        return None
    return study


def unique_token_counts(study: dict) -> list[float]:
    values = study["unique_tokens"]
    return [float(v) for v in (values if isinstance(values, list) else [values])]


def repetition_run_id(kind: str, objective: str, model: str, tokens: float, unique_tokens: float | None = None) -> str:
    if kind == "rep":
        return f"rep_{objective}_{model}_u{format_number(unique_tokens)}_d{format_number(tokens)}"
    return f"mix_{objective}_{model}_d{format_number(tokens)}"


def repetition_specs(config: dict, source: str | None = None) -> list:
    """The study's RunSpecs, mixture run first for each (objective, model, D); [] when there is no study."""
    study = repetition_settings(config)
    if study is None:
        return []
    where = f"config {source}" if source else "config"
    source_names = [s["name"] for s in config["data"]["sources"]]
    if study["source"] not in source_names:
        raise PlmscaleError(f"{where}: train.repetition.source {study['source']!r} is not one of data.sources "
                            f"({', '.join(source_names)})")
    builder = GridBuilder(config, source)
    unknown = [m for m in study["models"] if m not in builder.shapes]
    if unknown or not study["models"]:
        raise PlmscaleError(f"{where}: train.repetition.models {unknown or '[]'} must name shapes of train.ladder "
                            f"({', '.join(builder.shapes)})")
    seed = int(study["seed"]) if study.get("seed") is not None else int(config["seed"])
    specs = []
    for objective in study["objectives"]:
        for model in study["models"]:
            for tokens in sorted(float(t) for t in study["tokens"]):
                runs = [builder.make(repetition_run_id("mix", objective, model, tokens), objective, model,
                                     round(tokens))]
                for unique in unique_token_counts(study):
                    if unique >= tokens:  # no repetition within this budget: the mixture run says all
                        continue
                    spec = builder.make(repetition_run_id("rep", objective, model, tokens, unique), objective, model,
                                        round(tokens))
                    spec.subset = {"source": study["source"], "unique_tokens": unique, "seed": seed}
                    # The mixture run's seed: the same initial weights, so the pair differs in its data only
                    # (common random numbers: seed noise largely cancels in the gap).
                    spec.seed = runs[0].seed
                    spec.source_weights = {study["source"]: 1.0}
                    runs.append(spec)
                for spec in runs:
                    if study.get("eval_every_steps"):  # finer curves: loss against tokens within one run
                        spec.train.eval_every_steps = int(study["eval_every_steps"])
                specs.extend(runs)
    return specs
