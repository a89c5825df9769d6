"""The phonology of the synthetic language: the parameter values a sign is made of (location,
movement and direction, handshape, palm orientation, non-dominant hand, mouthing, brows, head)
and the drawing of the gloss parameter sets, pairwise differing in at least two parameters.
"""
from __future__ import annotations

import numpy as np

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
