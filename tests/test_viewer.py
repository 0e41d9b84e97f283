"""text3d view in a real browser: the server started as a user starts it, the page opened in headless
Chromium (Debian's, software WebGL), a screenshot checked for the object — enough pixels of the run's
own colour in the middle of the view — for a NeRF run, a Gaussian run and the --html page opened from
disk; and its bad input."""

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from browser import chromium, screenshot
from text3d.cli import main

pytest.importorskip("viser")
needs_browser = pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install chromium)")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A NeRF quickstart of "a red cube" and a Gaussian quickstart of "a blue sphere", short but
    clearly coloured (the embedded prior, CPU)."""
    out = tmp_path_factory.mktemp("viewer-runs")
    small = ["trainer.turntable_frames=0", "trainer.val_every=0", f"output_dir={out}", "--no-progress"]
    assert main(["run", str(REPO / "configs" / "quickstart.yaml"), "prompt=a red cube", "steps=80",
                 "export.resolution=48", "export.faces=2000", *small]) == 0
    assert main(["run", str(REPO / "configs" / "quickstart-gaussians.yaml"), "prompt=a blue sphere", "steps=80",
                 "export.enabled=false", *small]) == 0
    return {"nerf": next(out.glob("quickstart/*@*")), "gaussians": next(out.glob("quickstart-gaussians/*@*"))}


def serve(path: Path, *args) -> tuple:
    """``text3d view PATH`` in the background; returns the process and the URL it printed last."""
    proc = subprocess.Popen([sys.executable, "-m", "text3d", "view", str(path), *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().strip()  # the URL, once the scene is up
    assert line.startswith("http://"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def object_pixels(png: Path, colour: str) -> float:
    """The share of the view's middle (left of the side panel) that shows the named colour."""
    import imageio.v3 as iio

    image = iio.imread(png)[..., :3].astype(int)
    h, w = image.shape[:2]
    middle = image[h // 4: 3 * h // 4, w // 4: 3 * w // 5]
    r, g, b = middle[..., 0], middle[..., 1], middle[..., 2]
    mask = {"red": (r > 120) & (r > g + 60) & (r > b + 60), "blue": (b > 120) & (b > r + 60) & (b > g + 40)}[colour]
    return float(mask.mean())


@needs_browser
@pytest.mark.parametrize("kind, colour", [("nerf", "red"), ("gaussians", "blue")])
def test_the_viewer_draws_the_run(runs, kind, colour, tmp_path):
    proc, url = serve(runs[kind], "--port", str(free_port()))
    try:
        shot = screenshot(url.replace("localhost", "127.0.0.1"), tmp_path / "view.png", wait_s=8)
    finally:
        stop(proc)
    assert object_pixels(shot, colour) > 0.03, f"too few {colour} pixels in {shot}"


@needs_browser
@pytest.mark.parametrize("kind, colour", [("nerf", "red"), ("gaussians", "blue")])
def test_the_html_page_draws_the_scene_from_disk(runs, kind, colour, tmp_path, capsys):
    page = tmp_path / "scene.html"
    assert main(["view", str(runs[kind]), "--html", str(page), "--port", str(free_port())]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(page)
    shot = screenshot(page.as_uri(), tmp_path / "page.png", wait_s=8)
    assert object_pixels(shot, colour) > 0.03, f"too few {colour} pixels in {shot}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_use_moves_to_the_next_free_one(runs):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc, url = serve(runs["gaussians"], "--port", str(port))
        try:
            assert int(url.rsplit(":", 1)[1]) != port
        finally:
            stop(proc)
        assert f"port {port} is in use" in proc.stderr.read()


def test_a_folder_it_cannot_show_is_one_line(tmp_path, expect_bad_input):
    expect_bad_input(["view", tmp_path], "not a text3d folder", watch=tmp_path)
    expect_bad_input(["view", tmp_path / "missing"], "path", "is not a folder", watch=tmp_path)
    expect_bad_input(["view", REPO / "configs"], "not a text3d folder")


def test_without_viser_the_viewer_says_how_to_install_it(runs):
    code = ("import sys; sys.modules['viser'] = None; from text3d.cli import main; "
            f"sys.exit(main(['view', {str(runs['nerf'])!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and 'pip install -e ".[viewer]"' in lines[0], proc.stderr


@needs_browser
def test_a_run_shows_itself_while_it_trains(tmp_path):
    """``text3d run ... --viewer``: the URL on stderr while it trains, the scene drawn in the browser,
    the run's folder printed last when it ends."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "text3d", "run", str(REPO / "configs" / "quickstart.yaml"),
                             "prompt=a red cube", "steps=120", "trainer.turntable_frames=0", "trainer.val_every=0",
                             "export.enabled=false", f"output_dir={tmp_path}", "--viewer", f"viewer_port={port}",
                             "--no-progress"], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = ""
        while "viewer: http://" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the run ended without a viewer"
        url = re.search(r"http://\S+", line).group(0).replace("localhost", "127.0.0.1")
        shot = screenshot(url, tmp_path / "live.png", wait_s=10)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert Path(out.strip().splitlines()[-1]).parent.parent == tmp_path
    import imageio.v3 as iio

    image = iio.imread(shot)[..., :3].astype(int)
    h, w = image.shape[:2]
    middle = image[h // 4: 3 * h // 4, w // 4: 3 * w // 5]
    assert (middle.min(axis=-1) < 200).mean() > 0.03, "no scene in the middle of the view"


class _Run:
    """What the live viewer reads of a run."""

    def __init__(self):
        import torch

        self.step, self.cfg = 0, type("Cfg", (), {"steps": 10, "prompt": "a red cube"})()
        self.system = type("System", (), {"render": lambda *a, **k: {"rgb": torch.zeros(1, 8, 8, 3)}})()


def test_pause_holds_the_training_loop_until_resumed():
    import threading

    from text3d.view.live import LiveViewer

    viewer = LiveViewer(_Run(), port=free_port())
    try:
        viewer(1, {"loss": 2.0})  # not paused: returns at once
        viewer.toggle()
        assert viewer.paused and viewer.button.label == "resume training"
        done = threading.Event()
        worker = threading.Thread(target=lambda: (viewer(2, {"loss": 1.0}), done.set()), daemon=True)
        worker.start()
        assert not done.wait(0.5)  # the step after a pause waits
        viewer.toggle()
        assert done.wait(5) and viewer.steps == [1, 2]
    finally:
        viewer.close()


def non_background(png: Path) -> float:
    """The share of the view's middle that is not the white background."""
    import imageio.v3 as iio

    image = iio.imread(png)[..., :3].astype(int)
    h, w = image.shape[:2]
    return float((image[h // 4: 3 * h // 4, w // 4: 3 * w // 5].min(axis=-1) < 200).mean())


@pytest.fixture(scope="module")
def batch_dir(runs, tmp_path_factory):
    """A batch folder whose two items are the module's finished runs."""
    import shutil

    from text3d.batch.state import BatchOptions, load_batch, plan_batch, write_item_configs
    from text3d.batch.summary import write_summary

    root = tmp_path_factory.mktemp("viewer-batch")
    (root / "prompts.txt").write_text("a red cube\na blue sphere\n")
    state, configs = plan_batch(REPO / "configs" / "quickstart.yaml", root / "prompts.txt",
                                [f"output_dir={root / 'out'}"], BatchOptions())
    write_item_configs(state, configs)
    for item, run in zip(state.items, (runs["nerf"], runs["gaussians"])):
        shutil.rmtree(state.batch_dir / item.item)
        shutil.copytree(run, state.batch_dir / item.item, symlinks=True)
    write_summary(state, contact_sheet=False)
    write_summary(load_batch(state.batch_dir), contact_sheet=True)  # the items are done (their metrics.json)
    return state.batch_dir


@needs_browser
def test_a_batch_is_a_gallery_and_a_multiview_set_stands_on_its_cameras(batch_dir, tmp_path, capsys):
    assert main(["multiview", str(REPO / "configs" / "multiview-quickstart.yaml"), "prompt=a red cube", "views=4",
                 "sampler.steps=4", f"output_dir={tmp_path / 'mv'}", "--no-progress"]) == 0
    multiview = Path(capsys.readouterr().out.strip().splitlines()[-1])
    for name, folder in (("batch", batch_dir), ("multiview", multiview)):
        page = tmp_path / f"{name}.html"
        assert main(["view", str(folder), "--html", str(page), "--port", str(free_port())]) == 0
        shot = screenshot(page.as_uri(), tmp_path / f"{name}.png", wait_s=8)
        assert non_background(shot) > 0.02, f"nothing drawn for the {name} folder ({shot})"


def test_the_checkpoint_menu_loads_the_chosen_checkpoint(runs, tmp_path):
    """The run keeps two checkpoints: choosing the older one puts its weights in the shown scene."""
    import shutil

    import torch

    from text3d.core.checkpoint import load_checkpoint
    from text3d.view.config import ViewConfig
    from text3d.view.server import start_server, stop_server
    from text3d.view.sources import open_view_source

    run = shutil.copytree(runs["nerf"], tmp_path / "run", symlinks=True)
    assert main(["run", f"resume={run}", "steps=81", "trainer.checkpoint_every=0", "--no-progress"]) == 0
    older, newer = sorted((run / "ckpts").glob("step-*"))
    source = open_view_source(ViewConfig(path=str(run), port=free_port()))
    server, _ = start_server("127.0.0.1", free_port())
    try:
        source.show(server)
        key = next(k for k in source.system.state_dict() if "encoding" in k)
        saved = lambda ckpt: load_checkpoint(ckpt).tensors[f"system.{key}"]  # noqa: E731
        assert torch.equal(source.system.state_dict()[key], saved(newer))
        source._load(server, older)
        assert torch.equal(source.system.state_dict()[key], saved(older))
    finally:
        stop_server(server)
