"""Known truth for law selection with whole fits (issue 23): noisy IsoFLOP tables drawn from Farseer's law and
from random Chinchilla laws, each fitted as the fit stage does (fit_all with the parametric and Farseer families,
bootstrap, identification and the rollout verdict): which law is selected, and whether the selected law's held-out
rollout error lies inside its interval.

    python benchmarks/law_selection_known_truth.py [--draws 10] [--bootstrap 100]

The tables are tests/test_laws.py's (farseer_runs, FARSEER_TRUTH) and tests/scaling_synthetic.py's (isoflop_runs,
random_law), seeds 100, 101, ...; results in docs/laws.md.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from plmscale.scaling.fit import fit_all  # noqa: E402
from scaling_synthetic import fit_settings, isoflop_runs, random_law  # noqa: E402
from test_laws import FARSEER_TRUTH, farseer_runs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the envelope's "needs curves" on every table
    start = time.perf_counter()
    for family in ("farseer", "parametric"):
        chosen, inside = [], []
        for seed in range(args.draws):
            rng = np.random.default_rng(100 + seed)
            runs = (farseer_runs(FARSEER_TRUTH, rng) if family == "farseer"
                    else isoflop_runs(random_law(rng), rng, noise=0.005))
            entry = fit_all(runs, None, fit_settings(bootstrap=args.bootstrap, seed=seed,
                                                     law_families=["parametric", "farseer"]))["objectives"]["clm"]
            selected = entry["selected_law"]
            chosen.append(selected)
            rollout = entry["backtest"][selected]["rollout"] if selected else None
            if rollout:
                low, high = rollout["loss_error_pct_ci"]
                inside.append(low <= 0 <= high)
                shown = f"{rollout['loss_error_pct']:+.2f}% [{low:+.2f}, {high:+.2f}]"
            else:
                shown = "none selected"
            print(f"{family} table, seed {100 + seed}: selected {selected}, its rollout {shown} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        print(f"{family} tables: the true family selected in {chosen.count(family)} of {args.draws}; the selected "
              f"law's held-out error inside its interval in {sum(inside)} of {len(inside)}")


if __name__ == "__main__":
    main()
