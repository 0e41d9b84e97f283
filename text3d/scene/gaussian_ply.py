"""The standard 3DGS ``.ply`` layout that splat viewers read: x, y, z, nx, ny, nz, f_dc_0-2, f_rest_*
(channel-major), opacity as a logit, scale_0-2 as logs, rot_0-3 as a wxyz quaternion; binary little-endian."""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from text3d.core.errors import Text3DError
from text3d.core.io import atomic_path


class PlyError(Text3DError):
    """A .ply file that is not a 3DGS Gaussian file (or is damaged)."""


def ply_properties(sh_degree_or_k: int, from_k: bool = False) -> List[str]:
    """Property names of a 3DGS .ply with ``K`` SH coefficients per channel."""
    K = sh_degree_or_k if from_k else (sh_degree_or_k + 1) ** 2
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (K - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: Path | str, params: Dict[str, Tensor]) -> Path:
    """Write Gaussians (unconstrained parameters, :data:`text3d.scene.gaussians.PARAM_NAMES`) as a binary 3DGS .ply, atomically."""
    means = params["means"].detach().float().cpu()
    n = means.shape[0]
    sh0 = params["sh0"].detach().float().cpu().reshape(n, 3)
    shN = params["shN"].detach().float().cpu()
    rest = shN.transpose(1, 2).reshape(n, -1)  # channel-major, as 3DGS writes f_rest
    cols = [means, torch.zeros(n, 3), sh0, rest, params["opacity_logits"].detach().float().cpu().view(n, 1),
            params["log_scales"].detach().float().cpu(), params["quats"].detach().float().cpu()]
    data = torch.cat(cols, dim=1).numpy().astype("<f4")
    names = ply_properties(shN.shape[1] + 1, from_k=True)
    header = "ply\nformat binary_little_endian 1.0\ncomment written by text3d (3D Gaussian splatting)\n" \
             f"element vertex {n}\n" + "".join(f"property float {p}\n" for p in names) + "end_header\n"
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(data.tobytes())
    return path


_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
              "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4"}


def _read_header(fh: BinaryIO, path: Path) -> Tuple[Optional[str], int, List[Tuple[str, str]]]:
    """``(format, vertex count, [(property, numpy dtype)])`` of a .ply header; ``fh`` left at the data."""
    if fh.readline().strip() != b"ply":
        raise PlyError(f"{path}: not a .ply file")
    fmt, n, props, in_vertex = None, 0, [], False
    while True:
        line = fh.readline()
        if not line:
            raise PlyError(f"{path}: header has no end_header")
        words = line.decode("ascii", "replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            in_vertex = words[1] == "vertex"
            if in_vertex:
                n = int(words[2])
            elif not props:  # elements after the vertex block are fine; before it we would misread
                raise PlyError(f"{path}: element '{words[1]}' precedes the vertex element")
        elif words[0] == "property" and in_vertex:
            if words[1] == "list":
                raise PlyError(f"{path}: list property '{words[-1]}' in the vertex element")
            if words[1] not in _PLY_TYPES:
                raise PlyError(f"{path}: unknown property type '{words[1]}'")
            props.append((words[2], "<" + _PLY_TYPES[words[1]]))
        elif words[0] == "end_header":
            return fmt, n, props


def read_ply(path: Path | str) -> Tuple[Dict[str, Tensor], int]:
    """Read a 3DGS .ply -> (unconstrained parameters, SH degree).

    Raises:
        PlyError: not a binary little-endian .ply, or 3DGS attributes missing (named in the message).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        fmt, n, props = _read_header(fh, path)
        if fmt != "binary_little_endian":
            raise PlyError(f"{path}: format '{fmt}' is not supported; 3DGS files are binary_little_endian")
        data = np.fromfile(fh, dtype=np.dtype(props), count=n)
    if len(data) != n:
        raise PlyError(f"{path}: expected {n} vertices, the file holds {len(data)} (truncated?)")
    names = {p for p, _ in props}
    n_rest = len([p for p in names if p.startswith("f_rest_")])
    required = [p for p in ply_properties(n_rest // 3 + 1, from_k=True) if p not in ("nx", "ny", "nz")]
    missing = [p for p in required if p not in names]
    if missing:
        raise PlyError(f"{path}: not a 3D Gaussian splatting .ply: missing attribute(s) {', '.join(missing)}")
    K = n_rest // 3 + 1
    degree = int(round(math.sqrt(K))) - 1
    if (degree + 1) ** 2 != K:
        raise PlyError(f"{path}: {n_rest} f_rest_* attributes do not make a whole SH degree")

    def cols(keys: List[str]) -> Tensor:
        return torch.from_numpy(np.stack([data[k].astype(np.float32) for k in keys], axis=1)) if keys \
            else torch.zeros(n, 0)

    rest = cols([f"f_rest_{i}" for i in range(n_rest)]).view(n, 3, K - 1).transpose(1, 2).contiguous()
    params = {"means": cols(["x", "y", "z"]), "sh0": cols(["f_dc_0", "f_dc_1", "f_dc_2"]).view(n, 1, 3),
              "shN": rest, "opacity_logits": cols(["opacity"]).view(n),
              "log_scales": cols(["scale_0", "scale_1", "scale_2"]), "quats": cols([f"rot_{i}" for i in range(4)])}
    return params, degree
