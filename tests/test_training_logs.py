"""The logs of a run: metrics.csv (one row per logged step), TensorBoard events under tb/ (read back
with tensorboard's own EventAccumulator) and curves.png (re-read by Pillow); a resume after a kill
appends without losing or doubling a row; the logging: section switches each."""

import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import SMOKE_CONFIG, TINY_RUN_OVERRIDES
from text3d.cli import main

FAST = [o for o in TINY_RUN_OVERRIDES if not o.startswith(("steps=", "trainer.checkpoint_every", "trainer.val_every"))]


def rows(run_dir: Path):
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def scalars(run_dir: Path, tag: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)], acc


@pytest.fixture(scope="module")
def logged_run(tiny_sd_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("logs")
    assert main(["run", SMOKE_CONFIG, f"prior.model={tiny_sd_dir}", f"output_dir={out}", *FAST, "steps=5",
                 "trainer.checkpoint_every=2", "trainer.val_every=2", "logging.every=1", "--no-progress"]) == 0
    return next(out.glob("*/*@*"))


def test_every_logged_step_is_a_row_with_its_figures(logged_run):
    table = rows(logged_run)
    assert [int(r["step"]) for r in table] == [1, 2, 3, 4, 5]
    for column in ("wall_time_s", "step_time_s", "loss", "loss_sds", "grad_norm", "t_min", "t_max",
                   "lr_encoding", "lr_network", "lr_background"):
        assert all(r[column] != "" for r in table), column
    assert all(float(r["grad_norm"]) > 0 and float(r["step_time_s"]) > 0 for r in table)
    walls = [float(r["wall_time_s"]) for r in table]
    assert walls == sorted(walls)


def test_tensorboard_holds_the_same_scalars_and_the_validation_images(logged_run):
    table = rows(logged_run)
    loss, acc = scalars(logged_run, "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5]
    assert [v for _, v in loss] == pytest.approx([float(r["loss"]) for r in table], rel=1e-6)
    assert [e.step for e in acc.Images("validation")] == [2, 4, 5]


def test_curves_png_is_a_picture_of_the_panels(logged_run):
    image = Image.open(logged_run / "curves.png")
    assert image.format == "PNG" and image.width > 300 and image.height > 300
    assert sum(1 for count in image.convert("L").histogram() if count) > 20  # lines and text, not a blank canvas


def test_a_resume_after_a_kill_appends_without_losing_or_doubling_rows(logged_run, tmp_path):
    """The process logged step 5 but died before its last checkpoint: the resume continues from step 4,
    drops the orphan row 5, and logs 5 and 6 again, once each (CSV and TensorBoard)."""
    run = shutil.copytree(logged_run, tmp_path / "run", symlinks=True)
    shutil.rmtree(run / "ckpts" / "step-000005")
    (run / "ckpts" / "last").unlink()
    assert main(["run", f"resume={run}", "steps=6", "--no-progress"]) == 0
    assert [int(r["step"]) for r in rows(run)] == [1, 2, 3, 4, 5, 6]
    loss, _ = scalars(run, "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5, 6]
    assert dict(loss)[4] == pytest.approx(float(rows(logged_run)[3]["loss"]), rel=1e-6)  # the kept rows are the old ones


def test_the_logging_section_switches_each_log(tiny_sd_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["run", SMOKE_CONFIG, f"prior.model={tiny_sd_dir}", f"output_dir={out}", *FAST, "steps=2",
                 "logging.csv=false", "logging.curves=false", "logging.tensorboard=off", "--no-progress"]) == 0
    run = next(out.glob("*/*@*"))
    assert not any((run / name).exists() for name in ("metrics.csv", "curves.png", "tb"))
    assert main(["run", SMOKE_CONFIG, f"prior.model={tiny_sd_dir}", f"output_dir={out}", "logging.every=-1",
                 "--print-config"]) == 2
    assert main(["run", SMOKE_CONFIG, f"prior.model={tiny_sd_dir}", f"output_dir={out}", "logging.tensorboard=maybe",
                 "--print-config"]) == 2


def test_the_progress_bar_stays_one_line_on_a_terminal(tiny_sd_dir, tmp_path):
    """On a terminal (a pseudo-terminal here) the log lines print above the bar: no line a terminal
    shows mixes a log record with the bar."""
    import os
    import pty
    import subprocess
    import sys

    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "text3d", "run", SMOKE_CONFIG, f"prior.model={tiny_sd_dir}",
                             f"output_dir={tmp_path}", *FAST, "steps=6", "trainer.log_every=2"],
                            stdin=child_fd, stdout=child_fd, stderr=child_fd, close_fds=True)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(120) == 0
    text = b"".join(chunks).decode(errors="replace")
    shown = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]  # what the terminal keeps
    logs = [line for line in shown if "step 2/6" in line or "step 4/6" in line]
    assert len(logs) == 2 and all(line.startswith("INFO") for line in logs), logs
    assert not any("INFO" in line and "step/s" in line for line in shown)
    assert any("step/s" in line or "6/6" in line for line in shown)  # the bar was drawn
