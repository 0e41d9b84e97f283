"""One CLI convention for every verb: the same common flags, ``--print-config`` printing the config a
verb would run with (reloadable, nothing written), and ``import text3d.cli`` loading no model code."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from text3d.cli import VERB_MODULES, build_parser, main
from text3d.cli.common import COMMON_FLAGS
from text3d.cli.common import VERBS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _subparsers(parser: argparse.ArgumentParser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _flags(parser: argparse.ArgumentParser):
    return {s for a in parser._actions for s in a.option_strings}


def test_every_verb_and_the_command_itself_have_the_common_flags():
    parser = build_parser()
    verbs = _subparsers(parser)
    assert set(verbs) == set(VERBS) == {"run", "export", "edit", "multiview", "video", "batch", "view", "train-prior"}
    assert set(COMMON_FLAGS) <= _flags(parser)
    for name, sub in verbs.items():
        missing = set(COMMON_FLAGS) - _flags(sub)
        assert not missing, f"text3d {name} lacks {sorted(missing)}"


@pytest.mark.parametrize("argv", [["--help"], *[[verb, "--help"] for verb in VERB_MODULES]],
                         ids=["text3d", *VERB_MODULES])
def test_each_help_lists_the_common_flags(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in COMMON_FLAGS:
        assert flag in out, (argv, flag)


def test_a_common_flag_may_come_before_the_verb(tmp_path, capsys):
    code = main(["--print-config", "run", str(CONFIGS / "quickstart.yaml"), "steps=3", f"output_dir={tmp_path}"])
    assert code == 0 and yaml.safe_load(capsys.readouterr().out)["steps"] == 3
    assert list(tmp_path.iterdir()) == []


def _printed(argv, capsys):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return yaml.safe_load(out)


def test_print_config_of_each_verb_is_the_config_it_would_run_with(tmp_path, capsys, tiny_nerf_run):
    """Each verb prints its resolved config (overrides applied, defaults filled in), loads no model and
    writes nothing; a printed run config loads back as the same config."""
    from text3d.run.config import load_config, to_yaml

    out = tmp_path / "out"
    run = _printed(["run", CONFIGS / "quickstart.yaml", "prompt=a blue cone", "steps=7", f"output_dir={out}",
                    "--print-config"], capsys)
    assert (run["prompt"], run["steps"], run["prior"]["type"]) == ("a blue cone", 7, "pixel")
    saved = tmp_path / "printed.yaml"
    saved.write_text(yaml.safe_dump(run))
    assert to_yaml(load_config(saved)) == to_yaml(load_config(CONFIGS / "quickstart.yaml", [
        "prompt=a blue cone", "steps=7", f"output_dir={out}"]))
    edit = _printed(["edit", CONFIGS / "edit-quickstart.yaml", f"source={tiny_nerf_run}", "target_prompt=a blue cube",
                     f"output_dir={out}", "--print-config"], capsys)
    assert edit["prompt"] == edit["edit"]["target_prompt"] == "a blue cube"
    assert edit["edit"]["source_prompt"] == "a red cube" and edit["geometry"]["type"] == "implicit-volume"
    multiview = _printed(["multiview", CONFIGS / "multiview-quickstart.yaml", "prompt=a cube", "views=6",
                          "--print-config"], capsys)
    assert (multiview["views"], multiview["prompt"]) == (6, "a cube") and "sampler" in multiview
    video = _printed(["video", CONFIGS / "video-quickstart.yaml", f"source={tiny_nerf_run}", "frames=5",
                      "--print-config"], capsys)
    assert video["frames"] == 5 and video["prior"]["type"] == "pixel"
    recipe = _printed(["train-prior", CONFIGS / "train-prior.yaml", "iterations=12", "--print-config"], capsys)
    assert recipe["iterations"] == 12
    export = _printed(["export", tiny_nerf_run, "faces=1234", "--resolution", "64", "--print-config"], capsys)
    assert (export["faces"], export["resolution"], export["texture_size"]) == (1234, 64, 1024)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    batch = _printed(["batch", CONFIGS / "quickstart.yaml", prompts, "steps=9", "--print-config"], capsys)
    assert batch["steps"] == 9
    assert not out.exists()


def test_export_options_and_settings_name_what_was_wrong(tiny_nerf_run, capsys):
    """An option is named as an option, a key=value setting by its key; the setting wins over the option."""
    assert main(["export", str(tiny_nerf_run), "--faces", "-1", "--print-config"]) == 2
    assert "--faces" in capsys.readouterr().err
    assert main(["export", str(tiny_nerf_run), "faces=-1", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: faces") and "--faces" not in err
    assert _printed(["export", tiny_nerf_run, "--faces", "100", "faces=200", "--print-config"], capsys)["faces"] == 200


def test_no_progress_prints_no_bar_and_the_folder_last(tmp_path):
    """``--no-progress`` on a verb that had none before (multiview): the output folder is still the last line."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "text3d", "multiview", str(CONFIGS / "multiview-quickstart.yaml"),
                           "prompt=a cube", "views=2", "sampler.steps=2", f"output_dir={out}", "--no-progress"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    last = Path(proc.stdout.strip().splitlines()[-1])
    assert last.parent.parent == out and (last / "multiview.json").is_file()
    assert "it/s" not in proc.stderr and "step/s" not in proc.stderr


def test_importing_the_cli_loads_no_model_code_or_optional_extra():
    code = ("import sys, json, text3d.cli; "
            "print(json.dumps(sorted(m for m in ('torch', 'ray', 'cv2', 'diffusers', 'transformers', 'numpy') "
            "if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(proc.stdout) == []
