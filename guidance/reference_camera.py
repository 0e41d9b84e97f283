"""Conditioning on a reference camera during the noisiest steps (shared by ``multiview`` and ``video``).

A camera-conditioned prior draws the object afresh for every camera: sampled view by view, one
prompt that fixes no colour ("a cube") gives differently coloured views. Conditioning every view on
one reference camera (a set's view 0, a video's keyframe) during the first, noisiest fraction of the
sampling steps makes them agree on what the object is; the remaining steps, each view conditioned on
its own camera, decide how it looks from there (so the reference's pose is not pasted).
"""

from __future__ import annotations


def reference_steps(fraction: float, n_steps: int) -> int:
    """How many of ``n_steps`` sampling steps, from the noisiest, use the reference camera.

    Args:
        fraction: the ``reference_camera`` setting in [0, 1].
        n_steps: steps the sampler runs.

    Returns:
        ``round(fraction * n_steps)`` (0 = own camera throughout, ``n_steps`` = reference throughout).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"reference_camera fraction must be in [0, 1], got {fraction}")
    return int(round(fraction * n_steps))
