"""``curves.png``: a run's logged figures against the step, one panel per group of columns."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Dict, List, Sequence


def panel_columns(rows: List[Dict[str, Any]], patterns: Sequence[str]) -> List[str]:
    """The columns of ``rows`` a panel draws: those matching ``patterns`` (``fnmatch``), in order."""
    seen = list(dict.fromkeys(k for row in rows for k in row))
    return [c for p in patterns for c in seen if fnmatch.fnmatchcase(c, p)]


def draw_curves(rows: List[Dict[str, Any]], panels: Sequence[Sequence[str]], path: Path) -> None:
    """Draw each panel that has data (a log y axis for losses and gradient norms), one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    drawn = [(patterns, panel_columns(rows, patterns)) for patterns in panels]
    drawn = [(patterns, cols) for patterns, cols in drawn if cols]
    fig, axes = plt.subplots(len(drawn), 1, figsize=(7, 2.4 * len(drawn)), sharex=True, squeeze=False)
    for ax, (patterns, cols) in zip(axes[:, 0], drawn):
        for col in cols:
            pts = [(row["step"], row[col]) for row in rows if col in row]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=col, linewidth=1.2)
        if patterns[0] in ("loss", "grad_norm") and all(row.get(c, 1) > 0 for row in rows for c in cols):
            ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
