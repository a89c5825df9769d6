"""Source keypoint layouts and their mappings into the canonical layout (:mod:`slpfast.layouts`).

Supported sources:

=================================  ======  ==================================================
layout name                        points  components
=================================  ======  ==================================================
``coco_wholebody_133``             133     body 17, feet 6, face 68 (iBUG), left hand 21,
                                           right hand 21 (MMPose / RTMPose order)
``mediapipe_holistic_543``         543     pose 33, face mesh 468, left hand 21, right hand 21
``mediapipe_holistic_553``         553     same with the refined face mesh (478: + irises)
``mediapipe_holistic_576``         576     543 + pose world landmarks 33 (pose-format)
``mediapipe_holistic_586``         586     553 + pose world landmarks 33 (pose-format)
``mediapipe_holistic_reduced_178`` 178     pose 8 (shoulders, elbows, wrists, hips), face 128
                                           (contours of the mesh), hands 21 + 21 (pose-format
                                           ``reduce_holistic``)
``openpose_137``                   137     BODY_25, face 70 (iBUG 68 + pupils), left hand 21,
                                           right hand 21
=================================  ======  ==================================================

Each canonical joint takes one source point, or the mean of a few (e.g. an eye centre from
its corners); a joint the source lacks gets coordinates 0 and confidence 0. Face and mouth
points of MediaPipe come from the face mesh through the usual mesh -> iBUG-68 table
(:data:`MEDIAPIPE_MESH_TO_IBUG68`). The reduced 128-point mesh has no nose points: its nose
tip, the anchor of the face and mouth, is estimated from the eyes and the upper lip
(:data:`NOSE_TIP_ESTIMATE`); the other nose points stay missing (confidence 0).
Left and right are the signer's own, as in all three source families.

``SourceLayout.to_canonical(points, conf)`` maps ``(..., P, D)`` arrays (D = 2 or 3) to
``(..., 123, 3)`` and ``(..., 123)``; :func:`layout_from_components` builds a layout from
the component names and point names of a ``.pose`` header, so variants are matched by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layouts import BODY_JOINTS, NUM_JOINTS, PART_SLICES

# ----------------------------------------------------------------------------- source names
MEDIAPIPE_POSE_33 = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE", "RIGHT_EYE_OUTER",
    "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW",
    "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY", "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX",
    "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE",
    "LEFT_HEEL", "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX",
)
OPENPOSE_BODY_25 = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel",
    "RBigToe", "RSmallToe", "RHeel",
)
COCO_17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
#: MediaPipe face-mesh index of each iBUG-68 point (jaw 0-16, brows 17-26, nose 27-35,
#: eyes 36-47, outer lips 48-59, inner lips 60-67), subject's right side first as in iBUG.
MEDIAPIPE_MESH_TO_IBUG68 = (
    127, 234, 93, 132, 58, 172, 136, 176, 152, 400, 365, 397, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)
#: Mesh points whose mean stands in for the nose tip (iBUG 30, mesh 4) where a mesh lacks it:
#: the inner eye corners (133, 362) once each and the top of the upper lip (0) twice, i.e. half
#: way from the eyes' midpoint to the lip. On the frontal sample clips the nose tip lies at
#: 0.54 of that way (0.42 with the head turned), 0.01-0.07 inter-ocular distances off the line.
NOSE_TIP_ESTIMATE = (133, 362, 0, 0)
#: Point names of the reduced holistic layout (pose-format ``reduce_holistic``): pose 8 and
#: the face-mesh indices kept.
REDUCED_POSE_8 = ("LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST",
                  "LEFT_HIP", "RIGHT_HIP")
REDUCED_FACE_128 = (
    0, 7, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80, 81, 82, 84,
    87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153, 154, 155,
    157, 158, 159, 160, 161, 162, 163, 172, 173, 176, 178, 181, 185, 191, 234, 246, 249, 251, 263, 267, 269, 270,
    276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324,
    332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388,
    389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466,
)

# Canonical body joint -> candidate sources, tried in order; a candidate is a tuple of names
# averaged together. Names: MediaPipe pose landmark names; "mesh:<i>" a face-mesh index.
_MP_BODY = {
    "nose": [("NOSE",), ("mesh:4",), ("mesh:1",)],
    "left_eye": [("LEFT_EYE",), ("mesh:362", "mesh:263")],
    "right_eye": [("RIGHT_EYE",), ("mesh:33", "mesh:133")],
    "left_ear": [("LEFT_EAR",), ("mesh:454",)],
    "right_ear": [("RIGHT_EAR",), ("mesh:234",)],
    "left_shoulder": [("LEFT_SHOULDER",)], "right_shoulder": [("RIGHT_SHOULDER",)],
    "left_elbow": [("LEFT_ELBOW",)], "right_elbow": [("RIGHT_ELBOW",)],
    "left_wrist": [("LEFT_WRIST",)], "right_wrist": [("RIGHT_WRIST",)],
    "left_hip": [("LEFT_HIP",)], "right_hip": [("RIGHT_HIP",)],
}
_OP_BODY = {"nose": "Nose", "left_eye": "LEye", "right_eye": "REye", "left_ear": "LEar", "right_ear": "REar",
            "left_shoulder": "LShoulder", "right_shoulder": "RShoulder", "left_elbow": "LElbow",
            "right_elbow": "RElbow", "left_wrist": "LWrist", "right_wrist": "RWrist", "left_hip": "LHip",
            "right_hip": "RHip"}


@dataclass
class SourceLayout:
    """A source layout: its components and, per canonical joint, the source points averaged."""

    name: str
    components: tuple  # ((component name, number of points), ...)
    sources: list = field(default_factory=list)  # per canonical joint: tuple of flat source indices

    @property
    def num_points(self) -> int:
        return sum(n for _, n in self.components)

    def index_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(J, K) source indices (-1 padded) and (J,) counts, for vectorised mapping."""
        K = max(1, max((len(s) for s in self.sources), default=1))
        idx = np.full((NUM_JOINTS, K), -1, np.int64)
        cnt = np.zeros(NUM_JOINTS, np.int64)
        for j, s in enumerate(self.sources):
            idx[j, : len(s)] = s
            cnt[j] = len(s)
        return idx, cnt

    def to_canonical(self, points: np.ndarray, conf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(..., P, D) points (D = 2 or 3) and (..., P) confidence -> (..., J, 3), (..., J).

        Missing joints (not in the source, or any averaged point with confidence 0) get
        coordinates 0 and confidence 0. Averaged joints take the minimum confidence.
        """
        points = np.asarray(points, np.float32)
        if points.shape[-2] != self.num_points:
            raise ValueError(f"layout {self.name} has {self.num_points} points, got array {points.shape}")
        D = points.shape[-1]
        if D not in (2, 3):
            raise ValueError(f"points must have 2 or 3 coordinates, got {D}")
        if conf is None:
            conf = np.ones(points.shape[:-1], np.float32)
        conf = np.asarray(conf, np.float32)
        idx, cnt = self.index_table()
        lead = points.shape[:-2]
        out = np.zeros(lead + (NUM_JOINTS, 3), np.float32)
        oc = np.zeros(lead + (NUM_JOINTS,), np.float32)
        have = cnt > 0
        K = idx.shape[1]
        safe = np.where(idx < 0, 0, idx)
        gathered = points[..., safe.reshape(-1), :].reshape(lead + (NUM_JOINTS, K, D))
        gconf = conf[..., safe.reshape(-1)].reshape(lead + (NUM_JOINTS, K))
        valid = (idx >= 0)
        gconf = np.where(valid, gconf, np.inf)
        c = gconf.min(-1)
        c = np.where(have, c, 0.0)
        s = (gathered * valid[..., None]).sum(-2) / np.maximum(cnt, 1)[:, None]
        ok = have & (c > 0)
        out[..., :D] = np.where(ok[..., None], s, 0.0)
        oc[...] = np.where(ok, c, 0.0)
        return out, oc


def _offsets(components):
    offs, o = {}, 0
    for name, n in components:
        offs[name] = o
        o += n
    return offs


def _holistic(name: str, pose_names, mesh_indices, *, world: bool) -> SourceLayout:
    comps = [("POSE_LANDMARKS", len(pose_names)), ("FACE_LANDMARKS", len(mesh_indices)),
             ("LEFT_HAND_LANDMARKS", 21), ("RIGHT_HAND_LANDMARKS", 21)]
    if world:
        comps.append(("POSE_WORLD_LANDMARKS", len(pose_names)))
    off = _offsets(comps)
    pose_at = {n: off["POSE_LANDMARKS"] + i for i, n in enumerate(pose_names)}
    mesh_at = {f"mesh:{m}": off["FACE_LANDMARKS"] + i for i, m in enumerate(mesh_indices)}
    lookup = {**pose_at, **mesh_at}
    sources: list[tuple] = [()] * NUM_JOINTS
    for j, joint in enumerate(BODY_JOINTS):
        for cand in _MP_BODY[joint]:
            if all(c in lookup for c in cand):
                sources[j] = tuple(lookup[c] for c in cand)
                break
    for hand, comp in (("left_hand", "LEFT_HAND_LANDMARKS"), ("right_hand", "RIGHT_HAND_LANDMARKS")):
        for k, j in enumerate(range(PART_SLICES[hand].start, PART_SLICES[hand].stop)):
            sources[j] = (off[comp] + k,)
    for p, m in enumerate(MEDIAPIPE_MESH_TO_IBUG68):
        j = PART_SLICES["face"].start + p if p < 48 else PART_SLICES["mouth"].start + p - 48
        key = f"mesh:{m}"
        if key in lookup:
            sources[j] = (lookup[key],)
    nose_tip = PART_SLICES["face"].start + 30
    if not sources[nose_tip] and all(f"mesh:{m}" in lookup for m in NOSE_TIP_ESTIMATE):
        # The nose tip anchors the face and mouth in normalization: without it (pose-format's
        # reduced mesh keeps no nose point) every face and mouth joint would come out invalid.
        sources[nose_tip] = tuple(lookup[f"mesh:{m}"] for m in NOSE_TIP_ESTIMATE)
    return SourceLayout(name, tuple(comps), sources)


def _openpose() -> SourceLayout:
    comps = (("pose_keypoints_2d", 25), ("face_keypoints_2d", 70), ("hand_left_keypoints_2d", 21),
             ("hand_right_keypoints_2d", 21))
    off = _offsets(comps)
    sources: list[tuple] = [()] * NUM_JOINTS
    for j, joint in enumerate(BODY_JOINTS):
        sources[j] = (OPENPOSE_BODY_25.index(_OP_BODY[joint]),)
    for p in range(68):
        j = PART_SLICES["face"].start + p if p < 48 else PART_SLICES["mouth"].start + p - 48
        sources[j] = (off["face_keypoints_2d"] + p,)
    for hand, comp in (("left_hand", "hand_left_keypoints_2d"), ("right_hand", "hand_right_keypoints_2d")):
        for k, j in enumerate(range(PART_SLICES[hand].start, PART_SLICES[hand].stop)):
            sources[j] = (off[comp] + k,)
    return SourceLayout("openpose_137", comps, sources)


def _coco_wholebody() -> SourceLayout:
    comps = (("body", 17), ("foot", 6), ("face", 68), ("left_hand", 21), ("right_hand", 21))
    off = _offsets(comps)
    sources: list[tuple] = [()] * NUM_JOINTS
    for j, joint in enumerate(BODY_JOINTS):
        sources[j] = (COCO_17.index(joint),)
    for p in range(68):
        j = PART_SLICES["face"].start + p if p < 48 else PART_SLICES["mouth"].start + p - 48
        sources[j] = (off["face"] + p,)
    for hand in ("left_hand", "right_hand"):
        for k, j in enumerate(range(PART_SLICES[hand].start, PART_SLICES[hand].stop)):
            sources[j] = (off[hand] + k,)
    return SourceLayout("coco_wholebody_133", comps, sources)


LAYOUTS: dict[str, SourceLayout] = {
    "coco_wholebody_133": _coco_wholebody(),
    "mediapipe_holistic_543": _holistic("mediapipe_holistic_543", MEDIAPIPE_POSE_33, range(468), world=False),
    "mediapipe_holistic_553": _holistic("mediapipe_holistic_553", MEDIAPIPE_POSE_33, range(478), world=False),
    "mediapipe_holistic_576": _holistic("mediapipe_holistic_576", MEDIAPIPE_POSE_33, range(468), world=True),
    "mediapipe_holistic_586": _holistic("mediapipe_holistic_586", MEDIAPIPE_POSE_33, range(478), world=True),
    "mediapipe_holistic_reduced_178": _holistic("mediapipe_holistic_reduced_178", REDUCED_POSE_8, REDUCED_FACE_128,
                                                world=False),
    "openpose_137": _openpose(),
}
#: number of points -> layout name, for arrays that come without a header
BY_NUM_POINTS = {lay.num_points: name for name, lay in LAYOUTS.items()}


def get_layout(name_or_points) -> SourceLayout:
    """A layout by name, by alias (``coco133``, ``holistic576`` ...) or by its number of points."""
    if isinstance(name_or_points, (int, np.integer)):
        if int(name_or_points) == NUM_JOINTS:
            return CANONICAL_IDENTITY
        if int(name_or_points) not in BY_NUM_POINTS:
            raise ValueError(f"no known layout has {name_or_points} points (known: {sorted(BY_NUM_POINTS)})")
        return LAYOUTS[BY_NUM_POINTS[int(name_or_points)]]
    key = str(name_or_points).lower().replace("-", "_")
    if key in LAYOUTS:
        return LAYOUTS[key]
    if key in ("canonical", "slpfast"):
        return CANONICAL_IDENTITY
    aliases = {"coco133": 133, "coco_wholebody": 133, "rtmpose": 133, "mmpose": 133, "openpose": 137,
               "holistic543": 543, "holistic553": 553, "holistic576": 576, "holistic586": 586,
               "holistic_reduced": 178, "reduced178": 178}
    if key in aliases:
        return get_layout(aliases[key])
    raise ValueError(f"unknown layout {name_or_points!r} (known: {sorted(LAYOUTS)})")


CANONICAL_IDENTITY = SourceLayout("canonical_123", (("canonical", NUM_JOINTS),), [(j,) for j in range(NUM_JOINTS)])


def layout_from_components(components) -> SourceLayout:
    """A layout from a ``.pose`` header: ``components`` = [(name, [point names]), ...].

    MediaPipe Holistic headers (full or reduced, with or without world landmarks) are mapped
    by point name (pose landmark names, face-mesh indices as names); OpenPose-137 by index.
    Raises ValueError for an unknown layout.
    """
    names = [c for c, _ in components]
    if names[:4] == ["POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"]:
        pose_names = list(components[0][1])
        try:
            mesh = [int(p) for p in components[1][1]]
        except ValueError as e:
            raise ValueError(f"FACE_LANDMARKS point names are not mesh indices: {e}") from None
        world = len(components) > 4 and components[4][0] == "POSE_WORLD_LANDMARKS"
        extra = components[5:] if world else components[4:]
        if extra:
            raise ValueError(f"unexpected extra components {[c for c, _ in extra]}")
        if len(components[2][1]) != 21 or len(components[3][1]) != 21:
            raise ValueError("hand components must have 21 points")
        n = sum(len(p) for _, p in components)
        known = {543: "mediapipe_holistic_543", 553: "mediapipe_holistic_553", 576: "mediapipe_holistic_576",
                 586: "mediapipe_holistic_586", 178: "mediapipe_holistic_reduced_178"}
        lay = _holistic(known.get(n, f"mediapipe_holistic_{n}"), pose_names, mesh, world=world)
        if world and len(components[4][1]) != len(pose_names):
            raise ValueError("POSE_WORLD_LANDMARKS must have as many points as POSE_LANDMARKS")
        return lay
    if names == ["pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"]:
        sizes = [len(p) for _, p in components]
        if sizes != [25, 70, 21, 21]:
            raise ValueError(f"OpenPose components must have 25/70/21/21 points, got {sizes}")
        return LAYOUTS["openpose_137"]
    raise ValueError(f"unsupported .pose layout with components {names}")


__all__ = ["SourceLayout", "LAYOUTS", "get_layout", "layout_from_components", "MEDIAPIPE_MESH_TO_IBUG68",
           "CANONICAL_IDENTITY"]
