"""A procedural sign language, rendered in the canonical layout: the embedded default corpus.

The language
------------
Each gloss of the vocabulary is a combination of phonological parameters, like a real sign:

- **location** of the dominant hand (forehead, temple, nose, chin, cheek, neck, chest, own
  shoulder, other shoulder, stomach, neutral space low/high),
- **movement** (hold, line, circle, double tap, arc, zigzag, finger wiggle, wrist twist) and
  its **direction** (up/down/left/right/forward/back),
- **handshape** (14 finger configurations: A, S, B, 5, 1, V, Y, L, C, O, W, I, claw, X,
  bent-B; each finger has MCP and PIP/DIP flexion plus finger spread), optionally changing
  to a second handshape during the sign,
- **palm orientation** (6),
- the **non-dominant hand** (at rest, mirroring, alternating, or a passive flat base),
- **mouthing** (none, "pa", "mama", rounded "oo", spread "ee", puffed cheeks),
- **brows** (neutral, raised, furrowed) and a **head** movement (none, nod, shake, tilt).

Glosses are drawn so that every pair differs in at least two parameters and every parameter
value is shared by many glosses: no single feature identifies a gloss. The vocabulary has
word classes (pronouns, time words, question words, NOT, verbs, adjectives, nouns); each gloss
is paired with an English word.

Sentences follow a sign-language-like grammar (time first, object before verb, adjective
after noun, question word and negation at the end): ``YESTERDAY I BOOK RED BUY`` pairs with
the text ``yesterday i buy the red book``. Translation therefore needs reordering and
function words, not a word-by-word copy.

Signers and rendering
---------------------
Each signer has a body size, proportions, position in the frame, signing speed, movement
amplitude, a personal offset of the sign locations, a noise level and handedness (about one
in eight is left-handed: the whole body is mirrored). A clip is rendered as parameter tracks
(wrists, hand orientation, finger flexion, head rotation, mouth opening/width, brows)
for rest -> transition -> sign -> transition -> ... -> rest, with smooth (smoothstep)
transitions between glosses and per-instance jitter in timing, location and amplitude. Hands
are built by forward kinematics (21 joints each), elbows by two-link IK, the face from an
iBUG-68 template that deforms with the mouth and brows and turns with the head. Coordinates
are image-normalised (x right, y down, z towards the camera negative) like MediaPipe, plus
sensor noise, small confidence noise and occasional hand-detection gaps (confidence 0).

Splits
------
``islr_train`` / ``islr_val`` / ``islr_test`` (isolated glosses: ``label`` = gloss id,
``gloss_ids`` = [gloss]) and ``sentence_train`` / ``sentence_val`` / ``sentence_test``
(CSLR gloss sequences, retrieval and translation: ``label`` = -1). About 80/10/10, every gloss
in every ISLR split; the same signers appear in all splits.

``generate_corpus(out_dir, num_clips=4000, seed=0)`` writes it as a store (deterministic
given the arguments; each clip is a function of (seed, clip index) only) and returns the
opened :class:`~slpfast.data.Store`. The vocabulary, gloss->word mapping, the gloss
parameters and the generator settings are in ``store.meta["synthetic"]``.
"""
from __future__ import annotations

import os

import numpy as np

from ..layouts import NUM_JOINTS, PART_SLICES, flip_permutation

GENERATOR_VERSION = 2
FPS = 25.0

# --------------------------------------------------------------------------- vocabulary
_WORDS = {
    "pronoun": ["i", "you", "he", "she", "we", "they"],
    "time": ["yesterday", "today", "tomorrow", "now", "later", "tonight", "morning"],
    "question": ["what", "where", "who", "why", "when", "how"],
    "neg": ["not"],
    "verb": ["like", "want", "see", "have", "need", "help", "eat", "drink", "read", "buy", "make",
             "love", "know", "find", "give", "take", "learn", "teach", "visit", "call", "bring", "sell",
             "watch", "open"],
    "adjective": ["big", "small", "new", "old", "good", "bad", "red", "blue", "hot", "cold", "happy",
                  "sad", "green", "long"],
    "noun": ["book", "house", "car", "dog", "cat", "water", "food", "school", "friend", "teacher", "family",
             "doctor", "money", "phone", "coffee", "city", "tree", "ball", "computer", "bread", "apple",
             "train", "letter", "shirt", "garden", "movie", "game", "song", "door", "table", "bird", "flower",
             "milk", "chair", "window", "river", "mountain", "cake", "hat", "bag", "key", "picture", "shoe",
             "box", "egg", "fish", "horse", "boat", "bike", "clock", "paper", "lamp", "bed", "cup", "road",
             "sun", "moon", "star", "rain", "snow", "office", "store", "park", "church", "bank", "bus",
             "plane", "baby", "child", "brother", "sister", "mother", "father", "teacher2"],
}
_CLASS_SHARE = {"pronoun": 0.06, "time": 0.07, "question": 0.06, "neg": 0.01, "verb": 0.2, "adjective": 0.12}


def _vocabulary(num_glosses: int) -> tuple[list[str], list[str], list[str]]:
    """(gloss names, words, classes) for ``num_glosses`` glosses."""
    if num_glosses < 8:
        raise ValueError("num_glosses must be >= 8")
    counts = {c: max(1 if c != "neg" else 0, int(round(s * num_glosses))) for c, s in _CLASS_SHARE.items()}
    counts["pronoun"] = max(2, counts["pronoun"])
    counts["verb"] = max(2, counts["verb"])
    counts["noun"] = num_glosses - sum(counts.values())
    words, classes = [], []
    for c in ("pronoun", "time", "question", "neg", "verb", "adjective", "noun"):
        pool = _WORDS[c]
        for k in range(counts[c]):
            w = pool[k] if k < len(pool) else f"{pool[k % len(pool)]}{k // len(pool) + 1}"
            words.append(w)
            classes.append(c)
    glosses = ["IX-" + w.upper() if c == "pronoun" else w.upper() for w, c in zip(words, classes)]
    return glosses, words, classes


# --------------------------------------------------------------------------- phonology
LOCATIONS = {  # dominant (right) wrist targets in body units (shoulder width 1, y down, z<0 to camera)
    "forehead": (-0.05, -1.05, -0.35), "temple": (-0.28, -0.95, -0.25), "nose": (-0.02, -0.8, -0.42),
    "chin": (-0.02, -0.55, -0.4), "cheek": (-0.24, -0.7, -0.3), "neck": (-0.03, -0.2, -0.35),
    "chest": (-0.05, 0.25, -0.4), "shoulder": (-0.45, 0.05, -0.3), "other_shoulder": (0.35, 0.1, -0.35),
    "stomach": (-0.05, 0.85, -0.4), "neutral": (-0.25, 0.45, -0.8), "neutral_high": (-0.25, -0.15, -0.85),
}
MOVEMENTS = ("hold", "line", "circle", "tap", "arc", "zigzag", "wiggle", "twist")
DIRECTIONS = {"up": (0, -1, 0), "down": (0, 1, 0), "left": (1, 0, 0), "right": (-1, 0, 0),
              "forward": (0, 0, -1), "back": (0, 0, 1)}
# per finger (thumb, index, middle, ring, pinky): (MCP flexion, PIP/DIP flexion) in [0, 1]; then spread
HANDSHAPES = {
    "A": ([(0.1, 0.1), (1, 1), (1, 1), (1, 1), (1, 1)], 0.0),
    "S": ([(0.8, 0.6), (1, 1), (1, 1), (1, 1), (1, 1)], 0.0),
    "B": ([(0.6, 0.3), (0, 0), (0, 0), (0, 0), (0, 0)], 0.0),
    "5": ([(0, 0), (0, 0), (0, 0), (0, 0), (0, 0)], 1.0),
    "1": ([(0.8, 0.6), (0, 0), (1, 1), (1, 1), (1, 1)], 0.0),
    "V": ([(0.8, 0.6), (0, 0), (0, 0), (1, 1), (1, 1)], 1.0),
    "Y": ([(0, 0), (1, 1), (1, 1), (1, 1), (0, 0)], 0.8),
    "L": ([(0, 0), (0, 0), (1, 1), (1, 1), (1, 1)], 0.3),
    "C": ([(0.3, 0.3), (0.45, 0.5), (0.45, 0.5), (0.45, 0.5), (0.45, 0.5)], 0.2),
    "O": ([(0.6, 0.5), (0.6, 0.8), (0.6, 0.8), (0.6, 0.8), (0.6, 0.8)], 0.0),
    "W": ([(0.8, 0.6), (0, 0), (0, 0), (0, 0), (1, 1)], 0.8),
    "I": ([(0.8, 0.6), (1, 1), (1, 1), (1, 1), (0, 0)], 0.0),
    "claw": ([(0.2, 0.5), (0.1, 0.9), (0.1, 0.9), (0.1, 0.9), (0.1, 0.9)], 1.0),
    "X": ([(0.8, 0.6), (0.2, 0.9), (1, 1), (1, 1), (1, 1)], 0.0),
    "bentB": ([(0.5, 0.2), (1, 0), (1, 0), (1, 0), (1, 0)], 0.0),
}
ORIENTATIONS = {  # (pitch about x, yaw about y, roll about z) of the hand frame
    "out": (0.0, 0.0, 0.0), "in": (0.0, np.pi, 0.0), "down": (-1.3, 0.0, 0.0), "up": (1.3, np.pi, 0.0),
    "side": (0.0, 1.4, 0.0), "tilt": (0.0, 0.3, 0.8),
}
NONDOM = ("rest", "mirror", "alternate", "base")
MOUTHINGS = ("none", "pa", "mama", "oo", "ee", "puff")
BROWS = ("neutral", "raise", "furrow")
HEADS = ("none", "nod", "shake", "tilt")
_FEATURES = ("location", "movement", "direction", "handshape", "handshape_end", "orientation",
             "nondom", "mouthing", "brows", "head")


def _draw_glosses(num_glosses: int, rng: np.random.Generator) -> list[dict]:
    """Gloss parameter sets, pairwise differing in >= 2 parameters."""
    choices = {"location": list(LOCATIONS), "movement": list(MOVEMENTS), "direction": list(DIRECTIONS),
               "handshape": list(HANDSHAPES), "orientation": list(ORIENTATIONS), "nondom": list(NONDOM),
               "mouthing": list(MOUTHINGS), "brows": list(BROWS), "head": list(HEADS)}
    probs = {"nondom": [0.55, 0.2, 0.1, 0.15], "mouthing": [0.3, 0.15, 0.15, 0.15, 0.15, 0.1],
             "brows": [0.6, 0.2, 0.2], "head": [0.6, 0.15, 0.15, 0.1]}
    out: list[dict] = []
    keys: list[tuple] = []
    while len(out) < num_glosses:
        g = {k: v[rng.choice(len(v), p=probs.get(k))] for k, v in choices.items()}
        g["handshape_end"] = g["handshape"] if rng.random() < 0.75 else list(HANDSHAPES)[rng.integers(len(HANDSHAPES))]
        key = tuple(g[f] for f in _FEATURES)
        if all(sum(a != b for a, b in zip(key, k)) >= 2 for k in keys):
            keys.append(key)
            g["duration"] = int(rng.integers(14, 24)) + (6 if g["movement"] in ("circle", "zigzag", "wiggle") else 0)
            out.append(g)
    return out


# --------------------------------------------------------------------------- geometry
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


def _smooth(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


# --------------------------------------------------------------------------- tracks
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


def _signers(num_signers: int, rng: np.random.Generator) -> list[dict]:
    out = []
    for k in range(num_signers):
        out.append({
            "id": f"signer{k:02d}", "size": rng.uniform(0.85, 1.15), "dx": rng.uniform(-0.06, 0.06),
            "dy": rng.uniform(-0.04, 0.04), "speed": rng.uniform(0.8, 1.25), "amp": rng.uniform(0.8, 1.2),
            "loc_offset": rng.normal(0, 0.04, 3), "noise": rng.uniform(0.0015, 0.005),
            "left_handed": bool(k % 8 == 5), "shoulder": rng.uniform(0.9, 1.1), "arm": rng.uniform(0.92, 1.08),
            "face": rng.uniform(0.9, 1.1), "hand": rng.uniform(0.9, 1.1), "phase": rng.random(),
        })
    return out


# --------------------------------------------------------------------------- sentences
def _sentence(rng: np.random.Generator, classes: list[str], words: list[str]) -> tuple[list[int], str]:
    by = {c: [i for i, k in enumerate(classes) if k == c] for c in set(classes)}
    pick = lambda c: int(rng.choice(by[c]))  # noqa: E731
    has = lambda c: c in by and by[c]  # noqa: E731
    subj = pick("pronoun")
    verb = pick("verb")
    obj = pick("noun") if has("noun") else pick("pronoun")
    adj = pick("adjective") if has("adjective") and rng.random() < 0.4 else None
    time = pick("time") if has("time") and rng.random() < 0.35 else None
    kind = rng.random()
    neg = has("neg") and kind < 0.2
    q = pick("question") if has("question") and 0.2 <= kind < 0.4 else None
    w = words
    if q is not None:
        gl = ([time] if time is not None else []) + [subj, verb, q]
        tx = f"{w[q]} do {w[subj]} {w[verb]}" + (f" {w[time]}" if time is not None else "") + " ?"
        return gl, tx
    np_gl = [obj] + ([adj] if adj is not None else [])
    gl = ([time] if time is not None else []) + [subj] + np_gl + [verb] + ([by["neg"][0]] if neg else [])
    obj_txt = f"the {w[adj]} {w[obj]}" if adj is not None else f"the {w[obj]}"
    tx = (f"{w[time]} " if time is not None else "") + f"{w[subj]} " + ("do not " if neg else "") + f"{w[verb]} {obj_txt}"
    return gl, tx


# --------------------------------------------------------------------------- corpus
class SyntheticLanguage:
    """The vocabulary, gloss parameters and signers for a seed; renders clips."""

    def __init__(self, seed: int = 0, num_glosses: int = 100, num_signers: int = 10):
        rng = np.random.default_rng([seed, 7919])
        self.seed = seed
        self.glosses, self.words, self.classes = _vocabulary(num_glosses)
        self.params = _draw_glosses(num_glosses, rng)
        self.signers = _signers(num_signers, rng)

    def render(self, gloss_seq: list[int], signer: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        sg = self.signers[signer]
        speed = sg["speed"] * rng.uniform(0.9, 1.1)
        segs = [_rest(int(rng.integers(5, 12)))]
        for g in gloss_seq:
            p = self.params[g]
            T = max(6, int(round(p["duration"] / speed * rng.uniform(0.85, 1.15))))
            segs.append(_sign(p, T, sg, rng))
        segs.append(_rest(int(rng.integers(5, 12))))
        tr = _concat(segs, rng, speed)
        return _render(tr, sg, rng)

    def clip(self, index: int, kind: str, gloss_hint: int | None = None) -> dict:
        """Clip ``index`` of the corpus: an isolated gloss (kind 'islr') or a sentence."""
        rng = np.random.default_rng([self.seed, index])
        signer = int(rng.integers(len(self.signers)))
        if kind == "islr":
            g = int(gloss_hint if gloss_hint is not None else rng.integers(len(self.glosses)))
            seq, text, label = [g], self.words[g], g
        else:
            seq, text = _sentence(rng, self.classes, self.words)
            label = -1
        pose, conf = self.render(seq, signer, rng)
        return {"pose": pose, "conf": conf, "glosses": seq, "text": text, "label": label,
                "signer": self.signers[signer]["id"]}

    def meta(self) -> dict:
        def clean(d):
            return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}

        return {"version": GENERATOR_VERSION, "seed": self.seed, "fps": FPS, "vocab": self.glosses,
                "words": self.words, "classes": self.classes,
                "gloss_to_text": dict(zip(self.glosses, self.words)),
                "gloss_params": [clean(p) for p in self.params],
                "signers": [clean(s) for s in self.signers]}


def _split_of(k: int, prefix: str) -> str:
    r = (k * 7 + 3) % 10
    return f"{prefix}_val" if r == 0 else f"{prefix}_test" if r == 1 else f"{prefix}_train"


def _clip_worker(args):
    seed, num_glosses, num_signers, jobs = args
    lang = SyntheticLanguage(seed, num_glosses, num_signers)
    return [lang.clip(i, kind, g) for i, kind, g in jobs]


def corpus_plan(num_clips: int, num_glosses: int, islr_fraction: float) -> list[tuple]:
    """(index, kind, gloss, split) of every clip: ISLR clips cycle over the glosses."""
    n_islr = int(round(num_clips * islr_fraction))
    plan = []
    for i in range(num_clips):
        if i < n_islr:
            g = i % num_glosses
            plan.append((i, "islr", g, _split_of(i // num_glosses, "islr")))
        else:
            plan.append((i, "sentence", None, _split_of(i - n_islr, "sentence")))
    return plan


def generate_corpus(out_dir: str, num_clips: int = 4000, seed: int = 0, *, num_glosses: int = 100,
                    num_signers: int = 10, islr_fraction: float = 0.5, workers: int | str = "auto",
                    shard_clips: int = 2048, overwrite: bool = True):
    """Generate the synthetic corpus into a store at ``out_dir``; returns the opened Store.

    Deterministic: the same arguments give byte-identical shards. ``workers`` > 1 renders in
    that many processes (same output); "auto": all cores for 1500 clips or more. With ``overwrite=False`` an existing complete store
    generated with the same arguments is reused as is.
    """
    from .store_reader import Store

    if not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
        raise ValueError(f"generate_corpus: num_clips must be an int >= 1, got {num_clips!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"generate_corpus: seed must be an int >= 0, got {seed!r}")
    if not isinstance(num_signers, (int, np.integer)) or num_signers < 1:
        raise ValueError(f"generate_corpus: num_signers must be an int >= 1, got {num_signers!r}")
    if not 0.0 <= islr_fraction <= 1.0:
        raise ValueError(f"generate_corpus: islr_fraction must be in [0, 1], got {islr_fraction!r}")
    settings = {"num_clips": num_clips, "seed": seed, "num_glosses": num_glosses,
                "num_signers": num_signers, "islr_fraction": islr_fraction}
    if not overwrite and os.path.isfile(os.path.join(out_dir, "store.json")):
        try:
            st = Store(out_dir)
            if st.meta.get("synthetic", {}).get("settings") == settings and \
                    st.meta["synthetic"].get("version") == GENERATOR_VERSION:
                return st
        except Exception:
            pass
    if os.path.isdir(out_dir):
        for f in os.listdir(out_dir):
            if f.endswith(".slp") or ".slp.tmp-" in f or f == "store.json":
                os.unlink(os.path.join(out_dir, f))
    lang = SyntheticLanguage(seed, num_glosses, num_signers)
    meta = lang.meta()
    meta["settings"] = settings
    plan = corpus_plan(num_clips, num_glosses, islr_fraction)
    if workers == "auto":
        workers = min(os.cpu_count() or 1, 8) if num_clips >= 1500 else 0
    if workers and workers > 1:
        import multiprocessing as mp

        chunk = 256
        jobs = [(seed, num_glosses, num_signers, [(i, k, g) for i, k, g, _ in plan[s: s + chunk]])
                for s in range(0, len(plan), chunk)]
        with mp.get_context("spawn").Pool(workers) as pool:
            clips_iter = (c for batch in pool.imap(_clip_worker, jobs) for c in batch)
            _write(out_dir, plan, clips_iter, meta, shard_clips)
    else:
        _write(out_dir, plan, (lang.clip(i, k, g) for i, k, g, _ in plan), meta, shard_clips)
    return Store(out_dir)


def _write(out_dir, plan, clips, meta, shard_clips):
    from .store_writer import StoreWriter

    with StoreWriter(out_dir, meta={"synthetic": meta, "fps": FPS}, shard_clips=shard_clips) as w:
        for (i, kind, _, split), c in zip(plan, clips):
            w.add(c["pose"], c["conf"], text=c["text"], split=split, source="synthetic", language="synthetic-sl",
                  signer=c["signer"], fps=FPS, label=c["label"], glosses=c["glosses"], key=f"synthetic-{i:07d}",
                  dims=3)


def default_corpus(cache_dir: str | None = None, **kwargs):
    """The default synthetic corpus, generated into a cache folder on first use (then reused)."""
    cache_dir = cache_dir or os.path.join(os.environ.get("SLPFAST_CACHE", os.path.expanduser("~/.cache/slpfast")), "synthetic")
    return generate_corpus(cache_dir, overwrite=False, **kwargs)


__all__ = ["generate_corpus", "default_corpus", "SyntheticLanguage", "corpus_plan", "FPS"]
