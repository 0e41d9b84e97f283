"""Bad input to ``text3d edit``: one line on stderr starting with ``error:``, exit status 2, no
traceback, nothing written. Each row: (argv after the preset and output_dir, words the line must hold)."""

import logging
import shutil
from pathlib import Path

import pytest

from conftest import EDIT_FAST
from text3d.cli import main

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "edit-quickstart.yaml"


@pytest.fixture(scope="module")
def sources(tiny_nerf_run, tmp_path_factory):
    """Broken sources next to a good one: no checkpoint, truncated checkpoints, a text file, a mesh .ply."""
    root = tmp_path_factory.mktemp("bad-sources")
    no_ckpt = root / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(tiny_nerf_run / "config.yaml", no_ckpt / "config.yaml")
    truncated = root / "truncated"
    shutil.copytree(tiny_nerf_run, truncated, symlinks=True)
    for st in (truncated / "ckpts").glob("step-*/state.safetensors"):
        st.write_bytes(st.read_bytes()[:100])
    (root / "notes.txt").write_text("not a scene\n")
    (root / "mesh.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    return {"good": tiny_nerf_run, "no_ckpt": no_ckpt, "truncated": truncated, "root": root,
            "txt": root / "notes.txt", "mesh_ply": root / "mesh.ply", "plain_dir": root}


ROWS = [
    (["source={plain_dir}", "target_prompt=a blue cube"], ["source", "neither"]),
    (["source={root}/missing", "target_prompt=a blue cube"], ["source", "does not exist"]),
    (["source={txt}", "target_prompt=a blue cube"], ["source", "neither"]),
    (["source={mesh_ply}", "source_prompt=a cube", "target_prompt=a blue cube"], ["ascii", "binary_little_endian"]),
    (["source={no_ckpt}", "target_prompt=a blue cube"], ["no checkpoint"]),
    (["source={truncated}", "target_prompt=a blue cube"], ["damaged"]),
    (["source={good}"], ["target_prompt", "missing or empty"]),
    (["source={good}", "target_prompt="], ["target_prompt", "missing or empty"]),
    (["source={good}", "target_prompt=  "], ["target_prompt", "missing or empty"]),
    (["target_prompt=a blue cube"], ["source", "missing"]),
    (["source={good}", "target_prompt=a blue cube", "renderer.type=gaussian-splatting"], ["renderer.type", "does not draw"]),
    (["source={good}", "target_prompt=a blue cube", "geometry.type=gaussians"], ["geometry.type", "cannot change"]),
    (["source={good}", "target_prompt=a blue cube", "guidance.type=sds"], ["guidance.type", "not an editing guidance"]),
    (["source={good}", "target_prompt=a blue cube", "guidance.type=pdss"], ["guidance.type", "valid choices"]),
    (["source={good}", "target_prompt=a blue cube", "guidance.coefficients=twostep"], ["guidance.coefficients"]),
    (["source={good}", "target_prompt=a blue cube", "edit.hold_steps=0"], ["edit.hold_steps"]),
    (["source={good}", "target_prompt=a blue cube", "edit.colour=1"], ["unknown key", "edit.colour"]),
    (["source={good}", "target_prompt=a blue cube", "cameras.width=16", "cameras.height=16"],
     ["cameras.width", "cannot meet", "64 px"]),
    (["source={good}", "target_prompt=a blue cube", "refine.enabled=true"], ["refine.start_step", "steps=200"]),
    (["source={good}", "target_prompt=a blue cube", "refine.every=0"], ["refine.every"]),
    (["source={good}", "target_prompt=a blue cube", "refine.views=0"], ["refine.views"]),
    (["source={good}", "target_prompt=a blue cube", "refine.loss=l3"], ["refine.loss", "l2, l1"]),
    (["source={good}", "target_prompt=a blue cube", "refine.skip_min=0.95"], ["refine.skip_min", "swap"]),
    (["source={good}", "target_prompt=a blue cube", "refine.skip_max=1.0"], ["refine.skip_max", "none to run"]),
    (["source={good}", "target_prompt=a blue cube", "refine.eta=2"], ["refine.eta"]),
    (["source={good}", "target_prompt=a blue cube", "steps=0"], ["steps", "at least 1 step", "unchanged"]),
    (["source={good}", "target_prompt=a blue cube", "refine.guidance_scale=nan"], ["refine.guidance_scale"]),
    (["source={good}", "target_prompt=a blue cube", "refine.batch_size=32"], ["refine.batch_size", "cached views"]),
    (["source={good}", "target_prompt=a blue cube", "refine.colour=1"], ["unknown key", "refine.colour"]),
    (["source={good}", "target_prompt=a blue cube", "edit.smooth_chroma=-1"], ["edit.smooth_chroma", "-1"]),
    (["source={good}", "target_prompt=a blue cube", "edit.recolour_hidden=true"], ["edit.recolour_hidden", "implicit-volume"]),
]


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


@pytest.mark.parametrize("row, words", ROWS)
def test_bad_edit_input(row, words, sources, tiny_sd_dir, tmp_path, capsys):
    out_dir = tmp_path / "outputs"
    argv = ["edit", str(PRESET), "prior.type=stable-diffusion", f"prior.model={tiny_sd_dir}", f"output_dir={out_dir}",
            *EDIT_FAST, *[item.format(**sources) for item in row], "--no-progress"]
    code, err, _ = _run(argv, capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "Traceback" not in err[0]
    for word in words:
        assert word in err[0], (word, err[0])
    assert not out_dir.exists()  # nothing written


def test_run_verb_refuses_editing_guidances(tmp_path, tiny_sd_dir, capsys):
    out_dir = tmp_path / "outputs"
    code, err, _ = _run(["run", str(REPO / "configs" / "smoke-tiny-sd.yaml"), f"prior.model={tiny_sd_dir}",
                         f"output_dir={out_dir}", "guidance.type=pds", "--no-progress"], capsys)
    assert code == 2 and len(err) == 1 and "text3d edit" in err[0] and not out_dir.exists()


def test_resume_mixups_say_which_verb(tiny_nerf_run, capsys):
    code, err, _ = _run(["edit", f"resume={tiny_nerf_run}"], capsys)
    assert code == 2 and len(err) == 1 and "text3d run resume=" in err[0]


def test_same_prompt_warns_nothing_to_edit(sources, tiny_sd_dir, tiny_prior, tmp_path, caplog):
    from text3d.edit import open_edit

    with caplog.at_level(logging.WARNING, logger="text3d.edit"):
        open_edit(PRESET, ["prior.type=stable-diffusion", f"prior.model={tiny_sd_dir}",
                           f"output_dir={tmp_path / 'outputs'}", f"source={sources['good']}",
                           "target_prompt=a red cube", *EDIT_FAST], prior=tiny_prior)
    assert any("nothing to edit" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "outputs").exists()


def test_an_output_dir_that_cannot_be_written_is_refused_before_the_prior_loads(sources, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub"):
        code, err, _ = _run(["edit", str(PRESET), f"source={sources['good']}", "target_prompt=a blue cube",
                             f"output_dir={out}", "--no-progress"], capsys)
        assert code == 2 and len(err) == 1 and "output_dir" in err[0] and "is a file" in err[0], err
    assert a_file.read_text() == "x"
