"""Mesh files for DCC tools: GLB (glTF 2.0 binary), OBJ + MTL + PNG, PLY; each written atomically.

Every writer takes an :class:`ExportMesh` already in the export frame: glTF's, which Blender,
Maya, Unity and three.js read without a rotation: +Y up, the object's front (world +x, where
the project's azimuth-0 camera looks from) towards +Z, metres, centred on the origin. The
project's world is z-up, so ``(x, y, z)_world -> (y, z, x)_export`` (a rotation, det = +1).

Colour: the albedo is stored as rendered (sRGB-encoded), which is what glTF's baseColorTexture,
OBJ's ``map_Kd`` and PLY's 8-bit colours hold. glTF's ``COLOR_0`` is *linear*, so vertex colours in
a GLB without a texture are linearised first.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from text3d import __version__
from text3d.core.io import atomic_path
from .texture import UVLayout

WORLD_TO_EXPORT = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
"""Rotation from the project's z-up world to the +Y-up, front-+Z export frame."""

MATERIAL_NAME = "albedo"


@dataclass
class ExportMesh:
    """What the writers write, in the export frame.

    Attributes:
        name: object name shown in DCC tools.
        vertices: ``[V, 3]`` float32 metres. normals: ``[V, 3]`` unit, outward.
        faces: ``[F, 3]`` counter-clockwise seen from outside.
        colors: ``[V, 3]`` float32 sRGB albedo in [0, 1].
        layout: UV layout (seam-split vertices) or None when there is no texture.
        texture: ``[H, W, 3]`` uint8 sRGB albedo, row 0 at the top (``t = 0``), or None.
    """

    name: str
    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    layout: Optional[UVLayout] = None
    texture: Optional[np.ndarray] = None


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), for glTF's linear ``COLOR_0``."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return path


# ------------------------------------------------------------------------------------------ GLB
class _GltfBinary:
    """Accumulates the binary chunk of a GLB: 4-byte aligned buffer views and their accessors."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: List[dict] = []
        self.accessors: List[dict] = []

    def view(self, data: bytes, target: Optional[int] = None) -> int:
        self.blob.extend(b"\x00" * (-len(self.blob) % 4))
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.blob.extend(data)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int, bounds: bool = False) -> int:
        """An accessor over a new view holding ``array`` (float32 -> FLOAT, uint32 -> UNSIGNED_INT)."""
        component = {np.dtype(np.float32): 5126, np.dtype(np.uint32): 5125}[array.dtype]
        acc = {"bufferView": self.view(np.ascontiguousarray(array).tobytes(), target),
               "componentType": component, "count": int(len(array) if kind != "SCALAR" else array.size),
               "type": kind}
        if bounds:
            acc["min"] = [float(x) for x in array.min(axis=0)]
            acc["max"] = [float(x) for x in array.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071


def glb_bytes(mesh: ExportMesh) -> bytes:
    """A one-mesh, one-material glTF 2.0 binary: PBR (metallic 0, roughness 1) with the albedo as
    ``baseColorTexture``, or with ``COLOR_0`` vertex colours when there is no texture."""
    bin_ = _GltfBinary()
    lay = mesh.layout if mesh.texture is not None else None
    index = lay.vmapping if lay is not None else np.arange(len(mesh.vertices))
    faces = lay.faces if lay is not None else mesh.faces
    attributes = {
        "POSITION": bin_.accessor(mesh.vertices[index].astype(np.float32), "VEC3", _ARRAY_BUFFER, bounds=True),
        "NORMAL": bin_.accessor(mesh.normals[index].astype(np.float32), "VEC3", _ARRAY_BUFFER),
    }
    pbr: Dict[str, object] = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    doc: Dict[str, object] = {}
    if lay is not None:
        attributes["TEXCOORD_0"] = bin_.accessor(lay.uvs.astype(np.float32), "VEC2", _ARRAY_BUFFER)
        image_view = bin_.view(png_bytes(mesh.texture))
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
        doc.update(images=[{"bufferView": image_view, "mimeType": "image/png", "name": MATERIAL_NAME}],
                   samplers=[{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                              "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}],
                   textures=[{"sampler": 0, "source": 0}])
    else:
        colors = srgb_to_linear(mesh.colors.astype(np.float64)).astype(np.float32)
        attributes["COLOR_0"] = bin_.accessor(colors, "VEC3", _ARRAY_BUFFER)
    indices = bin_.accessor(faces.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    doc.update(
        asset={"version": "2.0", "generator": f"text3d {__version__}"},
        scene=0, scenes=[{"nodes": [0]}], nodes=[{"mesh": 0, "name": mesh.name}],
        meshes=[{"name": mesh.name, "primitives": [{"attributes": attributes, "indices": indices,
                                                     "material": 0, "mode": 4}]}],
        materials=[{"name": MATERIAL_NAME, "pbrMetallicRoughness": pbr}],
        accessors=bin_.accessors, bufferViews=bin_.views, buffers=[{"byteLength": len(bin_.blob)}])
    return _glb_container(json.dumps(doc, separators=(",", ":")).encode("utf-8"), bytes(bin_.blob))


def _glb_container(json_chunk: bytes, bin_chunk: bytes) -> bytes:
    """GLB header + JSON chunk (space-padded) + BIN chunk (zero-padded), per the glTF 2.0 spec."""
    json_chunk += b" " * (-len(json_chunk) % 4)
    bin_chunk += b"\x00" * (-len(bin_chunk) % 4)
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return b"".join([struct.pack("<4sII", b"glTF", 2, total),
                     struct.pack("<I4s", len(json_chunk), b"JSON"), json_chunk,
                     struct.pack("<I4s", len(bin_chunk), b"BIN\x00"), bin_chunk])


def write_glb(mesh: ExportMesh, folder: Path, stem: str) -> List[Path]:
    return [_write_bytes(folder / f"{stem}.glb", glb_bytes(mesh))]


# ------------------------------------------------------------------------------------------ OBJ
def _rows(prefix: str, array: np.ndarray, fmt: str) -> str:
    buf = io.StringIO()
    np.savetxt(buf, array, fmt=f"{prefix} " + " ".join([fmt] * array.shape[1]))
    return buf.getvalue()


def obj_text(mesh: ExportMesh, mtl_name: Optional[str]) -> str:
    """Wavefront OBJ: welded positions and normals; ``vt`` per seam-split vertex (``t`` up, OBJ's
    convention); without a texture, vertex colours as ``v x y z r g b`` (read by Blender, MeshLab,
    trimesh)."""
    head = [f"# text3d {__version__}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, +Y up, metres\n"]
    if mtl_name:
        head.append(f"mtllib {mtl_name}\n")
    head.append(f"o {mesh.name}\n")
    lay = mesh.layout if mesh.texture is not None else None
    if lay is None:
        body = [_rows("v", np.concatenate([mesh.vertices, mesh.colors], axis=1), "%.6f")]
    else:
        body = [_rows("v", mesh.vertices, "%.6f"),
                _rows("vt", np.stack([lay.uvs[:, 0], 1.0 - lay.uvs[:, 1]], axis=1), "%.6f")]
    body.append(_rows("vn", mesh.normals, "%.5f"))
    if mtl_name:
        body.append(f"usemtl {MATERIAL_NAME}\n")
    if lay is None:
        body.append(_face_rows(mesh.faces + 1, None))
    else:
        body.append(_face_rows(lay.vmapping[lay.faces] + 1, lay.faces + 1))
    return "".join(head + body)


def _face_rows(v: np.ndarray, vt: Optional[np.ndarray]) -> str:
    """``f v/vt/vn`` (normals share the position index) or ``f v//vn`` lines, 1-based."""
    buf = io.StringIO()
    if vt is None:
        np.savetxt(buf, np.stack([v, v], axis=2).reshape(len(v), 6), fmt="f %d//%d %d//%d %d//%d")
    else:
        np.savetxt(buf, np.stack([v, vt, v], axis=2).reshape(len(v), 9), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    return buf.getvalue()


def mtl_text(texture_name: str) -> str:
    """One diffuse material whose colour is the texture (Kd 1 so the map is not darkened)."""
    return (f"# text3d {__version__}\nnewmtl {MATERIAL_NAME}\nKa 0.000 0.000 0.000\nKd 1.000 1.000 1.000\n"
            f"Ks 0.000 0.000 0.000\nNs 10.0\nd 1.0\nillum 1\nmap_Kd {texture_name}\n")


def write_obj(mesh: ExportMesh, folder: Path, stem: str) -> List[Path]:
    """``stem.obj`` (+ ``stem.mtl`` and ``stem_albedo.png`` when textured), referenced by bare file
    names so the folder can be moved. The texture and material are written first, so an OBJ that
    exists never points at a missing file."""
    written: List[Path] = []
    mtl_name = None
    if mesh.texture is not None and mesh.layout is not None:
        png_name, mtl_name = f"{stem}_albedo.png", f"{stem}.mtl"
        written.append(_write_bytes(folder / png_name, png_bytes(mesh.texture)))
        written.append(_write_text(folder / mtl_name, mtl_text(png_name)))
    written.insert(0, _write_text(folder / f"{stem}.obj", obj_text(mesh, mtl_name)))
    return written


# ------------------------------------------------------------------------------------------ PLY
def ply_bytes(mesh: ExportMesh) -> bytes:
    """Binary little-endian PLY: position, normal and 8-bit sRGB colour per vertex; triangles."""
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
                    ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    verts = np.empty(len(mesh.vertices), vdt)
    for i, axis in enumerate("xyz"):
        verts[axis] = mesh.vertices[:, i]
        verts["n" + axis] = mesh.normals[:, i]
    rgb = np.round(np.clip(mesh.colors, 0.0, 1.0) * 255.0).astype(np.uint8)
    for i, channel in enumerate(("red", "green", "blue")):
        verts[channel] = rgb[:, i]
    faces = np.empty(len(mesh.faces), np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    faces["n"], faces["v"] = 3, mesh.faces
    header = "\n".join([
        "ply", "format binary_little_endian 1.0", f"comment text3d {__version__}, +Y up, metres",
        f"element vertex {len(verts)}", "property float x", "property float y", "property float z",
        "property float nx", "property float ny", "property float nz",
        "property uchar red", "property uchar green", "property uchar blue",
        f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]) + "\n"
    return header.encode("ascii") + verts.tobytes() + faces.tobytes()


def write_ply(mesh: ExportMesh, folder: Path, stem: str) -> List[Path]:
    return [_write_bytes(folder / f"{stem}.ply", ply_bytes(mesh))]


WriterFn = Callable[[ExportMesh, Path, str], List[Path]]
WRITERS: Dict[str, WriterFn] = {"glb": write_glb, "obj": write_obj, "ply": write_ply}
"""Exporters by format name (``export.formats``); each returns the paths it wrote."""
