"""The minimum of a function tabulated on an evenly spaced grid in log N, refined by a parabola: how the
allocation under a cost model and Farseer's law find N_opt where no closed form exists."""

import numpy as np


def refined_argmin(values, log_grid):
    """Per row of values (K, G) over log_grid (G, evenly spaced): (log of the refined minimum, at_end).

    The best grid point is moved by the vertex of the parabola through it and its two neighbours (at most
    one grid step). Non-finite values count as +inf. Where the best point is an end of the grid (at_end), or
    the three points have no finite curvature, the best interior point itself is returned unrefined.
    """
    values = np.where(np.isfinite(values), values, np.inf)
    best = np.argmin(values, axis=1)
    inner = np.clip(best, 1, values.shape[1] - 2)
    rows = np.arange(len(best))
    y0, y1, y2 = values[rows, inner - 1], values[rows, inner], values[rows, inner + 1]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    shift = np.where((best == inner) & np.isfinite(shift), np.clip(shift, -1, 1), 0.0)
    step = log_grid[1] - log_grid[0]
    return log_grid[inner] + shift * step, best != inner
