"""A preset or an output folder of another command gets one line naming the file and the command it
belongs to, not "unknown key 'views'" with a long key list or "every checkpoint is damaged"; an empty
config.yaml in a source says so."""

import shutil
from pathlib import Path

import pytest

from text3d.cli import main
from text3d.prior.model import BUILTIN_PRIOR_DIR

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

PRESET_ROWS = [
    ("run", "multiview-quickstart", "text3d multiview"),
    ("run", "edit-quickstart", "text3d edit"),
    ("run", "video-quickstart", "text3d video"),
    ("run", "train-prior", "text3d train-prior"),
    ("batch", "edit-quickstart", "text3d edit"),
    ("batch", "multiview-quickstart", "text3d multiview"),
    ("multiview", "quickstart", "text3d run / text3d batch"),
    ("video", "quickstart", "text3d run / text3d batch"),
    ("video", "multiview-quickstart", "text3d multiview"),
    ("edit", "multiview-quickstart", "text3d multiview"),
    ("edit", "video-quickstart", "text3d video"),
    ("train-prior", "quickstart", "text3d run / text3d batch"),
]


@pytest.mark.parametrize("verb, preset, owner", PRESET_ROWS, ids=[f"{v} {p}" for v, p, _ in PRESET_ROWS])
def test_a_preset_of_another_command_names_it(verb, preset, owner, tmp_path, expect_bad_input, monkeypatch):
    (tmp_path / "prompts.txt").write_text("a red cube\n")
    monkeypatch.chdir(tmp_path)
    path = CONFIGS / f"{preset}.yaml"
    argv = [verb, path, *(["prompts.txt"] if verb == "batch" else []), f"output_dir={tmp_path / 'out'}"]
    line = expect_bad_input(argv, str(path), f"is a config of '{owner}'", f"'text3d {verb}' does not take",
                            watch=tmp_path)
    assert "valid keys" not in line


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_nerf_run):
    """A multiview folder, a (planned) batch folder, a run folder with an empty config.yaml, the built-in prior."""
    from text3d.batch.state import BatchOptions, plan_batch, write_item_configs
    from text3d.batch.summary import write_summary

    root = tmp_path_factory.mktemp("other-folders")
    assert main(["multiview", str(CONFIGS / "multiview-quickstart.yaml"), "prompt=a cube", "views=2",
                 "sampler.steps=1", f"output_dir={root / 'mv'}", "--no-progress"]) == 0
    (root / "prompts.txt").write_text("a red cube\n")
    state, configs = plan_batch(CONFIGS / "quickstart.yaml", root / "prompts.txt", [f"output_dir={root / 'b'}"],
                                BatchOptions())
    write_item_configs(state, configs)
    write_summary(state, contact_sheet=False)
    empty = shutil.copytree(tiny_nerf_run, root / "empty_config", symlinks=True)
    (empty / "config.yaml").write_text("")
    return {"multiview": next((root / "mv").glob("*/*@*")), "batch": state.batch_dir, "empty": empty,
            "prior": BUILTIN_PRIOR_DIR, "root": root}


FOLDER_ROWS = [
    (["edit", CONFIGS / "edit-quickstart.yaml", "source={multiview}", "target_prompt=a blue cube"],
     ["text3d multiview folder, not a run"]),
    (["video", CONFIGS / "video-quickstart.yaml", "source={multiview}", "prompt=a cube"],
     ["text3d multiview folder, not a run"]),
    (["export", "{multiview}"], ["text3d multiview folder, not a run"]),
    (["run", "resume={multiview}"], ["resume", "text3d multiview folder, not a run"]),
    (["export", "{batch}"], ["text3d batch folder, not a run"]),
    (["edit", CONFIGS / "edit-quickstart.yaml", "source={prior}", "target_prompt=a blue cube"],
     ["text3d train-prior folder, not a run"]),
    (["edit", CONFIGS / "edit-quickstart.yaml", "source={empty}", "target_prompt=a blue cube"],
     ["config.yaml is empty"]),
    (["export", "{empty}"], ["config.yaml is empty"]),
    (["run", "resume={empty}"], ["resume", "config.yaml is empty"]),
]


@pytest.mark.parametrize("argv, words", FOLDER_ROWS, ids=[" ".join(Path(str(a)).name for a in r[0]) for r in FOLDER_ROWS])
def test_a_folder_of_another_command_is_named(argv, words, folders, tmp_path, expect_bad_input):
    argv = [str(a).format(**folders) for a in argv]
    out = [f"output_dir={tmp_path / 'out'}"] if argv[0] in ("edit", "video") else []
    expect_bad_input([*argv, *out], *words, watch=folders["root"])
