"""A resume means what it records: an override on ``run``/``edit``/``batch --resume`` either takes effect
fully and is recorded (steps, device, trainer.*, export.*), or is refused with one line saying which
keys a resume may change; ``steps`` never drops below the step the resume continues from."""

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import EDIT_FAST
from text3d.cli import main

REPO = Path(__file__).resolve().parents[1]
RULE = "a resume may change only steps, device, trainer.*, logging.* and export.*"

RUN_ROWS = [
    (["prompt=a blue cone"], ["prompt", RULE]),
    (["seed=4"], ["seed", RULE]),
    (["guidance.guidance_scale=3"], ["guidance.guidance_scale", RULE]),
    (["geometry.n_levels=3"], ["geometry.n_levels", RULE]),
    (["name=other", "tag=x"], ["name, tag", RULE]),
    (["steps=1"], ["steps: 1 is below step 3", "steps >= 3"]),
]


@pytest.mark.parametrize("extra, words", RUN_ROWS, ids=[" ".join(r[0]) for r in RUN_ROWS])
def test_a_run_resume_refuses_what_it_cannot_honour(extra, words, tiny_run_dir, tmp_path, expect_bad_input):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    expect_bad_input(["run", f"resume={run}", *extra], *words, watch=tmp_path)


def test_a_resume_override_it_honours_takes_effect_and_is_recorded(tiny_run_dir, tmp_path):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    assert main(["run", f"resume={run}", "steps=4", "trainer.log_every=1", "export.enabled=false", "--no-progress"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["steps"], saved["trainer"]["log_every"], saved["export"]["enabled"]) == (4, 1, False)
    assert (run / "ckpts" / "last").resolve().name == "step-000004"


@pytest.fixture(scope="module")
def edit_dir(tiny_nerf_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("edits")
    assert main(["edit", str(REPO / "configs" / "edit-quickstart.yaml"), f"source={tiny_nerf_run}",
                 "target_prompt=a blue cube", f"output_dir={out}", "steps=2", *EDIT_FAST, "--no-progress"]) == 0
    return next(out.glob("*/*@*"))


EDIT_ROWS = [
    (["target_prompt=a green cube"], ["edit.target_prompt", RULE]),
    (["source={other}"], ["edit.source", RULE]),
    (["guidance.type=dds"], ["guidance.type", RULE]),
    (["steps=1"], ["steps: 1 is below step 2"]),
]


@pytest.mark.parametrize("extra, words", EDIT_ROWS, ids=[" ".join(r[0]) for r in EDIT_ROWS])
def test_an_edit_resume_refuses_what_it_cannot_honour(extra, words, edit_dir, tiny_run_dir, tmp_path,
                                                      expect_bad_input):
    copy = shutil.copytree(edit_dir, tmp_path / "edit", symlinks=True)
    extra = [e.format(other=tiny_run_dir) for e in extra]
    expect_bad_input(["edit", f"resume={copy}", *extra], *words, watch=tmp_path)


@pytest.fixture
def batch_dir(tmp_path, tiny_run_dir):
    """A planned batch of two items (no Ray needed): one run folder holds a checkpoint at step 3."""
    from text3d.batch.state import BatchOptions, plan_batch, write_item_configs
    from text3d.batch.summary import write_summary

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na blue sphere\n")
    state, configs = plan_batch(REPO / "configs" / "quickstart.yaml", prompts, [f"output_dir={tmp_path / 'out'}"],
                                BatchOptions())
    write_item_configs(state, configs)
    write_summary(state, contact_sheet=False)
    shutil.copytree(tiny_run_dir / "ckpts", state.batch_dir / "a_red_cube" / "ckpts", symlinks=True)
    return state.batch_dir


BATCH_ROWS = [
    (["prompt=a green cone"], ["prompt", RULE]),
    (["cameras.width=64"], ["cameras.width", RULE]),
    (["steps=2"], ["steps: 2 is below step 3", "a_red_cube"]),
]


@pytest.mark.parametrize("extra, words", BATCH_ROWS, ids=[" ".join(r[0]) for r in BATCH_ROWS])
def test_a_batch_resume_follows_the_same_rule(extra, words, batch_dir, expect_bad_input):
    expect_bad_input(["batch", "--resume", batch_dir, *extra, "--no-progress"], *words, watch=batch_dir)


def test_a_damaged_metrics_json_is_named_and_the_item_continues(batch_dir, caplog):
    """It was a JSONDecodeError traceback: now the item is not done (its run continues from its last
    checkpoint and writes metrics.json again), with a warning naming the file."""
    from text3d.batch.state import load_batch

    (batch_dir / "a_red_cube" / "metrics.json").write_text('{"steps": 4, "wall')
    with caplog.at_level("WARNING"):
        state = load_batch(batch_dir)
    item = {it.item: it for it in state.items}["a_red_cube"]
    assert item.status == "pending" and item.metrics == {}
    assert any("metrics.json is damaged" in r.getMessage() for r in caplog.records)
