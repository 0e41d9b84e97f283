"""End-to-end runs of the smoke preset on CPU: outputs, resume, SIGKILL, NaN steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from text3d.core.checkpoint import latest_checkpoint, load_checkpoint
from text3d.cli import main
from text3d.core.errors import RunDirError
from text3d.run import open_run

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke-tiny-sd.yaml"
# Smaller than the preset so each test takes seconds.
FAST = ["cameras.width=32", "cameras.height=32", "renderer.num_samples_per_ray=24",
        "trainer.val_every=3", "trainer.val_views=2", "trainer.val_resolution=32",
        "trainer.turntable_frames=4", "trainer.turntable_resolution=32", "trainer.checkpoint_every=2",
        "trainer.log_every=0"]


def overrides(tmp_path, tiny_sd_dir, *extra):
    return [f"prior.model={tiny_sd_dir}", f"output_dir={tmp_path / 'outputs'}", *FAST, *extra]


def final_tensors(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run_dir)).tensors


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_cli_run_writes_every_output(tmp_path, tiny_sd_dir, capsys):
    code = main(["run", str(SMOKE), *overrides(tmp_path, tiny_sd_dir, "steps=4", "name=smoke"), "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    run_dir = Path(out[-1])  # the last line is the run directory
    assert run_dir.parent == tmp_path / "outputs" / "smoke" and "@" in run_dir.name
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["steps"] == 4 and saved["prior"]["model"] == str(tiny_sd_dir)
    last = run_dir / "ckpts" / "last"
    assert last.is_symlink() and (last / "state.safetensors").is_file() and (last / "state.json").is_file()
    assert json.loads((last / "state.json").read_text())["step"] == 4
    assert sorted(p.name for p in (run_dir / "validation").glob("*.png")) == ["step-000003.png", "step-000004.png"]
    for name in ("turntable.mp4", "turntable.gif"):
        assert (run_dir / name).stat().st_size > 0
    import imageio.v3 as iio
    assert iio.imread(run_dir / "turntable.gif").shape[0] == 4  # 4 frames, re-read by another reader
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["seed"] == 0 and metrics["wall_time_s"] > 0
    assert isinstance(metrics["final_loss"], float) and "torch" in metrics["versions"]
    # "a red cube" is a prompt the analytic renderer knows: the run scores itself against it
    assert 0.0 <= metrics["silhouette_iou"] <= 1.0 and len(metrics["analytic"]["silhouette_iou_per_view"]) == 8
    assert metrics["analytic"]["shape"] == "cube" and "colour_found" in metrics
    assert not list(run_dir.rglob(".*tmp*"))  # no temporary files left behind


def test_same_seed_same_result_and_resume_is_bit_exact(tmp_path, tiny_sd_dir):
    full = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, "steps=6", "name=full"))
    full.fit()
    again = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, "steps=6", "name=again"))
    again.fit()
    assert_same_tensors(final_tensors(full.run_dir), final_tensors(again.run_dir))

    part = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, "steps=3", "name=part"))
    part.fit()
    resumed = open_run(None, [f"resume={part.run_dir}", "steps=6"])
    assert resumed.step == 3 and resumed.run_dir == part.run_dir
    resumed.fit()
    assert_same_tensors(final_tensors(full.run_dir), final_tensors(part.run_dir))

    other = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, "steps=6", "name=other", "seed=1"))
    other.fit()
    a, b = final_tensors(full.run_dir), final_tensors(other.run_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("system."))


def test_sigkill_mid_run_then_resume(tmp_path, tiny_sd_dir):
    cmd = [sys.executable, "-m", "text3d.cli", "run", str(SMOKE),
           *overrides(tmp_path, tiny_sd_dir, "steps=1000", "name=killed", "trainer.checkpoint_every=1",
                      "trainer.val_every=0"), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    root = tmp_path / "outputs" / "killed"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            runs = list(root.glob("*@*")) if root.exists() else []
            try:  # the writer may prune the checkpoint we are reading: then look again
                ckpt = latest_checkpoint(runs[0]) if runs else None
                if ckpt is not None and load_checkpoint(ckpt).meta["step"] >= 3:
                    break
            except (RunDirError, OSError):
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        else:
            pytest.fail("the run wrote no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_dir = runs[0]
    for ckpt in (run_dir / "ckpts").glob("step-*"):  # every visible checkpoint is complete
        load_checkpoint(ckpt)
    for path in run_dir.rglob("*"):  # visible files are never truncated (temporaries are hidden)
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(run_dir).parts):
            assert path.stat().st_size > 0, path
    killed_at = load_checkpoint(latest_checkpoint(run_dir)).meta["step"]
    resumed = open_run(None, [f"resume={run_dir}", f"steps={killed_at + 2}", "trainer.turntable_frames=0"])
    assert resumed.step == killed_at
    resumed.fit()
    reference = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, f"steps={killed_at + 2}", "name=ref",
                                          "trainer.val_every=0", "trainer.turntable_frames=0"))
    reference.fit()
    a, b = final_tensors(run_dir), final_tensors(reference.run_dir)
    assert_same_tensors({k: v for k, v in a.items()}, b)


def test_non_finite_step_is_skipped(tmp_path, tiny_sd_dir, caplog):
    run = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, "steps=4", "name=nan", "trainer.turntable_frames=0"))
    guidance = run.guidance

    def poisoned(*args, **kwargs):
        out = guidance(*args, **kwargs)
        if kwargs["step"] == 2:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    run.guidance = poisoned
    with caplog.at_level("WARNING"):
        run.fit()
    assert run.skipped_steps == [2] and run.step == 4
    assert any("step 2" in r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(p).all() for p in run.system.parameters())
    assert json.loads((run.run_dir / "metrics.json").read_text())["skipped_steps"] == [2]


def _run_until_step(cmd, env, step: int, sig: int, delay: float) -> subprocess.CompletedProcess:
    """Start ``cmd``, wait for its log line of ``step``, wait ``delay`` s more, send ``sig``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if f"step {step}/" in line:
                time.sleep(delay)
                proc.send_signal(sig)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "".join(lines) + err)


def test_sigint_mid_run_then_resume_is_bit_exact(tmp_path, tiny_sd_dir):
    """A real Ctrl-C (or SIGTERM) lands somewhere inside a step, at several points; the checkpoint
    written on interrupt is taken at a step boundary, so resuming ends bit-identical to an
    uninterrupted run."""
    total = 9
    common = overrides(tmp_path, tiny_sd_dir, f"steps={total}", "trainer.checkpoint_every=0", "trainer.val_every=0",
                       "trainer.turntable_frames=0", "trainer.log_every=1", "export.enabled=false")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    reference = open_run(SMOKE, [*common, "name=ref"])
    reference.fit()
    expected = final_tensors(reference.run_dir)
    for k, (at_step, delay, sig) in enumerate([(2, 0.0, signal.SIGINT), (4, 0.03, signal.SIGINT),
                                               (3, 0.07, signal.SIGTERM)]):
        cmd = [sys.executable, "-m", "text3d.cli", "run", str(SMOKE), *common, f"name=stopped{k}", "--no-progress"]
        done = _run_until_step(cmd, env, at_step, sig, delay)
        assert done.returncode == 130, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and "continue with: text3d run resume=" in done.stderr
        run_dir = next((tmp_path / "outputs" / f"stopped{k}").glob("*@*"))
        stopped_at = load_checkpoint(latest_checkpoint(run_dir)).meta["step"]
        assert at_step <= stopped_at < total
        assert not (run_dir / "metrics.json").exists()  # stopped, not finished
        resumed = open_run(None, [f"resume={run_dir}"])
        assert resumed.step == stopped_at
        resumed.fit()
        assert_same_tensors(final_tensors(run_dir), expected)
