"""text3d batch on a local Ray instance (2 CPUs) with tiny quickstart runs: run folders and summary
files, failure isolation, a SIGKILLed worker retried and resumed bit-exactly, --resume, the GPU
request, Ctrl-C."""

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ray = pytest.importorskip("ray")

from text3d.batch.engine import task_options  # noqa: E402
from text3d.batch.launch import resume_batch, start_batch  # noqa: E402
from text3d.batch.state import BatchOptions  # noqa: E402
from text3d.batch.summary import TILE  # noqa: E402
from text3d.core.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from text3d.core.errors import Text3DError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# Tiny quickstart runs: one 32 px view per step, few samples, no validation, a 2-frame turntable, no mesh.
TINY = ["steps=4", "cameras.batch_size=1", "renderer.num_samples_per_ray=16", "trainer.val_every=0",
        "trainer.turntable_frames=2", "trainer.turntable_resolution=32", "trainer.checkpoint_every=2",
        "trainer.log_every=0", "export.enabled=false"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module: 2 CPUs and one declared (not real) GPU, so that a GPU
    request can be scheduled and checked on a machine without one."""
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    yield
    ray.shutdown()


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def final_tensors(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run_dir)).tensors


def test_task_options_ask_ray_for_the_requested_resources():
    opts = task_options(BatchOptions(gpus_per_run=1, cpus_per_run=3))
    assert opts["num_gpus"] == 1.0 and opts["num_cpus"] == 3.0
    assert opts["max_retries"] == 0  # retries are the driver's, from the run's checkpoint


def test_three_items_finish_and_a_bad_override_fails_alone(tmp_path, local_ray):
    empty_prior = tmp_path / "empty_prior"
    empty_prior.mkdir()
    prompts = write_jsonl(tmp_path / "items.jsonl", [
        {"prompt": "a red cube"},
        {"prompt": "a blue sphere", "seed": 3, "item": "sphere seed 3"},
        {"prompt": "a pink capsule", "guidance.guidance_scal": 5},  # a typo the config rejects
        "a green cone",
        # a valid config that fails when the run starts: the prior folder exists but holds no prior
        {"prompt": "a red cube", "item": "broken", "prior.model": str(empty_prior)},
    ])
    state = start_batch(QUICKSTART, prompts, [*TINY, f"output_dir={tmp_path / 'out'}"], BatchOptions(max_retries=1))
    batch_dir = state.batch_dir
    assert batch_dir.parent == tmp_path / "out" / "quickstart" and batch_dir.name.startswith("batch@")
    names = [it.item for it in state.items]
    assert names == ["a_red_cube", "sphere_seed_3", "a_pink_capsule", "a_green_cone", "broken"]
    assert [it.status for it in state.items] == ["done", "done", "failed", "done", "failed"]
    broken = state.items[4]  # raised in its worker: retried once, then recorded with its error
    assert broken.attempts == 2 and [h["outcome"] for h in broken.history] == ["failed", "failed"]
    assert "no shapes prior" in broken.error.lower() and (batch_dir / "broken" / "config.yaml").is_file()

    bad = state.items[2]
    assert "guidance_scal" in bad.error and "line 3" in bad.error and bad.attempts == 0
    assert not (batch_dir / "a_pink_capsule").exists()

    for item, prompt, seed in zip([state.items[i] for i in (0, 1, 3)], ["a red cube", "a blue sphere", "a green cone"],
                                  [0, 3, 0]):
        run_dir = batch_dir / item.item
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["prompt"] == prompt and saved["seed"] == seed and saved["steps"] == 4
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["steps"] == 4 and metrics["prompt"] == prompt
        assert load_checkpoint(latest_checkpoint(run_dir)).meta["step"] == 4
        assert item.attempts == 1 and item.history[0]["resources"] == {"CPU": 1.0}

    # the summary files, re-read by independent readers
    data = json.loads((batch_dir / "batch.json").read_text())
    assert data["counts"]["done"] == 3 and data["counts"]["failed"] == 2
    rows = list(csv.DictReader((batch_dir / "batch.csv").open()))
    assert [r["item"] for r in rows] == names
    assert [r["status"] for r in rows] == ["done", "done", "failed", "done", "failed"]
    for row in rows:
        if row["status"] == "done":
            metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
            assert float(row["metrics.silhouette_iou"]) == pytest.approx(metrics["silhouette_iou"])
            assert int(row["steps"]) == 4 and row["attempts"] == "1"
    assert json.loads(rows[1]["overrides"]) == {"prompt": "a blue sphere", "seed": 3}
    assert "guidance_scal" in rows[2]["error"]

    import imageio.v3 as iio

    sheet = iio.imread(batch_dir / "contact_sheet.png")
    assert sheet.shape[1] == 5 * TILE and sheet.shape[0] > TILE
    tiles = [sheet[:TILE, k * TILE:(k + 1) * TILE, :3].astype(int) for k in range(5)]
    assert (tiles[2] == 200).all() and (tiles[4] == 200).all()  # the failed items have no picture
    for k in (0, 1, 3):  # each finished item shows its own turntable frame
        frame = iio.imread(batch_dir / names[k] / "turntable.gif", index=0)[..., :3].astype(int)
        assert frame.shape == (32, 32, 3)
        assert np.abs(tiles[k][::4, ::4] - frame).mean() < 8

    # --resume of a finished batch runs nothing again
    stamps = {n: (batch_dir / n / "metrics.json").stat().st_mtime_ns for n in names[:2] + names[3:4]}
    again = resume_batch(batch_dir, option_changes={"max_retries": 0})
    assert [it.status for it in again.items] == ["done", "done", "failed", "done", "failed"]
    assert all(it.attempts == 1 for it in again.items if it.status == "done")
    assert again.items[4].attempts == 3  # a failed run gets another try; the rejected config none
    assert stamps == {n: (batch_dir / n / "metrics.json").stat().st_mtime_ns for n in stamps}


def test_killed_worker_is_retried_from_its_checkpoint_bit_exactly(tmp_path, local_ray):
    """Two identical runs; one's worker gets SIGKILL mid-run: it is retried from its last checkpoint,
    and ends with the same weights as the one that ran through."""
    prompts = write_jsonl(tmp_path / "items.jsonl", [{"prompt": "a red cube", "item": "victim"},
                                                     {"prompt": "a red cube", "item": "reference"}])
    killed = {}

    def kill_once(progress):
        report = progress.running.get("victim") or {}
        if not killed and report.get("attempt") == 1 and report.get("step", 0) >= 3:
            killed["step"] = report["step"]
            os.kill(report["pid"], signal.SIGKILL)

    overrides = [*TINY, "steps=30", "trainer.checkpoint_every=1", "trainer.turntable_frames=0",
                 f"output_dir={tmp_path / 'out'}"]
    state = start_batch(QUICKSTART, prompts, overrides, BatchOptions(max_retries=1), on_progress=kill_once,
                        poll_s=0.1)
    assert killed, "the victim finished before it could be killed"
    victim, reference = state.items
    assert victim.status == reference.status == "done"
    assert victim.attempts == 2 and reference.attempts == 1
    first, second = victim.history
    assert first["outcome"] == "failed" and "died" in first["error"]
    assert second["outcome"] == "done" and 1 <= second["resumed_from"] < 30
    recorded = json.loads((state.batch_dir / "batch.json").read_text())["items"][0]
    assert recorded["attempts"] == 2 and recorded["history"][0]["outcome"] == "failed"
    a, b = final_tensors(state.batch_dir / "victim"), final_tensors(state.batch_dir / "reference")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_run_asks_ray_for_its_gpus(tmp_path, local_ray):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\n")
    overrides = [*TINY, "steps=1", "trainer.turntable_frames=0", f"output_dir={tmp_path / 'out'}"]
    state = start_batch(QUICKSTART, prompts, overrides, BatchOptions(gpus_per_run=1))
    assert state.items[0].status == "done"
    assert state.items[0].history[0]["resources"] == {"CPU": 1.0, "GPU": 1.0}
    with pytest.raises(Text3DError, match="no node with 2 GPU"):  # more than any node has: nothing starts
        start_batch(QUICKSTART, prompts, [*overrides, f"output_dir={tmp_path / 'out2'}"], BatchOptions(gpus_per_run=2))
    assert not (tmp_path / "out2").exists()


def test_ctrl_c_leaves_a_resumable_batch(tmp_path, local_ray):
    """SIGINT to the CLI: the running run saves a checkpoint and stops, exit 130 with the resume
    command; --resume skips the finished item and continues the other from its checkpoint."""
    prompts = write_jsonl(tmp_path / "items.jsonl", [{"prompt": "a red cube", "steps": 2, "item": "short"},
                                                     {"prompt": "a blue cone", "steps": 20000, "item": "long"}])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "text3d.cli", "batch", str(QUICKSTART), str(prompts), *TINY,
           "trainer.checkpoint_every=0", "trainer.turntable_frames=0", f"output_dir={out}", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            start_new_session=True)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            batches = list(out.glob("quickstart/batch@*"))
            if batches and (batches[0] / "short" / "metrics.json").is_file() and (batches[0] / "long" / "batch.log").is_file():
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the short run did not finish in time")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    batch_dir = batches[0]
    assert proc.returncode == 130, stderr.decode()
    assert stdout.decode().strip().splitlines()[-1] == str(batch_dir)
    assert f"text3d batch --resume {batch_dir}" in stderr.decode()
    data = json.loads((batch_dir / "batch.json").read_text())
    assert [it["status"] for it in data["items"]] == ["done", "interrupted"]
    assert data["items"][1]["history"][-1]["outcome"] == "interrupted" and "failed after" not in stderr.decode()
    saved_at = load_checkpoint(latest_checkpoint(batch_dir / "long")).meta["step"]  # saved on Ctrl-C
    assert 0 < saved_at < 20000 and not (batch_dir / "long" / "metrics.json").exists()
    short_stamp = (batch_dir / "short" / "metrics.json").stat().st_mtime_ns

    state = resume_batch(batch_dir, overrides=[f"steps={saved_at + 2}"])
    short, long = state.items
    assert short.status == "done" and short.attempts == 1
    assert (batch_dir / "short" / "metrics.json").stat().st_mtime_ns == short_stamp
    assert long.status == "done" and long.history[-1]["resumed_from"] == saved_at
    assert json.loads((batch_dir / "long" / "metrics.json").read_text())["steps"] == saved_at + 2


@pytest.mark.parametrize("removed", ["an item folder", "the batch folder"])
def test_a_removed_folder_fails_its_items_and_resume_runs_them_again(tmp_path, removed):
    """Remove a running item's folder (or the whole batch folder) under a real `text3d batch`: the run
    stops without re-creating half a folder, the batch ends with exit 1 ("failed", not "bad input"),
    batch.json says why, and --resume runs the lost items again from the start and continues the rest."""
    prompts = write_jsonl(tmp_path / "items.jsonl", [{"prompt": "a red cube", "item": "kept"},
                                                     {"prompt": "a blue cone", "item": "lost"}])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "text3d", "batch", str(QUICKSTART), str(prompts), *TINY, "steps=400",
           "trainer.turntable_frames=0", f"output_dir={out}", "--max-retries", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 240
        while not list(out.glob("quickstart/batch@*/lost/ckpts/last")):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.2)
        batch_dir = next(out.glob("quickstart/batch@*"))
        gone = batch_dir / "lost" if removed == "an item folder" else batch_dir
        os.rename(gone, tmp_path / "gone")  # at once (an rm -rf racing the run's own writes is the same to it)
        shutil.rmtree(tmp_path / "gone", ignore_errors=True)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr
    assert stdout.strip().splitlines()[-1] == str(batch_dir)
    assert "failed: lost: its run folder was removed" in stderr and "Traceback" not in stderr
    data = json.loads((batch_dir / "batch.json").read_text())
    lost = {it["item"]: it for it in data["items"]}["lost"]
    assert lost["status"] == "failed" and "removed" in lost["error"]
    assert not (batch_dir / "lost" / "ckpts").exists()  # the stopped run wrote nothing more

    state = resume_batch(batch_dir, overrides=["steps=6"], option_changes={"max_retries": 0})
    assert [it.status for it in state.items] == ["done", "done"]
    again = {it.item: it for it in state.items}["lost"]
    assert again.history[-1]["resumed_from"] == 0  # from the start: its checkpoints went with its folder
    assert json.loads((batch_dir / "lost" / "metrics.json").read_text())["steps"] == 6
