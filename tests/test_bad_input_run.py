"""`text3d run` (and `run resume=`) with bad input: exit 2, one line naming the problem, nothing written.

Table-driven: each row is (overrides or argv pieces, words the message must hold). New verbs get a
file like this one (tests/test_bad_input_<verb>.py) built on the ``expect_bad_input`` fixture.
"""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"

BAD_OVERRIDES = [
    (["guidance.guidance_scale=nan"], ["guidance.guidance_scale", "finite"]),
    (["guidance.guidance_scale=inf"], ["guidance.guidance_scale", "finite"]),
    (["guidance.guidance_scale=-1"], ["guidance.guidance_scale", "[0, inf)"]),
    (["optimizer.lr.encoding=-0.01"], ["optimizer.lr.encoding", "[0, inf)"]),
    (["optimizer.default_lr=-1"], ["optimizer.default_lr"]),
    (["optimizer.betas=[0.9, 1.5]"], ["optimizer.betas[1]"]),
    (["cameras.width=0"], ["cameras.width", "[1, 8192]"]),
    (["cameras.height=-5"], ["cameras.height"]),
    (["cameras.batch_size=0"], ["cameras.batch_size"]),
    (["cameras.fovy_range=[10, 200]"], ["cameras.fovy_range[1]", "(0, 180)"]),
    (["trainer.turntable_fps=0"], ["trainer.turntable_fps", "[1, 240]"]),
    (["trainer.val_resolution=0"], ["trainer.val_resolution"]),
    (["trainer.keep_checkpoints=0"], ["trainer.keep_checkpoints"]),
    (["renderer.num_samples_per_ray=0"], ["renderer.num_samples_per_ray"]),
    (["geometry.radius=0"], ["geometry.radius", "(0, inf)"]),
    (["loss.lambda_sparsity=-1"], ["loss.lambda_sparsity"]),
    (["loss.lambda_gaussian_opacity=0.1"], ["loss.lambda_gaussian_opacity", "geometry.type gaussians"]),
    (["guidance.t_max=1.5"], ["guidance.t_max"]),
    (["export.size=nan"], ["export.size", "finite"]),
    (["export.min_component_ratio=2"], ["export.min_component_ratio", "[0, 1]"]),
    (["seed=18446744073709551616"], ["seed", "64 bits"]),
    (["seed=-1"], ["seed", "[0, 9223372036854775807]"]),
    (["seed=1.5"], ["seed", "integer", "'1.5'"]),
    (["steps=-3"], ["steps", "[0, inf)"]),
    (["steps={"], ["steps", "integer", "'{'"]),
    (["steps=ten"], ["steps", "integer"]),
    (["cameras.elevation_range=[0, {"], ["cameras.elevation_range"]),
    (["trainer.val_every=yes"], ["trainer.val_every", "integer"]),
    (["export.enabled=maybe"], ["export.enabled", "true or false"]),
    (["device=mps"], ["device", "mps"]),
    (["device=cuda:7"], ["device", "cuda:7"]),
    (["device=tpu"], ["device", "tpu", "valid choices"]),
    (["guidance.guidance_scal=5"], ["guidance.guidance_scal", "did you mean 'guidance_scale'"]),
    (["geometry.type=voxels"], ["geometry.type", "voxels", "valid choices"]),
    (["noequals"], ["noequals", "key.path=value"]),
    (["=5"], ["key.path=value"]),
    (["a..b=1"], ["key.path=value"]),
    (["prompt=a", "prompt.x=b"], ["conflicts"]),
]


@pytest.mark.parametrize("extra,words", BAD_OVERRIDES, ids=[" ".join(r[0]) for r in BAD_OVERRIDES])
def test_bad_override_is_one_line_and_writes_nothing(tmp_path, expect_bad_input, extra, words):
    out = tmp_path / "outputs"
    expect_bad_input(["run", QUICKSTART, f"output_dir={out}", *extra, "--no-progress"], *words, watch=tmp_path)
    assert not out.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_FILES = [
    ("missing.yaml", None, ["not found"]),
    ("adir", "dir", ["is a directory"]),
    ("scalar.yaml", b"just a sentence\n", ["mapping", "str"]),
    ("list.yaml", b"- a\n- b\n", ["mapping", "list"]),
    ("latin1.yaml", "prompt: caf\xe9\n".encode("latin-1"), ["not UTF-8", "0xe9"]),
    ("broken.yaml", b"prompt: [unclosed\n", ["not valid YAML"]),
]


@pytest.mark.parametrize("name,content,words", BAD_FILES, ids=[r[0] for r in BAD_FILES])
def test_bad_config_file(tmp_path, expect_bad_input, name, content, words):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        _write(path, content)
    expect_bad_input(["run", path, f"output_dir={tmp_path / 'outputs'}"], str(path), *words, watch=tmp_path)


def test_unwritable_output_dir_is_found_before_any_model_loads(tmp_path, expect_bad_input):
    blocker = _write(tmp_path / "a_file", b"x")
    expect_bad_input(["run", QUICKSTART, f"output_dir={blocker}"], "output_dir", "is a file", watch=tmp_path)
    expect_bad_input(["run", QUICKSTART, f"output_dir={blocker / 'below'}"], "output_dir", "is a file",
                     watch=tmp_path)
    expect_bad_input(["run", QUICKSTART, "output_dir=/proc/text3d-outputs"], "output_dir", "cannot write",
                     watch=tmp_path)


# ---------------------------------------------------------------------------------------- resume
def test_resume_of_a_folder_that_is_not_a_run(tmp_path, expect_bad_input):
    expect_bad_input(["run", f"resume={tmp_path}"], "resume", "not a run directory", watch=tmp_path)


def test_resume_with_another_geometry_type_says_what_differs(tiny_run_dir, tmp_path, expect_bad_input):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    expect_bad_input(["run", f"resume={run}", "geometry.type=gaussians"], "geometry.type=gaussians",
                     "implicit-volume", "keeps its components", watch=tmp_path)


def test_resume_with_a_model_changing_override_names_it(tiny_run_dir, tiny_sd_dir, tmp_path, expect_bad_input):
    """Refused by the resume rule (tests/test_bad_input_resume.py) before the model is built."""
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    line = expect_bad_input(["run", f"resume={run}", "geometry.n_levels=3"], "geometry.n_levels",
                            "cannot change on a resume", watch=tmp_path)
    assert line.rstrip().endswith("to change the rest")  # the whole sentence, not cut off


def test_a_config_edited_after_the_checkpoint_says_what_differs(tiny_run_dir, tmp_path, expect_bad_input):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    saved = run / "config.yaml"
    saved.write_text(saved.read_text().replace("n_levels: 8", "n_levels: 3"))
    line = expect_bad_input(["run", f"resume={run}"], "does not fit the model", "differ in shape", watch=tmp_path)
    assert line.rstrip().endswith("restore it")


def _damage_all(run: Path) -> None:
    for ckpt in (run / "ckpts").glob("step-*"):
        st = ckpt / "state.safetensors"
        st.write_bytes(st.read_bytes()[: st.stat().st_size // 3])


def test_resume_when_every_checkpoint_is_damaged(tiny_run_dir, tmp_path, expect_bad_input):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    _damage_all(run)
    expect_bad_input(["run", f"resume={run}", "steps=4"], "every checkpoint", "damaged", "state.safetensors",
                     watch=tmp_path)


def test_command_line_errors_are_one_line(tmp_path, expect_bad_input):
    expect_bad_input(["run", QUICKSTART, "--bogus"], "unrecognized arguments: --bogus", watch=tmp_path)
    expect_bad_input(["bogus"], "invalid choice: 'bogus'", watch=tmp_path)
    expect_bad_input(["run"], "config file is needed", watch=tmp_path)


def test_a_component_section_given_a_value_is_one_line(tmp_path, expect_bad_input):
    """``material=no-material`` (a value for a section) used to end in a TypeError traceback."""
    expect_bad_input(["run", REPO / "configs" / "quickstart-gaussians.yaml", "material=no-material",
                      f"output_dir={tmp_path / 'o'}"], "material: a section of keys", "material.type=no-material",
                     watch=tmp_path)


def test_a_new_component_type_drops_the_old_types_settings():
    """``material.type=no-material`` on a preset whose material has ``ambient`` (camera-light) starts the
    section again from the new type's defaults, as ``guidance.type=`` does for edits; the preset's own
    type keeps its settings, and an override of one of them still applies."""
    from text3d.run.config import load_config

    preset = REPO / "configs" / "quickstart-gaussians.yaml"
    assert load_config(preset).material.ambient == 0.8
    assert load_config(preset, ["material.type=no-material"]).material.type == "no-material"
    assert load_config(preset, ["material.type=camera-light"]).material.ambient == 0.8
    assert load_config(preset, ["material.ambient=0.5"]).material.ambient == 0.5


def test_gaussians_from_a_nerf_run_whose_checkpoints_are_all_damaged(tiny_run_dir, tmp_path, expect_bad_input):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    _damage_all(run)
    expect_bad_input(["run", REPO / "configs" / "quickstart-gaussians.yaml", "geometry.init=nerf",
                      f"geometry.init_path={run}", f"output_dir={tmp_path / 'o'}", "steps=1"],
                     "every checkpoint", "damaged", watch=tmp_path)


def test_gaussians_from_a_nerf_run_with_a_damaged_newest_checkpoint_fall_back(tiny_run_dir, tmp_path, caplog):
    from text3d.scene.rundir import load_geometry

    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    newest = (run / "ckpts" / "last").resolve()
    (newest / "state.json").write_text('{"step": 3, "optimizer_param_')
    with caplog.at_level("WARNING"):
        _, source = load_geometry(run)
    assert source["step"] == 2 and any("state.json" in r.getMessage() for r in caplog.records)


def test_resume_falls_back_to_the_newest_intact_checkpoint(tiny_run_dir, tmp_path, caplog):
    from text3d.run import open_run

    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    newest = (run / "ckpts" / "last").resolve()
    (newest / "state.safetensors").write_bytes(b"")
    with caplog.at_level("WARNING"):
        resumed = open_run(None, [f"resume={run}", "steps=4"])
    assert resumed.step == 2
    assert any("state.safetensors" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
