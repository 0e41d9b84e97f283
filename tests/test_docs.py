"""The README and docs/ cannot drift from the code: every relative link resolves, and every command
of every ```bash block runs.

``text3d`` commands run as written, at toy size: the verb's toy overrides (:data:`TOY`) are appended
(``key=value`` overrides and options are last-wins), Stable Diffusion presets run the tiny random SD
pipeline in place of the hub weights, and placeholders (``RUN_DIR``, ``outputs/<name>/<tag>@<timestamp>``,
``[steps=N]``, ...) stand for folders made here. They run in a work folder that links ``configs/``
and ``benchmarks/``, one block after another, so a block's later commands read what its earlier ones
wrote (``DIR=$(... | tail -1)`` included). Commands that need a cluster or a GPU are listed in
:data:`NOT_RUN` with the reason; a ``text3d`` one among them still has its config and flags checked
with ``--print-config``. Benchmark scripts run for minutes to hours: their documented arguments are
parsed with the script's own parser. The two install commands are CI's own (``.ci/run``); their
extras and their ``text3d`` tail are checked here.
"""

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RUN_TOY = ["steps=2", "trainer.val_every=0", "trainer.val_views=2", "trainer.val_resolution=16", "trainer.turntable_frames=2", "trainer.turntable_resolution=16",
           "trainer.checkpoint_every=0", "trainer.log_every=0", "export.resolution=24", "export.faces=300",
           "export.texture_size=0"]
TOY: Dict[str, List[str]] = {
    "run": RUN_TOY,
    "edit": [*RUN_TOY, "export.enabled=false", "edit.hold_steps=1", "edit.metric_views=2", "edit.metric_resolution=16",
             "refine.start_step=1", "refine.views=2", "refine.batch_size=1", "refine.sdedit_steps=4"],
    "batch": RUN_TOY,
    "multiview": ["sampler.steps=2"],
    "video": ["frames=3", "steps=4", "batch_size=4"],
    "train-prior": ["iterations=2", "batch_size=4", "log_every=1", "checkpoint_every=1", "snapshot_every=0",
                    "data.bank_views_per_shape=2", "data.bank_refresh_per_step=1", "model.unet_channels=[8,16,16]",
                    "model.norm_groups=4", "model.attention_heads=2", "model.text_hidden_size=16", "model.text_heads=2",
                    "model.text_layers=1", "model.text_intermediate_size=32"],
    "export": ["--resolution", "24", "--faces", "300", "--texture-size", "0"],
    "view": ["--html", "view.html", "--port", str(_free_port())],
}
"""Overrides appended to each verb's documented command so that it runs in seconds (a viewer writes its
page instead of serving until Ctrl-C)."""

SD_PRESETS = {"dreamfusion-sd", "gaussians-sd", "edit-pds", "edit-pds-gaussians", "multiview-sd", "video-sd",
              "prolificdreamer-sd", "luciddreamer-sd"}
"""Presets that load Stable Diffusion weights: at toy size they run the tiny random SD pipeline."""
SMALL_RENDERS = ["cameras.width=32", "cameras.height=32", "cameras.resolution_milestones=[]", "cameras.resolutions=[]"]
PRESET_TOY = {"train-latent-prior": ["vae.iterations=2", "vae.batch_size=2", "vae.scale_images=4", "model.resolution=16",
                                     "model.vae.channels=[8,8,8]", "model.vae.norm_groups=4", "views.iterations=2"]}
"""Toy overrides of one preset beyond its verb's (the latent recipe's VAE stage and view-set stage)."""
SD_TOY = {"multiview-sd": ["resolution=64"], "video-sd": ["resolution=64"], "edit-pds": SMALL_RENDERS,
          "edit-pds-gaussians": SMALL_RENDERS, "gaussians-sd": SMALL_RENDERS,
          "dreamfusion-sd": [*SMALL_RENDERS, "geometry.log2_hashmap_size=14"], "luciddreamer-sd": SMALL_RENDERS,
          "prolificdreamer-sd": [*SMALL_RENDERS, "geometry.log2_hashmap_size=14"]}
"""Extra toy overrides of SD presets (the tiny pipeline draws 64 px images)."""

NOT_RUN = {
    "ray start": "starts a Ray cluster node (a cluster, not this machine)",
    "text3d batch configs/dreamfusion-sd.yaml prompts.txt --address auto": "joins a Ray cluster with GPUs",
}
"""Documented commands this test does not run, by prefix, with the reason."""

PLACEHOLDERS = [
    (r"outputs/<name>/<tag>@<timestamp>", "{nerf}"),
    (r"\[steps=N\]", "steps=3"),
    (r"/path/to/sd-folder", "{tiny_sd}"),
    (r"\bGS_RUN_DIR\b|\bGS_RUN\b|\bGAUSSIAN_RUN\b", "{gaussians}"),
    (r"\bRUN_DIR\b|\bNERF_RUN\b", "{nerf}"),
]
"""Placeholder (regex) -> what it stands for here; ``outputs/X/Y@<...>`` and ``outputs/X/<run>`` are
the newest matching folder of the work folder."""


# ----------------------------------------------------------------------------------------------
# Links
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set:
    """GitHub's heading anchors of a markdown page."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no {file})")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.name}: {target} (no heading #{anchor} in {file.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_is_a_short_guide():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 350


# ----------------------------------------------------------------------------------------------
# Command blocks
def command_blocks() -> List[Tuple[str, List[str]]]:
    """``(page:line, commands)`` of every ```bash block (continuations joined, comments kept)."""
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"^([ \t]*)```bash\n(.*?)^\1```", text, flags=re.S | re.M):
            body = re.sub(r"\\\n\s*", " ", m.group(2))
            lines = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
            blocks.append((f"{page.name}:{text[:m.start()].count(chr(10)) + 1}", lines))
    return blocks


BLOCKS = command_blocks()


def test_the_pages_have_command_blocks():
    assert len(BLOCKS) >= 20 and any(page.startswith("README.md") for page, _ in BLOCKS)


class Workspace:
    """The work folder: ``configs/`` and ``benchmarks/`` linked, toy source runs, shell variables."""

    def __init__(self, root: Path, tiny_sd: Path):
        self.root, self.tiny_sd, self.vars = root, tiny_sd, {}
        self.done: set = set()  # a command the README and a docs page both show runs once
        for name in ("configs", "benchmarks"):
            (root / name).symlink_to(REPO / name)

    def newest(self, pattern: str) -> str:
        found = sorted(self.root.glob(pattern), key=lambda p: p.stat().st_mtime)
        assert found, f"no folder {pattern} in the work folder for a documented placeholder"
        return str(found[-1])

    def fill(self, line: str) -> str:
        """The line with its placeholders and ``$VARS`` replaced by real paths."""
        for var, value in self.vars.items():
            line = line.replace(f"${var}", value)
        line = re.sub(r"outputs/([\w.-]+)/([\w.-]+)@<[^>]+>", lambda m: self.newest(f"outputs/{m[1]}/{m[2]}@*"), line)
        line = re.sub(r"outputs/([\w.-]+)/<run>", lambda m: self.newest(f"outputs/{m[1]}/*@*"), line)
        for pattern, value in PLACEHOLDERS:
            line = re.sub(pattern, value.format(nerf=self.newest("outputs/quickstart/a_red_cube@*"),
                                                gaussians=self.newest("outputs/quickstart-gaussians/a_red_cube@*"),
                                                tiny_sd=self.tiny_sd), line)
        return line


def toy_argv(argv: List[str], tiny_sd: Path) -> List[str]:
    """A documented ``text3d`` command at toy size."""
    verb = argv[1]
    presets = [Path(a).stem for a in argv[2:] if a.endswith(".yaml")]
    extra = list(TOY.get(verb, []))
    if any(a.startswith("resume=") for a in argv):  # a resume may change only these (and keeps the doc's steps)
        extra = [e for e in extra if e.startswith(("trainer.", "export."))]
    for preset in presets:
        extra += PRESET_TOY.get(preset, [])
        if preset in SD_PRESETS:
            extra += [f"prior.model={tiny_sd}", *SD_TOY.get(preset, [])]
    off = {a.partition("=")[0] for a in argv if a.endswith("=0")}  # a stage the command turns off stays off
    return [*argv[1:], *[e for e in extra if e.partition("=")[0] not in off], "--no-progress"]


def run_text3d(argv: List[str], ws: Workspace, monkeypatch, capsys) -> str:
    from text3d.cli import main

    monkeypatch.chdir(ws.root)
    capsys.readouterr()
    code = main(toy_argv(argv, ws.tiny_sd))
    out, err = capsys.readouterr()
    assert code == 0, f"{' '.join(argv)} exited {code}: {err[-1500:]}"
    return out.strip().splitlines()[-1] if out.strip() else ""


def check_print_config(argv: List[str], ws: Workspace, monkeypatch, capsys) -> None:
    from text3d.cli import main

    monkeypatch.chdir(ws.root)
    capsys.readouterr()
    code = main([*argv[1:], "--print-config"])
    assert code == 0, f"{' '.join(argv)} --print-config: {capsys.readouterr().err[-1500:]}"


def check_pip(argv: List[str]) -> None:
    """A documented ``pip install``: torch pinned to the CPU wheel, or an extra the project declares."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for arg in argv[2:]:
        m = re.fullmatch(r"\.\[([\w,]+)\]", arg)
        if m:
            missing = set(m.group(1).split(",")) - set(extras)
            assert not missing, f"pip install {arg}: no extra {missing} in pyproject.toml"
        elif arg not in ("-e", ".", "-q") and not arg.startswith("torch=="):
            raise AssertionError(f"pip install {arg}: not a project extra")


def check_benchmark(argv: List[str]) -> None:
    """A benchmark command: the script exists and its parser takes the documented arguments."""
    script = REPO / argv[1]
    assert script.is_file(), argv[1]
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"docs_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))
    assert hasattr(module, "build_parser"), f"{argv[1]} has no build_parser() the docs test can check"
    module.build_parser().parse_args(argv[2:])


def run_line(line: str, ws: Workspace, monkeypatch, capsys) -> None:
    """One documented command line (see the module docstring for what each kind does)."""
    if line in ws.done:
        return
    ws.done.add(line)
    for prefix, _ in NOT_RUN.items():
        if line.startswith(prefix):
            argv = shlex.split(ws.fill(line), comments=True)
            if argv[0] == "text3d":
                check_print_config(argv, ws, monkeypatch, capsys)
            return
    m = re.fullmatch(r"(\w+)=\$\((.*)\|\s*tail -1\)", line)
    if m:  # DIR=$(text3d ... | tail -1)
        ws.vars[m.group(1)] = run_text3d(shlex.split(ws.fill(m.group(2))), ws, monkeypatch, capsys)
        return
    for part in line.split("&&"):
        argv = shlex.split(ws.fill(part), comments=True)
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # OMP_NUM_THREADS=1 python ...
            argv = argv[1:]
        if not argv:
            continue
        head = argv[0]
        if head == "text3d":
            run_text3d(argv, ws, monkeypatch, capsys)
        elif head == "pip":
            check_pip(argv)
        elif head == "python" and argv[1].startswith("benchmarks/"):
            check_benchmark(argv)
        elif head == "printf":
            subprocess.run(ws.fill(part), shell=True, cwd=ws.root, check=True)
        elif head in ("python3", ".", "pytest"):  # the venv, its activation and the suite: CI's own steps
            assert part.strip() in ("python3 -m venv .venv", ". .venv/bin/activate", "pytest -q"), part
        else:
            raise AssertionError(f"a documented command this test does not know how to run: {part!r}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_sd_dir):
    """The work folder with the documented source runs: the quickstart's "a red cube" as a NeRF and as
    Gaussians, a 3DGS ``scene.ply`` and a short ``clip.mp4``."""
    import imageio.v2 as imageio
    import numpy as np

    from text3d.cli import main

    ws = Workspace(tmp_path_factory.mktemp("docs"), tiny_sd_dir)
    cwd = Path.cwd()
    try:
        os.chdir(ws.root)
        for preset in ("quickstart", "quickstart-gaussians"):
            assert main(toy_argv(["text3d", "run", f"configs/{preset}.yaml", "prompt=a red cube"], tiny_sd_dir)) == 0
    finally:
        os.chdir(cwd)
    shutil.copy(ws.newest("outputs/quickstart-gaussians/a_red_cube@*") + "/gaussians.ply", ws.root / "scene.ply")
    frames = [np.roll(np.full((64, 64, 3), 40, np.uint8) + (np.indices((64, 64)).sum(0)[..., None] % 7 * 20)
                      .astype(np.uint8), 2 * i, axis=1) for i in range(4)]
    imageio.mimwrite(ws.root / "clip.mp4", frames, fps=4, macro_block_size=1)
    return ws


def python_blocks() -> List[Tuple[str, str]]:
    """``(page:line, code)`` of every ```python block."""
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            blocks.append((f"{page.name}:{text[:m.start()].count(chr(10)) + 1}", m.group(1)))
    return blocks


PYTHON_BLOCKS = python_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("where, code", PYTHON_BLOCKS, ids=[where for where, _ in PYTHON_BLOCKS])
def test_the_documented_python_runs(where, code, workspace, monkeypatch, capsys):
    """A Python example runs as written in the work folder; ``open_run`` gets the toy overrides."""
    import text3d.run

    real = text3d.run.open_run
    monkeypatch.setattr(text3d.run, "open_run", lambda path, overrides=(), **kw: real(path, [*overrides, *RUN_TOY], **kw))
    monkeypatch.chdir(workspace.root)
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    assert Path(capsys.readouterr().out.strip().splitlines()[-1]).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("where, lines", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_the_documented_commands_run(where, lines, workspace, monkeypatch, capsys):
    for line in lines:
        try:
            run_line(line, workspace, monkeypatch, capsys)
        except AssertionError as e:
            raise AssertionError(f"{where}: {line}\n{e}") from None
