"""rule plot_generation: generation.json -> generation.png (plots/generation.py)."""

from plmscale.evaluate.generation import read_generation
from plmscale.logging_setup import log_to_file
from plmscale.plots.registry import GENERATION_FIGURE

log_to_file(snakemake.log[0])
GENERATION_FIGURE.draw(read_generation(snakemake.input.summary), snakemake.output[0])
