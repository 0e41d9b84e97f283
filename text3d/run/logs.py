"""What a run logs while it trains: ``metrics.csv`` (one row per logged step), TensorBoard event files
under ``tb/`` (with the validation images) and ``curves.png`` (the main curves, redrawn at every
validation and at the end), each switched by the ``logging:`` section.

A row holds the step, the wall and step time, the loss and each loss term, the gradient norm, the
guidance's timestep range, the learning rate of each parameter group and the number of Gaussians.
A resumed run first drops the rows (and TensorBoard events) after the step it continues from, which
a killed process may have logged past its last checkpoint, then appends: no row is lost or doubled.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from text3d.core.bounds import bounded, check_choice
from text3d.core.errors import ConfigError
from text3d.core.io import atomic_path, write_text

logger = logging.getLogger(__name__)

CSV_NAME = "metrics.csv"
CURVES_NAME = "curves.png"
TB_DIR = "tb"
FIRST_COLUMNS = ["step", "wall_time_s", "step_time_s", "loss"]
"""The columns every row starts with; the others follow in the order they first appear."""
CURVES = (("loss", "loss_*"), ("grad_norm",), ("t_min", "t_max"), ("num_gaussians",))
"""The panels of ``curves.png``: a panel draws the columns its patterns name (``*``: a prefix)."""


@dataclass
class LoggingConfig:
    """The ``logging:`` section: what a run writes about its training besides checkpoints."""

    every: int = bounded(10, lo=0)
    """Log a row every N steps (and the last step); 0 = no rows, no curves."""
    csv: bool = True
    """Write ``metrics.csv``."""
    curves: bool = True
    """Draw ``curves.png`` at every validation and at the end."""
    tensorboard: str = "auto"
    """``auto`` (write ``tb/`` when the tensorboard package is installed: ``pip install -e ".[viewer]"``),
    ``on`` (required) or ``off``."""


def check_logging_config(cfg: LoggingConfig) -> None:
    check_choice("logging.tensorboard", cfg.tensorboard, ("auto", "on", "off"))
    if cfg.tensorboard == "on" and not tensorboard_available():
        raise ConfigError('logging.tensorboard: on needs the tensorboard package; pip install -e ".[viewer]", or '
                          "set logging.tensorboard=auto")


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class TrainingLog:
    """The logs of one run folder, opened by a run that starts or continues at ``step``."""

    def __init__(self, cfg: LoggingConfig, run_dir: Path, step: int):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.rows: List[Dict[str, Any]] = read_rows(self.run_dir / CSV_NAME, up_to=step) if cfg.csv else []
        if cfg.csv and (self.run_dir / CSV_NAME).exists():
            self._rewrite()  # drop what a killed process logged past its last checkpoint
        self.tb = None
        if cfg.every and cfg.tensorboard != "off" and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=step + 1 if step else None)

    def due(self, step: int, last: int) -> bool:
        """Whether ``step`` is a logged step (every ``every`` steps, and the last)."""
        return bool(self.cfg.every) and (step % self.cfg.every == 0 or step == last)

    def record(self, row: Dict[str, Any]) -> None:
        """Add one row (``step`` and figures) to the CSV and TensorBoard."""
        row = {k: v for k, v in row.items() if v is not None}
        if self.cfg.csv:
            self.rows.append(row)
            self._append(row)
        if self.tb is not None:
            for key, value in row.items():
                if key != "step":
                    self.tb.add_scalar(f"train/{key}", value, row["step"])

    def image(self, tag: str, image: Any, step: int) -> None:
        """A validation image (uint8 ``[H, W, 3]``) into TensorBoard."""
        if self.tb is not None:
            self.tb.add_image(tag, image, step, dataformats="HWC")

    def draw(self) -> Optional[Path]:
        """Redraw ``curves.png`` from the rows (nothing without rows)."""
        if not (self.cfg.curves and self.rows):
            return None
        from .curves import draw_curves

        with atomic_path(self.run_dir / CURVES_NAME) as tmp:
            draw_curves(self.rows, CURVES, tmp)
        return self.run_dir / CURVES_NAME

    def close(self) -> None:
        if self.tb is not None:
            tb, self.tb = self.tb, None
            try:
                tb.close()
            except OSError as e:  # the run folder went away under the run: its writer says so
                logger.warning("TensorBoard events not written (%s)", e)

    # ------------------------------------------------------------------------------------------
    def _columns(self) -> List[str]:
        extra = [k for row in self.rows for k in row if k not in FIRST_COLUMNS]
        return FIRST_COLUMNS + list(dict.fromkeys(extra))

    def _append(self, row: Dict[str, Any]) -> None:
        path = self.run_dir / CSV_NAME
        if not path.exists() or any(k not in self._header(path) for k in row):
            self._rewrite()  # a new column (a loss term that starts later): the header grows
            return
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._header(path)).writerow(row)

    def _rewrite(self) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self._columns(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.run_dir / CSV_NAME, out.getvalue())

    @staticmethod
    def _header(path: Path) -> List[str]:
        with path.open(newline="") as f:
            return next(csv.reader(f), [])


def read_rows(path: Path, up_to: Optional[int] = None) -> List[Dict[str, Any]]:
    """The rows of a ``metrics.csv`` as numbers (steps up to ``up_to``; a line cut by a kill is skipped)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            try:
                row = {k: float(v) for k, v in raw.items() if k and v not in (None, "")}
                row["step"] = int(row["step"])
            except (KeyError, ValueError):
                continue
            if up_to is None or row["step"] <= up_to:
                rows.append(row)
    return rows
