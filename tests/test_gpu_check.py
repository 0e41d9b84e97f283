"""benchmarks/gpu_check.sh on a machine without CUDA: the script parses, its pytest plugin selects
exactly the CUDA-only tests, and its Python pieces run in --dry-run mode."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], check=True)


def test_plugin_keeps_only_the_cuda_tests():
    files = ["tests/test_gaussians.py", "tests/test_volume_renderer.py", "tests/test_checkpoint.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "gpu_tests_plugin", *files],
                          cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "benchmarks"),
                                                                          "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    selected = sorted(line for line in proc.stdout.splitlines() if "::" in line)
    assert selected == ["tests/test_gaussians.py::test_cpu_path_matches_gsplat[antialiased]",
                        "tests/test_gaussians.py::test_cpu_path_matches_gsplat[classic]",
                        "tests/test_volume_renderer.py::test_nerfacc_path_agrees_with_torch_path_on_cuda"], proc.stdout


def test_env_piece_runs_without_cuda():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "env", "--dry-run"],
                          capture_output=True, text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert any(line.startswith("RESULT torch: ") for line in lines) and any("cuda_available" in line for line in lines)
