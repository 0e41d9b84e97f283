"""pytest plugin for ``benchmarks/gpu_check.sh``: keep only the CUDA-only tests, i.e. those marked
``gpu`` or carrying a ``skipif`` whose reason names CUDA / a GPU / gsplat / nerfacc. Use:
``PYTHONPATH=benchmarks pytest -p gpu_tests_plugin tests``."""

import re

_CUDA = re.compile(r"cuda|gpu|gsplat|nerfacc", re.IGNORECASE)


def _cuda_only(item) -> bool:
    if item.get_closest_marker("gpu") is not None:
        return True
    return any(_CUDA.search(str(m.kwargs.get("reason", ""))) for m in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if _cuda_only(item)]
    dropped = [item for item in items if not _cuda_only(item)]
    items[:] = keep
    if dropped:
        config.hook.pytest_deselected(items=dropped)
