"""Known truth for law selection with whole fits (issue 23): noisy IsoFLOP tables drawn from Farseer's law, from
random Chinchilla laws and from the data-constrained law (three variants), each fitted as the fit stage does
(fit_all with bootstrap, identification and the rollout verdict): which law is selected, and whether the selected
law's held-out rollout error lies inside its interval.

    python benchmarks/law_selection_known_truth.py [--draws 10] [--bootstrap 100] [--tables farseer parametric ...]

Tables (seeds 100, 101, ...; each fitted with the families named):
  farseer                tests/test_laws.py's farseer_runs(FARSEER_TRUTH), 0.4% noise      parametric, farseer
  parametric             tests/scaling_synthetic.py's random Chinchilla laws, 0.5% noise   parametric, farseer
  dc_paper               tests/test_data_constrained.py's data_constrained_runs(PAPER_TRUTH)
                                                                                   parametric, data_constrained
  dc_early               the same, data running out at 10^18.5 FLOPs (~175 epochs)  parametric, data_constrained
  dc_random              random Chinchilla constants with R*_D = 5, R*_N = 3       parametric, data_constrained
  dc_no_decay            NO_DECAY_TRUTH (repetition that does not matter: the Chinchilla law)
                                                                                   parametric, data_constrained
Results in docs/laws.md.
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
from test_data_constrained import NO_DECAY_TRUTH, PAPER_TRUTH, data_constrained_runs  # noqa: E402
from test_laws import FARSEER_TRUTH, farseer_runs  # noqa: E402

CONSTRAINED = ["parametric", "data_constrained"]
# table kind: (the true family, the families fitted, runs from a seeded generator)
TABLES = {
    "farseer": ("farseer", ["parametric", "farseer"], lambda rng: farseer_runs(FARSEER_TRUTH, rng)),
    "parametric": ("parametric", ["parametric", "farseer"],
                   lambda rng: isoflop_runs(random_law(rng), rng, noise=0.005)),
    "dc_paper": ("data_constrained", CONSTRAINED, lambda rng: data_constrained_runs(PAPER_TRUTH, rng)),
    "dc_early": ("data_constrained", CONSTRAINED,
                 lambda rng: data_constrained_runs(PAPER_TRUTH, rng, data_runs_out_at=10 ** 18.5)),
    "dc_random": ("data_constrained", CONSTRAINED,
                  lambda rng: data_constrained_runs({**random_law(rng), "r_star_d": 5.0, "r_star_n": 3.0}, rng)),
    "dc_no_decay": ("parametric", CONSTRAINED, lambda rng: data_constrained_runs(NO_DECAY_TRUTH, rng)),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the envelope's "needs curves" on every table
    start = time.perf_counter()
    summary = []
    for kind in args.tables:
        truth, families, draw = TABLES[kind]
        chosen, inside = [], []
        for seed in range(args.draws):
            runs = draw(np.random.default_rng(100 + seed))
            entry = fit_all(runs, None, fit_settings(bootstrap=args.bootstrap, seed=seed,
                                                     law_families=families))["objectives"]["clm"]
            selected = entry["selected_law"]
            chosen.append(selected)
            rollout = entry["backtest"][selected]["rollout"] if selected else None
            if rollout:
                low, high = rollout["loss_error_pct_ci"]
                inside.append(low <= 0 <= high)
                shown = f"{rollout['loss_error_pct']:+.2f}% [{low:+.2f}, {high:+.2f}]"
            else:
                shown = "none selected"
            rms = {f: (entry["law_selection"]["families"][f]["held_out_rms_pct"],
                       entry["law_selection"]["families"][f]["identified"]) for f in families}
            shown_rms = ", ".join(f"{f} {'-' if r is None else f'{r:.2f}%'}{'' if ok else ' (refused)'}"
                                  for f, (r, ok) in rms.items())
            print(f"{kind} table, seed {100 + seed}: selected {selected}, its rollout {shown}; held-out RMS "
                  f"{shown_rms} ({time.perf_counter() - start:.0f} s)", flush=True)
        line = (f"{kind} tables: the true family ({truth}) selected in {chosen.count(truth)} of {args.draws}; the "
                f"selected law's held-out error inside its interval in {sum(inside)} of {len(inside)}")
        summary.append(line)
        print(line, flush=True)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
