"""`plmscale cross-check --fit LABEL=FIT.json --fit LABEL=FIT.json --out DIR`: two fits of the same grid side
by side (plmscale.scaling.cross_check), each read with the runs.csv beside it."""

from plmscale.errors import PlmscaleError
from plmscale.plots.cross_check import write_cross_check
from plmscale.scaling.cross_check import markdown, read_fit_and_runs


def configure_parser(parser) -> None:
    parser.add_argument("--fit", action="extend", nargs="+", required=True, metavar="LABEL=PATH",
                        help="two fit.json files, each with its runs.csv beside it, as --fit LABEL=PATH twice "
                             "or both after one --fit: --fit cosine=a/fit.json --fit wsd=b/fit.json")
    parser.add_argument("--out", required=True, help="directory for cross_check.{json,md,png}")


def main(args) -> int:
    fits = {}
    for item in args.fit:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise PlmscaleError(f"--fit {item!r}: write LABEL=PATH, e.g. wsd=results/scaling/fit.json")
        fits[label] = read_fit_and_runs(path)
    print(markdown(write_cross_check(fits, args.out)))
    return 0
