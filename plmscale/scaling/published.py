"""What the paper reports (Cheng et al. 2024, arXiv 2411.02142): the one copy of its constants, written
into fit.json for side-by-side comparison and drawn as reference lines by the plots."""

PUBLISHED = {
    "source": "Cheng et al. 2024, Training Compute-Optimal Protein Language Models (arXiv 2411.02142)",
    # notebook_n_opt: the authors' notebook fit on the released curves (README of ScalingProteinLM),
    # N_opt = k·C^a.
    "clm": {"a": 0.578, "b": 0.422, "notebook_n_opt": {"k": 3.09e-3, "a": 0.5575},
            "parametric": {"E": 2.1226, "A": 143.98, "B": 22036.5, "alpha": 0.3666, "beta": 0.4956},
            "check": {"flops": 1.34e22, "n_opt": 7e9, "note": "ProGen2-xlarge budget"}},
    "mlm": {"a": 0.776, "b": 0.230, "notebook_n_opt": {"k": 1.365e-7, "a": 0.760},
            "parametric": {"E": 0.0, "A": 3.3652, "B": 7.5686, "alpha": 0.04229, "beta": 0.09943},
            "check": {"flops": 1.7e22, "n_opt": 1e10, "note": "ESM-2 3B budget"}},
    "chinchilla_text_a": 0.50,
}


def notebook_n_opt(objective: str) -> tuple:
    """(k, a) of the authors' notebook law N_opt = k·C^a for one objective."""
    law = PUBLISHED[objective]["notebook_n_opt"]
    return law["k"], law["a"]
