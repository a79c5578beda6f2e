"""What every figure shares: objective names and colours, the method line styles, log axes with readable
labels (SI for parameters and tokens, powers of ten for FLOPs), legend entries for laws that are not drawn,
and save_figure (PNG + SVG + PDF with fixed metadata, so reruns give identical bytes)."""

import math
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.lines import Line2D


OBJECTIVE_NAMES = {"clm": "CLM (causal)", "mlm": "MLM (masked)"}
OBJECTIVE_COLORS = {"clm": "#1f77b4", "mlm": "#d62728"}
METHOD_STYLES = {"isoflop": ("-", "IsoFLOP"), "envelope": (":", "envelope"), "parametric": ("-.", "parametric")}
# How far the compute axis reaches beyond the data and the prediction targets (factor each side), and the
# size/token axes beyond what is drawn: enough to read the trend, never decades of empty extrapolation.
COMPUTE_MARGIN = 3.0
VALUE_MARGIN = 3.0
EXTRAPOLATION_STYLE = {"ls": "--", "alpha": 0.55}  # a law beyond the compute range of its data
LABEL_CHARS = 140  # a reason in a legend is cut here; fit.json and `plmscale fit` have it whole


# ------------------------------------------------------------------------------------------------ helpers

def si_label(value: float, _pos=None) -> str:
    """10_000_000 -> '10M', 2.5e9 -> '2.5B' (parameters and tokens)."""
    if value <= 0 or not math.isfinite(value):
        return ""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def power_of_ten(value: float, _pos=None) -> str:
    if value <= 0:
        return ""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) < 1e-6:
        return f"$10^{{{int(round(exponent))}}}$"
    mantissa = value / 10 ** math.floor(exponent)
    return f"${mantissa:.2g}\\times10^{{{int(math.floor(exponent))}}}$"


def format_axis(axis, quantity: str) -> None:
    """Log scale with readable labels: quantity is 'flops', 'params', 'tokens' or 'loss'."""
    if quantity == "loss":
        axis.set_major_formatter(ticker.FormatStrFormatter("%.2f"))
        axis.set_minor_formatter(ticker.FormatStrFormatter("%.2f"))
        return
    axis.set_major_locator(ticker.LogLocator(base=10, numticks=12))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())
    axis.set_major_formatter(ticker.FuncFormatter(power_of_ten if quantity == "flops" else si_label))


FORMATS = ("png", "svg", "pdf")  # PNG for people, SVG/PDF for papers
DPI = 130


def save_figure(fig, path, formats=None) -> list:
    """Write fig as path (its suffix) plus the other formats beside it; returns the written paths."""
    formats = FORMATS if formats is None else formats
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in dict.fromkeys([path.suffix.lstrip(".") or "png", *formats]):
        target = path.with_suffix(f".{fmt}")
        # Fixed metadata, and SVG element ids hashed with a fixed salt (matplotlib salts them with a random
        # uuid otherwise), so reruns give identical SVG/PDF bytes.
        metadata = {"Date": None} if fmt in ("svg", "pdf") else None
        if fmt == "pdf":
            metadata = {"CreationDate": None, "ModDate": None}
        with matplotlib.rc_context({"svg.hashsalt": "plmscale"}):
            fig.savefig(target, dpi=DPI, bbox_inches="tight", metadata=metadata)
        written.append(target)
    return written


def objectives_in(fit):
    return [o for o in ("clm", "mlm") if o in fit.objectives]


def wrapped(text: str, width: int = 70) -> str:
    return textwrap.fill(text, width, break_long_words=False)


def not_shown_label(objective: str, method: str, entry) -> str:
    """'CLM parametric: not identified: <first reason>', for a legend entry or a note in place of a law."""
    name = METHOD_STYLES.get(method, (None, method))[1]
    why = entry.why_unusable
    return f"{objective.upper()} {name}: {why if len(why) <= LABEL_CHARS else why[:LABEL_CHARS - 1] + '…'}"


def not_shown_handle(color, style):
    """A legend entry for a law that is not drawn: a greyed, crossed-out sample of its style."""
    return Line2D([], [], color=color, ls=style, alpha=0.35, marker="x", markersize=5)


def fit_budgets(fit, objective):
    return [o.budget for o in fit.method(objective, "isoflop").optima]
