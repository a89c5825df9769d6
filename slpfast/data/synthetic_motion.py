"""Motion of the synthetic signer: gloss parameters -> parameter tracks over time.

A track set holds, per frame, both wrists, hand orientations, finger flexion and spread,
head rotation, mouth opening/width, cheeks and brows (:data:`_TRACKS`). :func:`_sign` builds
the tracks of one gloss instance, :func:`_rest` the rest pose, and :func:`_concat` joins
them with smoothstep transitions.
"""
from __future__ import annotations

import numpy as np

from .synthetic_phonology import DIRECTIONS, HANDSHAPES, LOCATIONS, ORIENTATIONS


def _smooth(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


_TRACKS = {"rw": 3, "ra": 3, "rf": 10, "rs": 1, "lw": 3, "la": 3, "lf": 10, "ls": 1,
           "head": 3, "open": 1, "width": 1, "brow": 1, "cheek": 1}


def _shape_vec(name):
    fl, sp = HANDSHAPES[name]
    return np.array(fl, float).reshape(10), sp


_REST_W = np.array([-0.42, 1.45, -0.1])
_REST_A = np.array([0.0, 1.4, 0.0])
_REST_F = np.full(10, 0.3)


def _rest(T: int) -> dict:
    tr = {k: np.zeros((T, n)) for k, n in _TRACKS.items()}
    for h in "rl":
        tr[h + "w"][:] = _REST_W
        tr[h + "a"][:] = _REST_A
        tr[h + "f"][:] = _REST_F
        tr[h + "s"][:] = 0.2
    tr["width"][:] = 1.0
    return tr


def _frame(d):
    d = np.array(d, float)
    e1 = np.cross(d, [0.3, 0.5, 0.8])
    e1 /= np.linalg.norm(e1)
    return d, e1, np.cross(d, e1)


#: per movement direction: (direction, two unit vectors spanning the plane across it)
_FRAMES = {k: _frame(v) for k, v in DIRECTIONS.items()}


def _sign(g: dict, T: int, sg: dict, rng: np.random.Generator) -> dict:
    """Parameter tracks of one gloss instance, T frames."""
    tr = _rest(T)
    u = np.linspace(0.0, 1.0, T)
    A = 0.28 * sg["amp"] * rng.uniform(0.85, 1.15)
    loc = np.array(LOCATIONS[g["location"]]) + sg["loc_offset"] + rng.normal(0, 0.025, 3)
    d, e1, e2 = _FRAMES[g["direction"]]
    mv = g["movement"]
    off = np.zeros((T, 3))
    ang = np.zeros((T, 3))
    if mv == "line":
        off = (_smooth(u) - 0.5)[:, None] * A * d
    elif mv == "circle":
        off = 0.5 * A * (np.cos(2 * np.pi * u)[:, None] * e1 + np.sin(2 * np.pi * u)[:, None] * e2)
    elif mv == "tap":
        off = 0.3 * A * np.abs(np.sin(2 * np.pi * u))[:, None] * d
    elif mv == "arc":
        off = 0.5 * A * (-np.cos(np.pi * u)[:, None] * e1 + np.sin(np.pi * u)[:, None] * d)
    elif mv == "zigzag":
        tri = 2 * np.abs((3 * u) % 1.0 - 0.5) - 0.5
        off = A * ((u - 0.5)[:, None] * e1 + 0.4 * tri[:, None] * d)
    elif mv == "twist":
        ang[:, 2] = 1.1 * np.sin(np.pi * u) * (1 if g["direction"] in ("up", "left", "forward") else -1)
    elif mv == "hold":
        off = 0.01 * np.sin(2 * np.pi * 2 * u)[:, None] * d
    tr["rw"][:] = loc + off
    tr["ra"][:] = np.array(ORIENTATIONS[g["orientation"]]) + ang + rng.normal(0, 0.05, 3)
    fa, sa = _shape_vec(g["handshape"])
    fb, sb = _shape_vec(g["handshape_end"])
    w = _smooth((u - 0.3) / 0.4)[:, None]
    flex = (1 - w) * fa + w * fb
    if mv == "wiggle":
        phase = np.repeat(np.arange(5), 2) * 0.9
        flex = flex + 0.3 * np.sin(2 * np.pi * 3 * u[:, None] + phase) * (np.arange(10) >= 2)
    tr["rf"][:] = np.clip(flex, 0, 1)
    tr["rs"][:, 0] = (1 - w[:, 0]) * sa + w[:, 0] * sb
    nd = g["nondom"]
    if nd in ("mirror", "alternate"):
        src = _sign(dict(g, nondom="rest"), T, sg, np.random.default_rng(rng.integers(1 << 31))) if nd == "alternate" else tr
        for k in ("w", "a", "f", "s"):
            tr["l" + k][:] = src["r" + k] if nd == "mirror" else np.roll(src["r" + k], T // 2, axis=0)
    elif nd == "base":
        tr["lw"][:] = np.array([-0.05, 0.45, -0.55]) + sg["loc_offset"] * 0.5
        tr["la"][:] = ORIENTATIONS["up"]
        tr["lf"][:] = _shape_vec("B")[0]
        tr["ls"][:] = 0.0
        tr["rw"][:] = tr["rw"] * 0.4 + np.array([0.08, 0.3, -0.65]) * 0.6 + 0.5 * off
    m = g["mouthing"]
    if m == "pa":
        tr["open"][:, 0] = 0.9 * np.exp(-((u - 0.4) / 0.12) ** 2)
    elif m == "mama":
        tr["open"][:, 0] = 0.5 * (1 - np.cos(2 * np.pi * 3 * u)) / 2
    elif m == "oo":
        tr["open"][:, 0] = 0.3
        tr["width"][:, 0] = 0.65
    elif m == "ee":
        tr["open"][:, 0] = 0.1
        tr["width"][:, 0] = 1.3
    elif m == "puff":
        tr["cheek"][:, 0] = 1.0
    env = _smooth(u / 0.2) * _smooth((1 - u) / 0.2)
    tr["brow"][:, 0] = {"neutral": 0.0, "raise": 1.0, "furrow": -1.0}[g["brows"]] * env
    h = g["head"]
    if h == "nod":
        tr["head"][:, 0] = 0.18 * np.sin(2 * np.pi * 2 * u)
    elif h == "shake":
        tr["head"][:, 1] = 0.25 * np.sin(2 * np.pi * 2 * u)
    elif h == "tilt":
        tr["head"][:, 2] = 0.2 * env
    return tr


def _concat(segments: list[dict], rng, speed: float) -> dict:
    """Join segments with smoothstep transitions between the last frame of one and the first of the next."""
    parts = [segments[0]]
    for seg in segments[1:]:
        prev = parts[-1]
        n = max(3, int(round(rng.integers(6, 11) / speed)))
        w = _smooth(np.linspace(0, 1, n + 2)[1:-1])[:, None]
        parts.append({k: (1 - w) * prev[k][-1] + w * seg[k][0] for k in _TRACKS})
        parts.append(seg)
    return {k: np.concatenate([p[k] for p in parts], 0) for k in _TRACKS}
