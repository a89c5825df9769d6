"""The synthetic signer's skeleton and its rendering: parameter tracks -> canonical pose.

Hands are built by forward kinematics (21 joints each), elbows by two-link IK, the face from
an iBUG-68 template that deforms with the mouth and brows and turns with the head.
:func:`_render` places the body in image-normalised coordinates and adds sensor noise,
confidence noise and occasional hand-detection gaps; left-handed signers are mirrored.
"""
from __future__ import annotations

import numpy as np

from ..layouts import NUM_JOINTS, PART_SLICES, flip_permutation

_FINGER_BASE = np.array([(0.035, -0.03), (0.055, -0.19), (0.015, -0.2), (-0.022, -0.19), (-0.055, -0.17)])
_FINGER_LEN = np.array([(0.07, 0.05, 0.04), (0.08, 0.045, 0.035), (0.09, 0.05, 0.037),
                        (0.085, 0.047, 0.035), (0.065, 0.035, 0.03)])
_FINGER_ANGLE = np.array([0.9, 0.08, 0.0, -0.08, -0.17])  # in-plane angle from the -y axis (towards +x)
_THUMB_N = np.array([-0.7, -0.1, -0.7]) / np.linalg.norm([-0.7, -0.1, -0.7])


def _apply_rot(R: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Rotate (T, P, 3) points by (T, 3, 3) matrices."""
    return np.matmul(pts, R.transpose(0, 2, 1))


def _rot(angles: np.ndarray) -> np.ndarray:
    """(T, 3) pitch/yaw/roll -> (T, 3, 3) rotation Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    a, b, c = angles[:, 0], angles[:, 1], angles[:, 2]
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    R = np.empty((angles.shape[0], 3, 3))
    R[:, 0, 0] = cc * cb
    R[:, 0, 1] = cc * sb * sa - sc * ca
    R[:, 0, 2] = cc * sb * ca + sc * sa
    R[:, 1, 0] = sc * cb
    R[:, 1, 1] = sc * sb * sa + cc * ca
    R[:, 1, 2] = sc * sb * ca - cc * sa
    R[:, 2, 0] = -sb
    R[:, 2, 1] = cb * sa
    R[:, 2, 2] = cb * ca
    return R


_BASE3 = np.concatenate([_FINGER_BASE, np.zeros((5, 1))], 1)  # (5, 3)
_FLEX_GAIN = np.array([[0.9, 0.8, 0.8]] + [[1.5, 1.7, 1.1]] * 4)  # per finger: MCP, PIP, DIP
_FLEX_SRC = np.array([0, 1, 1])  # MCP uses flex[..., 0], PIP and DIP flex[..., 1]


def _hand(wrist, angles, flex, spread, size):
    """Right hand by forward kinematics: wrist (T,3), angles (T,3), flex (T,5,2), spread (T,) -> (T,21,3).

    Each finger bends in the plane of its direction ``u`` (in the palm plane, fanned out by
    ``spread``) and the palm normal ``n`` (the thumb in its own oblique plane); segment k
    points along cos(c_k) u + sin(c_k) n with c_k the cumulative joint flexion.
    """
    T = wrist.shape[0]
    ang = np.empty((T, 5))
    ang[:, 0] = _FINGER_ANGLE[0] + 0.3 * spread
    ang[:, 1:] = _FINGER_ANGLE[1:] * (1.0 + 2.5 * spread)[:, None]
    u = np.stack([np.sin(ang), -np.cos(ang), np.zeros_like(ang)], -1)  # (T, 5, 3)
    n = np.zeros((T, 5, 3))
    n[:, 1:, 2] = -1.0
    n0 = _THUMB_N - (u[:, 0] @ _THUMB_N)[:, None] * u[:, 0]
    n[:, 0] = n0 / np.linalg.norm(n0, axis=-1, keepdims=True)
    cum = np.cumsum(flex[:, :, _FLEX_SRC] * _FLEX_GAIN, -1)  # (T, 5, 3)
    v = np.cos(cum)[..., None] * u[:, :, None, :] + np.sin(cum)[..., None] * n[:, :, None, :]
    segs = np.cumsum(_FINGER_LEN[None, :, :, None] * v, 2)  # (T, 5, 3, 3)
    pts = np.zeros((T, 21, 3))
    fingers = pts[:, 1:].reshape(T, 5, 4, 3)
    fingers[:, :, 0] = _BASE3
    fingers[:, :, 1:] = _BASE3[None, :, None, :] + segs
    pts[:, 1:] = fingers.reshape(T, 20, 3)
    return wrist[:, None, :] + size * _apply_rot(_rot(angles), pts)


_FLIP = None


def _flip_perm():
    global _FLIP
    if _FLIP is None:
        _FLIP = flip_permutation()
    return _FLIP


def _face_template() -> np.ndarray:
    """iBUG-68 points in head units (origin at the nose tip, y down), (68, 3)."""
    p = np.zeros((68, 3))
    phi = np.linspace(0, np.pi, 17)
    p[0:17, 0] = -0.17 * np.cos(phi)
    p[0:17, 1] = -0.08 + 0.26 * np.sin(phi) ** 0.9
    p[0:17, 2] = 0.12 - 0.1 * np.sin(phi)
    bx = np.linspace(-0.15, -0.03, 5)
    p[17:22, 0] = bx
    p[17:22, 1] = -0.17 - 0.025 * np.sin(np.linspace(0.3, np.pi - 0.3, 5))
    p[22:27, 0] = -bx[::-1]
    p[22:27, 1] = p[17:22, 1][::-1]
    p[17:27, 2] = -0.04
    p[27:31, 1] = np.linspace(-0.11, 0.0, 4)
    p[27:31, 2] = np.linspace(-0.03, -0.08, 4)
    p[31:36, 0] = np.linspace(-0.04, 0.04, 5)
    p[31:36, 1] = 0.03 + 0.008 * np.abs(np.linspace(-1, 1, 5))
    p[31:36, 2] = -0.05
    for base, cx, order in ((36, -0.075, 1), (42, 0.075, -1)):
        ang = np.array([0, 1, 2, 3, 4, 5]) * np.pi / 3  # corner, top, top, corner, bottom, bottom
        xs = -np.cos(ang) * 0.03 * order
        ys = -np.sin(ang) * 0.012
        p[base:base + 6, 0] = cx + xs
        p[base:base + 6, 1] = -0.1 + ys
        p[base:base + 6, 2] = -0.03
    # outer lips 48..59 (48 right corner, 54 left corner), inner lips 60..67
    t = np.linspace(0, 2 * np.pi, 13)[:12]
    p[48:60, 0] = -0.06 * np.cos(t)
    p[48:60, 1] = 0.09 - 0.022 * np.sin(t)
    t2 = np.linspace(0, 2 * np.pi, 9)[:8]
    p[60:68, 0] = -0.045 * np.cos(t2)
    p[60:68, 1] = 0.09 - 0.008 * np.sin(t2)
    p[48:68, 2] = -0.05
    return p


_FACE = _face_template()
_LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
_UPPER_LIP = np.array([49, 50, 51, 52, 53, 61, 62, 63])
_CHIN = np.arange(4, 13)
_BROWS = np.arange(17, 27)
_INNER_BROWS = np.array([20, 21, 22, 23])
_HEAD_PIVOT = np.array([0.0, -0.25, 0.0])
_NOSE_TIP = np.array([0.0, -0.72, -0.35])


def _head_basis():
    """Head template (70, 3): the face plus ears, and its 6 deformation fields (6, 70*3):
    mouth width - 1, lip rounding (protrusion), mouth opening, puffed cheeks, brow raise, brow
    furrow. The head is template + coefficients @ fields."""
    head = np.concatenate([_FACE, np.array([[0.2, -0.06, 0.1], [-0.2, -0.06, 0.1]])], 0)
    D = np.zeros((6, 70, 3))
    D[0, 48:68, 0] = _FACE[48:68, 0]  # width: x of the mouth (its centre is at x = 0)
    D[1, 48:68, 2] = -0.02
    D[2, _LOWER_LIP, 1] = 0.05
    D[2, _UPPER_LIP, 1] = -0.008
    D[2, _CHIN, 1] = 0.04
    D[3, 2:15, 0] = 0.1 * _FACE[2:15, 0]
    D[4, _BROWS, 1] = -0.03
    D[5, _INNER_BROWS, 1] = 0.02
    D[5, _INNER_BROWS[:2], 0] = 0.012
    D[5, _INNER_BROWS[2:], 0] = -0.012
    return head, D.reshape(6, 210)


_HEAD0, _HEAD_DEFORM = _head_basis()


def _ik_elbow(shoulder, wrist, a, b, pole):
    d = wrist - shoulder
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    dist_c = np.clip(dist, 1e-6, (a + b) * 0.999)
    dirn = d / np.maximum(dist, 1e-6)
    x = (a * a - b * b + dist_c ** 2) / (2 * dist_c)
    h = np.sqrt(np.maximum(a * a - x * x, 0.0))
    perp = pole - (dirn @ pole)[:, None] * dirn
    perp /= np.maximum(np.linalg.norm(perp, axis=-1, keepdims=True), 1e-6)
    return shoulder + dirn * x + perp * h


def _render(tr: dict, sg: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tracks -> canonical pose (T, J, 3) image-normalised, confidence (T, J)."""
    T = tr["rw"].shape[0]
    J = NUM_JOINTS
    sw = sg["shoulder"]
    sway = 0.015 * np.sin(2 * np.pi * (np.arange(T) / 60.0 + sg["phase"]))
    ls = np.stack([np.full(T, 0.5 * sw) + sway, np.zeros(T), np.zeros(T)], -1)
    rs = np.stack([np.full(T, -0.5 * sw) + sway, np.zeros(T), np.zeros(T)], -1)
    # hands: right as is; left = mirror of a right hand rendered from the l* tracks
    rhand = _hand(tr["rw"], tr["ra"], tr["rf"].reshape(T, 5, 2), tr["rs"][:, 0], sg["hand"])
    lhand = _hand(tr["lw"], tr["la"], tr["lf"].reshape(T, 5, 2), tr["ls"][:, 0], sg["hand"])
    lhand[..., 0] *= -1
    a, b = 0.62 * sg["arm"], 0.6 * sg["arm"]
    relb = _ik_elbow(rs, rhand[:, 0], a, b, np.array([-0.6, 1.0, 0.4]))
    lelb = _ik_elbow(ls, lhand[:, 0], a, b, np.array([0.6, 1.0, 0.4]))
    # head: face (68 iBUG points) + ears as the template plus a linear combination of
    # deformation fields (mouth open/width/rounding, cheeks, brow raise/furrow), then turned
    coef = np.stack([tr["width"][:, 0] - 1.0, (tr["width"][:, 0] < 0.9).astype(float), tr["open"][:, 0],
                     tr["cheek"][:, 0], np.maximum(tr["brow"][:, 0], 0), np.maximum(-tr["brow"][:, 0], 0)], -1)
    head_pts = (_HEAD0 + (coef @ _HEAD_DEFORM).reshape(T, 70, 3)) * sg["face"]
    head_pts = _HEAD_PIVOT + _apply_rot(_rot(tr["head"]), head_pts + (_NOSE_TIP - _HEAD_PIVOT))
    head_pts[..., 0] += sway[:, None] * 0.7
    face = head_pts[:, :68]
    body = np.empty((T, 13, 3))
    body[:, 0] = face[:, 30]
    body[:, 1] = face[:, 42:48].mean(1)  # signer's left eye (image right)
    body[:, 2] = face[:, 36:42].mean(1)
    body[:, 3] = head_pts[:, 68]
    body[:, 4] = head_pts[:, 69]
    body[:, 5], body[:, 6] = ls, rs
    body[:, 7], body[:, 8] = lelb, relb
    body[:, 9], body[:, 10] = lhand[:, 0], rhand[:, 0]
    body[:, 11] = np.array([0.36 * sw, 1.7, 0.05])
    body[:, 12] = np.array([-0.36 * sw, 1.7, 0.05])
    # canonical order: body, left hand, right hand, face (iBUG 0-47), mouth (iBUG 48-67)
    pose = np.concatenate([body, lhand, rhand, face], 1).astype(np.float32)
    # confidence: 0.90..1.0 (uniform), hips lower (often out of frame)
    conf = rng.random((T, J), dtype=np.float32)
    conf *= np.float32(0.1)
    conf += np.float32(0.9)
    conf[:, 11:13] = np.clip(0.6 + 0.1 * rng.standard_normal((T, 2), dtype=np.float32), 0.1, 1.0)
    if sg["left_handed"]:
        pose = pose[:, _flip_perm()]
        pose[..., 0] *= -1
    # body units -> image coordinates, plus smooth jitter and sensor noise
    drift = np.cumsum(rng.normal(0, sg["noise"] * 0.3, (T, 1, 3)), 0)
    shift = (drift - drift.mean(0) + np.array([0.5 + sg["dx"], 0.42 + sg["dy"], 0.0])).astype(np.float32)
    pose *= np.float32(0.2 * sg["size"])
    pose += shift
    noise = rng.random((T, J, 3), dtype=np.float32)  # uniform sensor noise with std sg["noise"]
    noise -= np.float32(0.5)
    noise *= np.float32(sg["noise"] * 12 ** 0.5)
    pose += noise
    if rng.random() < 0.15 and T > 12:  # a hand-detection gap
        part = PART_SLICES["left_hand" if rng.random() < 0.5 else "right_hand"]
        t0 = int(rng.integers(0, T - 6))
        n = int(rng.integers(1, 6))
        pose[t0:t0 + n, part] = 0.0
        conf[t0:t0 + n, part] = 0.0
    return pose, conf
