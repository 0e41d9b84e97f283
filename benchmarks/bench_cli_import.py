"""How long ``import text3d.cli`` takes (what every ``text3d`` command and ``--help`` pays before any
work), against a baseline git revision measured in the same run, and which heavy modules it loads.

    python benchmarks/bench_cli_import.py [--base 58faf7e] [--repeat 15]

The baseline revision is checked out into a temporary git worktree and imported from there. Times
are the cumulative ``-X importtime`` microseconds of ``text3d.cli`` (the interpreter's own start is
left out) and the wall time of the whole ``python -c``, the median of ``--repeat`` runs of each,
interleaved so that machine noise hits both.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "diffusers", "transformers", "ray", "cv2")


def import_us(root: Path) -> int:
    """Cumulative microseconds of ``import text3d.cli`` with ``root`` first on the path."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import text3d.cli"], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""}, check=True)
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s+text3d\.cli$", line)
        if m:
            return int(m.group(1))
    raise RuntimeError(f"no text3d.cli line in -X importtime output of {root}")


def wall_ms(root: Path) -> float:
    """Wall milliseconds of ``python -c "import text3d.cli"`` (interpreter start included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import text3d.cli"], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                   check=True)
    return 1000 * (time.perf_counter() - t0)


def heavy_modules(root: Path) -> list:
    code = f"import sys, text3d.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={"PYTHONPATH": str(root), "PATH": ""}, check=True).stdout
    return eval(out.strip())  # a list literal printed above


def build_parser() -> argparse.ArgumentParser:
    """This script's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="58faf7e", help="baseline git revision (default: before the package split)")
    parser.add_argument("--repeat", type=int, default=15, help="runs of each (default 15)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                       capture_output=True)
        try:
            now, before, wall_now, wall_before = [], [], [], []
            for _ in range(args.repeat):
                now.append(import_us(REPO))
                before.append(import_us(base))
                wall_now.append(wall_ms(REPO))
                wall_before.append(wall_ms(base))
            heavy_now, heavy_before = heavy_modules(REPO), heavy_modules(base)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=True)
    m_now, m_before = statistics.median(now), statistics.median(before)
    print(f"import text3d.cli: {m_now / 1000:.1f} ms now, {m_before / 1000:.1f} ms at {args.base} "
          f"(median of {args.repeat}); ratio now/base {m_now / m_before:.2f}")
    w_now, w_before = statistics.median(wall_now), statistics.median(wall_before)
    print(f"python -c 'import text3d.cli' wall: {w_now:.1f} ms now, {w_before:.1f} ms at {args.base}; "
          f"ratio {w_now / w_before:.2f}")
    print(f"heavy modules loaded: now {heavy_now or 'none'}, at {args.base} {heavy_before or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
