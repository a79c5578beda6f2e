"""`plmscale plan`: the grid a config describes, as a table (or JSON) — before anything is trained."""

import json
import sys

from plmscale.config import load_config_files
from plmscale.grid.plan import describe_plan, planned_specs
from plmscale.scaling.costs import format_ratio_table


def configure_parser(parser) -> None:
    parser.add_argument("--config", nargs="+", default=["config.yaml"],
                        help="config file (default: config.yaml); several are merged left to right, as "
                             "snakemake --configfile merges them (e.g. config.yaml configs/demo-wsd.yaml)")
    parser.add_argument("--results", default="results",
                        help="results folder whose train-split manifest gives each run's epochs (default: results)")
    parser.add_argument("--json", action="store_true", help="print every run spec as JSON instead")
    parser.add_argument("--costs", action="store_true",
                        help="also print each ladder shape's cost per token under every FLOPs definition "
                             "(with_attention, chinchilla) as a ratio to the paper's 6·N")


def main(args) -> int:
    config, source = load_config_files(args.config)
    specs = planned_specs(config, source)
    if args.json:
        json.dump([s.to_dict() for s in specs], sys.stdout, indent=1)
        print()
    else:
        print(describe_plan(config, specs, source, args.results))
        if args.costs:
            print(format_ratio_table(config["train"]["ladder"], config["train"]["seq_len"]))
    return 0
