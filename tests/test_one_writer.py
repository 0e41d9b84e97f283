"""One writer per folder, with real processes: a second writer of a run or edit folder is refused
naming the first one's pid, a dead writer's lock is taken over, a run stops when its folder is removed
under it, and export neither writes into a folder that is still training nor over another run's export."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EDIT_FAST, TINY_RUN_OVERRIDES
from text3d.cli import main
from text3d.core.errors import RunDirError
from text3d.core.writer import LOCK_NAME, FolderInUse, hold_folder, writer_of

REPO = Path(__file__).resolve().parents[1]
SLOW = ["steps=100000", "trainer.checkpoint_every=5", "--no-progress"]


def start(argv, cwd=REPO) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "text3d", *map(str, argv)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


def test_a_lock_names_its_writer_is_taken_over_when_it_died_and_sees_its_folder_go(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_NAME).write_text(str(sleeper.pid))
        assert writer_of(folder) == sleeper.pid
        with pytest.raises(FolderInUse, match=f"process {sleeper.pid}"):
            with hold_folder(folder):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    assert writer_of(folder) is None  # its process is gone: the lock is taken over
    with hold_folder(folder) as writer:
        assert writer_of(folder) == os.getpid()
        writer.check()
        shutil.rmtree(folder)
        with pytest.raises(RunDirError, match="removed"):
            writer.check()
    assert not folder.exists()


@pytest.fixture
def run_copy(tiny_run_dir, tmp_path):
    return shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)


def test_a_second_resume_is_refused_while_the_first_trains(run_copy, tmp_path, expect_bad_input, caplog):
    first = start(["run", f"resume={run_copy}", *SLOW])
    try:
        wait_for(lambda: writer_of(run_copy) == first.pid, first)
        expect_bad_input(["run", f"resume={run_copy}", "steps=50"], "being written by process", str(first.pid))
        # its own export/ belongs to the run while it trains; elsewhere, its newest checkpoint is exported
        expect_bad_input(["export", run_copy], "being written by process", str(first.pid))
        wait_for(lambda: (run_copy / "ckpts" / "last").resolve().name != "step-000003", first)
        with caplog.at_level("WARNING"):
            assert main(["export", str(run_copy), "--resolution", "24", "--faces", "300", "--texture-size", "0",
                         "--out", str(tmp_path / "mesh"), "--no-progress"]) == 0
        assert any("still training" in r.getMessage() for r in caplog.records)
        assert (tmp_path / "mesh" / "export.json").is_file()
        caplog.clear()
        with caplog.at_level("WARNING"):  # an edit of a run that trains reads its newest checkpoint, and says so
            assert main(["edit", str(REPO / "configs" / "edit-quickstart.yaml"), f"source={run_copy}",
                         "target_prompt=a blue cube", f"output_dir={tmp_path / 'edits'}", "--print-config"]) == 0
        assert any("still training" in r.getMessage() for r in caplog.records)
    finally:
        assert stop(first) == 130
    assert writer_of(run_copy) is None  # released on Ctrl-C: resuming works again
    reached = int((run_copy / "ckpts" / "last").resolve().name.split("-")[1])
    assert main(["run", f"resume={run_copy}", f"steps={reached + 1}", "--no-progress"]) == 0


def test_two_edit_resumes_at_once_one_is_refused(tiny_nerf_run, tmp_path, expect_bad_input):
    out = tmp_path / "edits"
    assert main(["edit", str(REPO / "configs" / "edit-quickstart.yaml"), f"source={tiny_nerf_run}",
                 "target_prompt=a blue cube", f"output_dir={out}", "steps=1", *EDIT_FAST, "--no-progress"]) == 0
    edit_dir = next(out.glob("*/*@*"))
    first = start(["edit", f"resume={edit_dir}", *SLOW])
    try:
        wait_for(lambda: writer_of(edit_dir) == first.pid, first)
        expect_bad_input(["edit", f"resume={edit_dir}", "steps=4"], "edit folder", "being written by process",
                         str(first.pid))
    finally:
        assert stop(first) == 130


def test_a_run_whose_folder_is_removed_stops_and_does_not_recreate_it(tiny_sd_dir, tmp_path):
    out = tmp_path / "out"
    args = [s for s in TINY_RUN_OVERRIDES if not s.startswith(("steps=", "trainer.checkpoint_every="))]
    proc = start(["run", REPO / "configs" / "smoke-tiny-sd.yaml", f"prior.model={tiny_sd_dir}", f"output_dir={out}",
                  *args, "trainer.checkpoint_every=2", *SLOW])
    wait_for(lambda: any(out.glob("*/*@*/ckpts/last")), proc)
    run_dir = next(out.glob("*/*@*"))
    shutil.rmtree(run_dir)
    try:
        proc.wait(60)
    finally:
        proc.kill()
    assert proc.returncode == 2, proc.stderr.read()
    assert "removed" in proc.stderr.read()
    assert not run_dir.exists()


def test_export_never_replaces_another_runs_export(tiny_run_dir, tmp_path, expect_bad_input):
    run_a = shutil.copytree(tiny_run_dir, tmp_path / "a", symlinks=True)
    run_b = shutil.copytree(tiny_run_dir, tmp_path / "b", symlinks=True)
    small = ["--resolution", "24", "--faces", "300", "--texture-size", "0", "--no-progress"]
    assert main(["export", str(run_b), *small]) == 0  # b's own export/ (its copy of a's export is replaced)
    before = (run_b / "export" / "export.json").read_bytes()
    expect_bad_input(["export", run_a, *small, "--out", run_b / "export"], "holds the export of", str(run_b),
                     watch=run_b)
    assert (run_b / "export" / "export.json").read_bytes() == before
    assert main(["export", str(run_a), *small, "--out", str(tmp_path / "mine")]) == 0
    assert main(["export", str(run_a), *small, "--out", str(tmp_path / "mine")]) == 0  # its own earlier export


def _staging(parent: Path):
    return [p for p in parent.glob(".*.tmp-*") if p.is_dir()] if parent.is_dir() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_multiview_interrupted_while_saving_leaves_no_folder(tmp_path, sig):
    """The signal arrives while the 64 views are being written (their hidden folder exists): no output
    folder is left; after a kill, the next multiview removes the hidden one."""
    out = tmp_path / "out"
    parent = out / "multiview"
    argv = ["multiview", REPO / "configs" / "multiview-quickstart.yaml", "prompt=a cube", "views=64",
            "sampler.steps=1", f"output_dir={out}", "--no-progress"]
    proc = start(argv)
    wait_for(lambda: bool(_staging(parent)), proc, timeout=180)
    proc.send_signal(sig)
    proc.wait(60)
    assert proc.returncode in (130, -signal.SIGKILL), proc.stderr.read()
    assert [p for p in parent.iterdir() if not p.name.startswith(".")] == []  # no visible folder, whole or half
    if sig == signal.SIGINT:
        assert _staging(parent) == []
    again = subprocess.run([sys.executable, "-m", "text3d", *map(str, argv[:4]), "views=2", *map(str, argv[5:])],
                           cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert _staging(parent) == [] and len(list(parent.iterdir())) == 1
    assert (Path(again.stdout.strip().splitlines()[-1]) / "multiview.json").is_file()


def test_two_ply_files_in_one_folder_do_not_share_an_export(tiny_gaussian_run, tmp_path, expect_bad_input):
    """A .ply exports to export/ beside it: a second .ply in the same folder is refused there (its
    export goes elsewhere with --out) instead of replacing the first one's."""
    a = shutil.copy(tiny_gaussian_run / "gaussians.ply", tmp_path / "a.ply")
    b = shutil.copy(tiny_gaussian_run / "gaussians.ply", tmp_path / "b.ply")
    small = ["--resolution", "24", "--faces", "300", "--texture-size", "0", "--no-progress"]
    assert main(["export", str(a), *small]) == 0
    expect_bad_input(["export", b, *small], "export", "holds the export of", "a.ply", watch=tmp_path / "export")
    assert main(["export", str(a), *small]) == 0  # its own earlier export is replaced
