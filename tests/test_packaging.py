"""A normal (non-editable) install maps renderers/ and guidance/ to text3d.renderers / text3d.guidance."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_the_three_import_roots(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("text3d-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("text3d/run/trainer.py", "text3d/core/schema.py", "text3d/export/pipeline.py", "text3d/renderers/volume.py", "text3d/guidance/sds.py",
                 "text3d/guidance/stable_diffusion.py"):
        assert path in names, path
    assert not any(n.startswith(("renderers/", "guidance/", "tests/")) for n in names)
    # the embedded prior and the CLIP vocabulary ship whole: a plain (non-editable) install runs the quickstart
    for folder in ("shapes_prior", "latent_prior", "clip_tokenizer"):
        root = REPO / "text3d" / "data" / folder
        data = {p.relative_to(REPO).as_posix() for p in root.rglob("*") if p.is_file()}
        assert data and data <= names, sorted(data - names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "text3d = text3d.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
