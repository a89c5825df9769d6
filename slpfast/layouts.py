"""Keypoint layouts: the canonical slpfast layout and its named parts.

The canonical layout has J = 123 joints in five parts, always in this order:

==========  =====  ==========================================================
part        count  joints
==========  =====  ==========================================================
body        13     COCO-17 upper body: nose, eyes, ears, shoulders, elbows,
                   wrists, hips (COCO order, indices 0..12)
left_hand   21     the signer's left hand: wrist, then thumb/index/middle/
                   ring/pinky from base to tip (MediaPipe / OpenPose order)
right_hand  21     the signer's right hand, same order
face        48     iBUG-68 points 0..47: jaw, brows, nose, eyes
mouth       20     iBUG-68 points 48..67: outer and inner lips
==========  =====  ==========================================================

"left" and "right" always mean the signer's own left and right. Every source layout
(COCO-WholeBody-133, MediaPipe Holistic, OpenPose-137) maps into this one; joints a source
lacks get confidence 0. The source mappings live in :mod:`slpfast.layouts_sources`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BODY_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
)
HAND_JOINTS = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
#: iBUG-68 indices kept in the ``face`` part and in the ``mouth`` part.
FACE_IBUG = tuple(range(0, 48))
MOUTH_IBUG = tuple(range(48, 68))

PART_NAMES = ("body", "left_hand", "right_hand", "face", "mouth")
PART_SIZES = (len(BODY_JOINTS), len(HAND_JOINTS), len(HAND_JOINTS), len(FACE_IBUG), len(MOUTH_IBUG))
NUM_JOINTS = sum(PART_SIZES)  # 123

#: Half-open [start, stop) of each part in the canonical joint axis.
PART_SLICES: dict[str, slice] = {}
_start = 0
for _name, _size in zip(PART_NAMES, PART_SIZES):
    PART_SLICES[_name] = slice(_start, _start + _size)
    _start += _size
del _start, _name, _size

#: Parts carrying manual (hands, arms) and non-manual (face, mouth) cues.
MANUAL_PARTS = ("body", "left_hand", "right_hand")
NON_MANUAL_PARTS = ("face", "mouth")

# Anchor joints used by normalization (canonical indices).
LEFT_SHOULDER = BODY_JOINTS.index("left_shoulder")
RIGHT_SHOULDER = BODY_JOINTS.index("right_shoulder")
BODY_NOSE = BODY_JOINTS.index("nose")
LEFT_WRIST = PART_SLICES["left_hand"].start  # hand joint 0 is the wrist
RIGHT_WRIST = PART_SLICES["right_hand"].start
#: Face anchor: the nose tip, iBUG-68 point 30.
FACE_NOSE_TIP = PART_SLICES["face"].start + 30


def _ibug68_mirror() -> list[int]:
    """Permutation of iBUG-68 points under a horizontal flip (point i -> mirror[i])."""
    m = list(range(68))
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nose bottom
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    for a, b in pairs:
        m[a], m[b] = b, a
    return m


def flip_permutation() -> np.ndarray:
    """Canonical joint permutation for a horizontal flip: ``flipped[:, j] = pose[:, perm[j]]``.

    Swaps the two hands, left/right body joints and the mirrored face and mouth points.
    Returns an int64 array of shape (NUM_JOINTS,); it is an involution.
    """
    perm = np.arange(NUM_JOINTS, dtype=np.int64)
    for j, name in enumerate(BODY_JOINTS):
        if name.startswith("left_"):
            perm[j] = BODY_JOINTS.index("right_" + name[5:])
        elif name.startswith("right_"):
            perm[j] = BODY_JOINTS.index("left_" + name[6:])
    lh, rh = PART_SLICES["left_hand"], PART_SLICES["right_hand"]
    perm[lh] = np.arange(rh.start, rh.stop)
    perm[rh] = np.arange(lh.start, lh.stop)
    mirror = _ibug68_mirror()
    for part, ibug in (("face", FACE_IBUG), ("mouth", MOUTH_IBUG)):
        start = PART_SLICES[part].start
        for k, point in enumerate(ibug):
            target = mirror[point]
            owner = "face" if target in FACE_IBUG else "mouth"
            perm[start + k] = PART_SLICES[owner].start + (FACE_IBUG if owner == "face" else MOUTH_IBUG).index(target)
    return perm


def part_ids() -> np.ndarray:
    """Part index (0..4, in PART_NAMES order) of every canonical joint, shape (NUM_JOINTS,)."""
    ids = np.empty(NUM_JOINTS, dtype=np.int64)
    for p, name in enumerate(PART_NAMES):
        ids[PART_SLICES[name]] = p
    return ids


@dataclass(frozen=True)
class CanonicalLayout:
    """Summary of the canonical layout, for code that wants one object to pass around."""

    num_joints: int = NUM_JOINTS
    part_names: tuple = PART_NAMES
    part_sizes: tuple = PART_SIZES


CANONICAL = CanonicalLayout()
