"""Import GLB / OBJ files in headless Blender and report whether the albedo texture is attached.

    blender -b --factory-startup --python tests/tools/blender_import_check.py -- FILE.glb FILE.obj

For each file, in an empty scene: import it with Blender's own importer (glTF add-on, OBJ importer),
then print one line ``TEXT3D {json}`` with the mesh's face count, its bounding box in Blender's
(z-up) frame, whether a material feeds an image texture into the Principled BSDF's Base Color
(with the image's size and whether its pixels loaded), the texture's colour at the highest and
the lowest vertex, and Blender's own topology check with bmesh: after welding the vertices that UV
seams split (merge by distance, 1e-6 of the object's size), the non-manifold edges
(``not edge.is_manifold``), the boundary edges, the loose parts (pieces through shared edges) and
the Euler characteristic ``V - E + F``. Exits 1 if an import raises.

Debian's ``blender`` (3.4) needs ``apt-get install python3-numpy`` for its glTF importer.
"""

import json
import sys

import bpy


def _numpy_shim():
    """Debian's Blender 3.4 glTF add-on uses ``np.bool``, which numpy 1.24+ (Debian's own) removed;
    it then fails on every file with "module 'numpy' has no attribute 'bool'". Restore the alias
    (needs ``apt-get install python3-numpy``: Debian's blender package does not pull it in)."""
    import numpy

    if "bool" not in numpy.__dict__:
        numpy.bool = numpy.bool_


_numpy_shim()


def texture_of(obj):
    """The image feeding Base Color of the object's first material, or None."""
    for slot in obj.material_slots:
        mat = slot.material
        if mat is None or not mat.use_nodes:
            continue
        for node in mat.node_tree.nodes:
            if node.type == "BSDF_PRINCIPLED":
                for link in node.inputs["Base Color"].links:
                    src = link.from_node
                    if src.type == "TEX_IMAGE" and src.image is not None:
                        return src.image
    return None


def colour_at_extreme_vertex(obj, image, sign):
    """The texture's RGB at the UV of the highest (``sign`` 1) or lowest (-1) vertex in Blender's
    z-up frame: tells whether the exported up axis survived the import."""
    mesh = obj.data
    z = [sign * (obj.matrix_world @ v.co).z for v in mesh.vertices]
    vertex = max(range(len(z)), key=z.__getitem__)
    uv_data = mesh.uv_layers.active.data
    u, v = next(uv_data[lp.index].uv for lp in mesh.loops if lp.vertex_index == vertex)
    w, h = image.size
    x, y = min(int(u * w), w - 1), min(int(v * h), h - 1)  # Blender images start at the bottom row
    start = (y * w + x) * 4
    return [round(c, 3) for c in image.pixels[start:start + 3]]


def bmesh_topology(objects):
    """Blender's count of non-manifold / boundary edges, loose parts and Euler characteristic of
    the objects' meshes joined, with seam-split vertices welded."""
    import bmesh

    bm = bmesh.new()
    for obj in objects:
        mesh = obj.data.copy()
        mesh.transform(obj.matrix_world)
        bm.from_mesh(mesh)
    if not bm.verts:
        return {"non_manifold_edges": 0, "boundary_edges": 0, "loose_parts": 0, "euler": 0}
    size = max(max(v.co[i] for v in bm.verts) - min(v.co[i] for v in bm.verts) for i in range(3))
    bmesh.ops.remove_doubles(bm, verts=bm.verts, dist=1e-6 * max(size, 1e-9))
    bm.verts.ensure_lookup_table()
    bm.faces.ensure_lookup_table()
    boundary = sum(1 for e in bm.edges if e.is_boundary)
    non_manifold = sum(1 for e in bm.edges if not e.is_manifold and not e.is_boundary)
    parts, seen = 0, set()
    for face in bm.faces:  # flood fill through shared edges
        if face.index in seen:
            continue
        parts += 1
        stack = [face]
        seen.add(face.index)
        while stack:
            f = stack.pop()
            for edge in f.edges:
                for g in edge.link_faces:
                    if g.index not in seen:
                        seen.add(g.index)
                        stack.append(g)
    euler = len(bm.verts) - len(bm.edges) + len(bm.faces)
    bm.free()
    return {"non_manifold_edges": non_manifold, "boundary_edges": boundary, "loose_parts": parts, "euler": euler}


def check(path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if path.lower().endswith((".glb", ".gltf")):
        bpy.ops.import_scene.gltf(filepath=path)
    elif hasattr(bpy.ops.wm, "obj_import"):
        bpy.ops.wm.obj_import(filepath=path)
    else:
        bpy.ops.import_scene.obj(filepath=path)
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    faces = sum(len(o.data.polygons) for o in meshes)
    corners = [o.matrix_world @ v.co for o in meshes for v in o.data.vertices]
    lo = [min(c[i] for c in corners) for i in range(3)]
    hi = [max(c[i] for c in corners) for i in range(3)]
    image = texture_of(meshes[0]) if meshes else None
    has_pixels = bool(image is not None and image.has_data or (image is not None and len(image.pixels) > 0))
    return {"file": path, "objects": len(meshes), "faces": faces, "bounds_zup": [lo, hi],
            "texture": image is not None and has_pixels,
            "image_size": list(image.size) if image is not None else None,
            "uv_layers": [len(o.data.uv_layers) for o in meshes],
            "top_rgb": colour_at_extreme_vertex(meshes[0], image, 1) if image is not None else None,
            "bottom_rgb": colour_at_extreme_vertex(meshes[0], image, -1) if image is not None else None,
            "bmesh": bmesh_topology(meshes)}


def main():
    files = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    status = 0
    for path in files:
        try:
            print("TEXT3D " + json.dumps(check(path)), flush=True)
        except Exception as e:  # report and go on with the next file
            print(f"TEXT3D-ERROR {path}: {e!r}", flush=True)
            status = 1
    sys.exit(status)


main()
