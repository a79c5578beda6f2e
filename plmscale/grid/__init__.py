"""The training grid of a study: run specs, model shapes, resource estimates, and the plan table."""

from plmscale.grid.expand import expand_grid, format_number, run_seed
from plmscale.grid.resources import estimate_resources
from plmscale.grid.spec import RunSpec, TrainSettings
from plmscale.grid.shapes import flops_per_token, n_params, n_params_with_embeddings, shape_for_params

__all__ = ["RunSpec", "TrainSettings", "expand_grid", "format_number", "run_seed", "estimate_resources",
           "flops_per_token", "n_params", "n_params_with_embeddings", "shape_for_params"]
