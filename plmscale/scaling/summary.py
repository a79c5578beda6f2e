"""fit.json as text: the table `plmscale fit` prints and the fit rule logs."""

from plmscale.scaling.fitfile import METHODS

PARAMETRIC_CONSTANTS = ("E", "A", "B", "alpha", "beta")


def _ci(ci):
    return "[   n/a   ,   n/a   ]" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _constant(entry, name):
    ci = entry.get(f"{name}_ci")
    return f"{name} {entry[name]:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else " [no interval]")


def summary_table(fit, with_paper=True) -> str:
    """objective × method: a [95% CI], b [95% CI], identified or why not, plus why a method is missing;
    under the parametric row its constants E, A, B, alpha, beta with intervals. with_paper: a row with the
    protein paper's exponents under each objective (a comparison only a protein study should draw)."""
    lines = [f"{'objective':<9} {'method':<10} {'a':>6} {'95% CI':>16}   {'b':>6} {'95% CI':>16}   identified"]
    for objective, methods in fit["objectives"].items():
        for method in METHODS:
            entry = methods[method]
            if "error" in entry:
                lines.append(f"{objective:<9} {method:<10} not fitted: {entry['error']}")
                continue
            verdict = {True: "yes", False: "NO: " + "; ".join(entry.get("reasons", [])[:1]),
                       None: "not judged"}[entry.get("identified")]
            lines.append(f"{objective:<9} {method:<10} {entry['a']:6.3f} {_ci(entry.get('a_ci')):>16}   "
                         f"{entry['b']:6.3f} {_ci(entry.get('b_ci')):>16}   {verdict}")
            lines.extend(f"{'':<9} {'':<10} {line}" for line in cost_model_lines(method, entry))
            if method == "parametric":
                constants = ", ".join(_constant(entry, name) for name in PARAMETRIC_CONSTANTS if name in entry)
                lines.append(f"{'':<9} {'':<10} L = E + A/N^alpha + B/D^beta: {constants}")
        published = fit["published"].get(objective)
        if with_paper and published:
            lines.append(f"{objective:<9} {'paper':<10} {published['a']:6.3f} {'':>16}   {published['b']:6.3f}")
    return "\n".join(lines)


def cost_model_lines(method, entry) -> list[str]:
    """The cost model an IsoFLOP or envelope law counts compute in (its profiles are iso-compute in that one
    only, docs/costs.md) and the envelope's exponent refitted under each cost model."""
    definition = entry.get("flops_definition")
    if not definition:
        return []
    if method == "isoflop":
        return [f"budgets in {definition} FLOPs: iso-compute in {definition}, not relabelled under other cost models"]
    by_model = {m: law for m, law in (entry.get("by_cost_model") or {}).items() if isinstance(law, dict) and "a" in law}
    refits = ", ".join(f"{m} a {law['a']:.3f} {_ci(law.get('a_ci'))}" for m, law in by_model.items())
    return [f"compute counted in {definition}" + (f"; refitted per cost model: {refits}" if refits else "")]


def rollout_summary(fit) -> str:
    """One line per objective and backtested method: the rollout's loss and N_opt errors with intervals."""
    lines = []
    for objective, methods in fit["objectives"].items():
        for method, result in (methods.get("backtest") or {}).items():
            if method == "settings" or not isinstance(result, dict):
                continue
            head = f"rollout {objective:<4} {method:<10}"
            if "skipped" in result:
                if method != "envelope":
                    lines.append(f"{head} none: {result['skipped']}")
                continue
            rollout = result["rollout"]
            if "error" in rollout:
                lines.append(f"{head} none: {rollout['error']}")
                continue
            loss = _signed(rollout["loss_error_pct"], rollout.get("loss_error_pct_ci"), "%")
            n_opt = _signed(rollout["n_opt_log_error"], rollout.get("n_opt_log_error_ci"))
            observed = rollout["observed"]["source"].split(" (")[0]
            lines.append(f"{head} fit below {rollout['held_out_budget']:.3g} FLOPs, forecast it: loss {loss}, "
                         f"N_opt x{_ratio(rollout['n_opt_ratio'])} (ln {n_opt}) vs the observed {observed}")
    return "\n".join(lines)


def _ratio(value):
    """A forecast/observed ratio, "n/a" where the forecast failed (e.g. a Farseer law with no finite optimum)."""
    return "n/a" if value is None else f"{value:.3g}"


def _signed(value, ci=None, unit=""):
    if value is None:
        return "n/a"
    text = f"{value:+.2f}{unit}"
    return text + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
