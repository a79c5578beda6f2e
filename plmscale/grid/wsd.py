"""Warmup-stable-decay (WSD) IsoFLOP grids: one trunk per objective and size, one short branch per budget.

A cosine grid trains every (size, budget) point from scratch. In a WSD grid (train.isoflop.schedule: wsd)
each size trains ONE trunk at constant lr after its warm-up, up to the decay start of its largest budget,
and saves its full state (weights, optimizer, RNG, curve) at every budget's decay start. Each budget is
then a branch: it continues from that checkpoint and decays lr (1-sqrt) over the last decay_fraction of the
budget's steps, ending at the budget's token count. A branch is a grid point like a cosine run (same run id,
tokens, FLOPs = the budget, curve over the whole trajectory); what the grid saves is the compute the
branches share through the trunk (`grid_cost`).

Steps, not tokens, fix the branch points: trunk and branch both derive a budget's step count from its
tokens with the same batch geometry (`branch_points`), so they agree without talking to each other.
The warm-up is warmup_fraction of the SMALLEST budget's steps of the size: the trunk's warm-up is shared by
every branch, and no branch may spend more than warmup_fraction of its steps warming up.
"""

import dataclasses

from plmscale.errors import PlmscaleError


def trunk_id(objective: str, model: str) -> str:
    return f"{objective}_{model}_trunk"


def branch_checkpoint_name(branch_run_id: str) -> str:
    """The trunk's state at a branch's decay start: results/checkpoints/{trunk}/<this>."""
    return f"branch_{branch_run_id}.pt"


def decay_steps(total_steps: int, decay_fraction: float) -> int:
    """Updates of a branch spent decaying: decay_fraction of its steps, at least one."""
    return max(1, int(round(decay_fraction * total_steps)))


@dataclasses.dataclass(frozen=True)
class BranchPoints:
    """A WSD family's schedule in optimizer steps, as trunk and branches compute it."""

    warmup: int                   # warm-up updates, shared by the trunk and every branch
    total: dict                   # branch run id -> its total updates (the budget's steps)
    decay_start: dict             # branch run id -> update index where its decay starts (= trunk step saved)

    @property
    def trunk_steps(self) -> int:
        return max(self.decay_start.values())


def branch_points(wsd: dict, steps_for_tokens, warmup_fraction: float, where: str = "WSD run") -> BranchPoints:
    """Step counts of a WSD family (spec.wsd) given the run's tokens -> steps conversion."""
    branches = wsd["branches"]
    total = {run_id: steps_for_tokens(tokens) for run_id, tokens in branches.items()}
    decay_start = {run_id: steps - decay_steps(steps, wsd["decay_fraction"]) for run_id, steps in total.items()}
    shortest = min(total.values())
    warmup = 0 if warmup_fraction <= 0 else max(1, int(round(warmup_fraction * shortest)))
    too_short = sorted(run_id for run_id, start in decay_start.items() if start < warmup)
    if too_short:
        raise PlmscaleError(
            f"{where}: branches {too_short} would start decaying before the trunk's warm-up ends ({warmup} "
            f"steps); their budgets are too small for this batch: lower train.warmup_fraction or "
            f"train.isoflop.decay_fraction, or drop the smallest budget")
    return BranchPoints(warmup=warmup, total=total, decay_start=decay_start)


# ---- cost: what a WSD grid saves against per-budget cosine runs ------------------------------------------

def family_tokens(budget_tokens, decay_fraction: float) -> tuple[float, float]:
    """(tokens trained by a WSD family, tokens of the same points as cosine runs) for one size's budgets.

    The trunk trains to the largest budget's decay start, (1 - f)·D_max; each branch decays over f·D.
    Step rounding is ignored (a plan-time figure).
    """
    tokens = [float(t) for t in budget_tokens]
    if not tokens:
        return 0.0, 0.0
    wsd = (1.0 - decay_fraction) * max(tokens) + decay_fraction * sum(tokens)
    return wsd, sum(tokens)


def geometric_saving(ratio: float, n_budgets: int, decay_fraction: float) -> float:
    """The saving 1 - WSD/cosine of one size trained at n_budgets budgets spaced by `ratio` (e.g. 2 or
    10**0.5). Tends to (1 - f)/ratio for many budgets: 40% at x2 and 25% at half a decade (f 0.2)."""
    tokens = [ratio ** -k for k in range(n_budgets)]
    wsd, cosine = family_tokens(tokens, decay_fraction)
    return 1.0 - wsd / cosine


@dataclasses.dataclass
class GridCost:
    wsd_flops: float          # what the WSD grid trains (trunks + decays)
    cosine_flops: float       # the same grid points as per-budget cosine runs
    families: list            # (objective, model, n_budgets, wsd_flops, cosine_flops) per trunk

    @property
    def saving(self) -> float:
        return 1.0 - self.wsd_flops / self.cosine_flops if self.cosine_flops else 0.0


def grid_cost(specs) -> GridCost:
    """FLOPs (budget definition) of the WSD grid among `specs` against cosine runs of the same points."""
    families = {}
    for spec in specs:
        if spec.wsd_role == "branch":
            families.setdefault(spec.wsd["trunk"], []).append(spec)
    rows, total_wsd, total_cosine = [], 0.0, 0.0
    for trunk, branches in families.items():
        per_token = branches[0].flops_per_token
        wsd_tokens, cosine_tokens = family_tokens([b.tokens for b in branches], branches[0].wsd["decay_fraction"])
        rows.append((branches[0].objective, branches[0].model, len(branches), wsd_tokens * per_token,
                     cosine_tokens * per_token))
        total_wsd += wsd_tokens * per_token
        total_cosine += cosine_tokens * per_token
    return GridCost(wsd_flops=total_wsd, cosine_flops=total_cosine, families=rows)


def describe_cost(specs) -> str:
    """`plmscale plan`'s WSD lines: per trunk and in total, the FLOPs trained vs per-budget cosine runs."""
    cost = grid_cost(specs)
    if not cost.families:
        return ""
    lines = ["WSD grid: one trunk per size, one decay branch per budget (FLOPs, budget definition):"]
    for objective, model, n_budgets, wsd_flops, cosine_flops in cost.families:
        lines.append(f"  {trunk_id(objective, model)}: {n_budgets} branches, {wsd_flops:.3g} trained vs "
                     f"{cosine_flops:.3g} as cosine runs ({max(0.0, 1 - wsd_flops / cosine_flops):.0%} saved)")
    lines.append(f"WSD total {cost.wsd_flops:.3g} FLOPs vs {cost.cosine_flops:.3g} for per-budget cosine runs: "
                 f"{cost.saving:.1%} saved (the table's C of a branch is its budget, trunk tokens included: the grid "
                 f"point's compute, not what it costs to train)")
    return "\n".join(lines)

