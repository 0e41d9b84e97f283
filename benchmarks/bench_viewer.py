"""Training with the live viewer open and idle, against training without it, measured in the same run.

    OMP_NUM_THREADS=2 python benchmarks/bench_viewer.py [--steps 150] [--repeat 2] [--no-browser]

Three rows on the NeRF quickstart ("a red cube", the embedded prior, no validation, turntable or
mesh): no viewer; the viewer with no browser; the viewer with a browser open on it and its camera
still (headless Chromium). Each row is the median wall time of ``--repeat`` fits of ``--steps``
steps from the same seed; the ratios against the first row are the cost of the viewer (goal: the
viewer open and idle <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    """This script's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per fit (default 150)")
    parser.add_argument("--repeat", type=int, default=2, help="fits per row (default 2)")
    parser.add_argument("--no-browser", action="store_true", help="skip the row with a browser open")
    return parser


def fit_seconds(steps: int, out: Path, viewer: str) -> tuple:
    """Wall seconds of one fit and the CPU seconds the browser used meanwhile (0 without one):
    ``viewer`` is "none", "idle" (no browser) or "browser" (one open, its camera still)."""
    from text3d.run import open_run
    from text3d.view.live import LiveViewer

    run = open_run(REPO / "configs" / "quickstart.yaml", [
        "prompt=a red cube", f"steps={steps}", "trainer.val_every=0", "trainer.turntable_frames=0",
        "trainer.checkpoint_every=0", "trainer.log_every=0", "export.enabled=false", f"output_dir={out}"])
    live, browser = None, None
    if viewer != "none":
        live = LiveViewer(run, port=_free_port())
    if viewer == "browser":
        browser = _open_browser(live.url.replace("localhost", "127.0.0.1"))
        time.sleep(8)  # connected, its first frame rendered
    try:
        cpu0 = _cpu_seconds(browser)
        started = time.perf_counter()
        run.fit(progress=live)
        return time.perf_counter() - started, _cpu_seconds(browser) - cpu0
    finally:
        if live is not None:
            live.close()
        if browser is not None:
            browser.kill()
            browser.wait()


def _cpu_seconds(browser) -> float:
    """CPU seconds used so far by the browser and its child processes (renderer, GPU process)."""
    if browser is None:
        return 0.0
    import psutil

    try:
        procs = [psutil.Process(browser.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_browser(url: str) -> subprocess.Popen:
    profile = tempfile.mkdtemp(prefix="bench-viewer-")
    return subprocess.Popen([shutil.which("chromium"), "--headless", "--no-sandbox", "--use-gl=swiftshader",
                             "--enable-unsafe-swiftshader", "--disable-background-networking", "--no-first-run",
                             f"--remote-debugging-port={_free_port()}", f"--user-data-dir={profile}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows = ["none", "idle"] + ([] if args.no_browser or shutil.which("chromium") is None else ["browser"])
    times = {row: [] for row in rows}
    browser_cpu = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeat):
            for row in rows:  # interleaved, so machine noise hits every row
                seconds, cpu = fit_seconds(args.steps, Path(out), row)
                times[row].append(seconds)
                if row == "browser":
                    browser_cpu.append(cpu)
    base = statistics.median(times["none"])
    print(f"{args.steps} steps of the NeRF quickstart, median of {args.repeat}, torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
    labels = {"none": "no viewer", "idle": "viewer, no browser", "browser": "viewer, a browser open and still"}
    for row in rows:
        seconds = statistics.median(times[row])
        print(f"  {labels[row]:36s} {seconds:7.2f} s   ratio {seconds / base:.3f}")
    if browser_cpu:
        print(f"  the browser itself used {statistics.median(browser_cpu):.1f} CPU s during the fit (software WebGL on "
              f"this machine's cores; a browser on another machine costs the training machine nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
