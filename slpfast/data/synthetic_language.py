"""One synthetic language for a seed: :class:`SyntheticLanguage` draws the vocabulary, the
gloss parameters and the signers, and renders clip ``index`` deterministically.
"""
from __future__ import annotations

import numpy as np

from .synthetic_motion import _concat, _rest, _sign
from .synthetic_phonology import _draw_glosses
from .synthetic_render import _render
from .synthetic_vocabulary import MIN_GLOSSES, _sentence, _vocabulary

GENERATOR_VERSION = 5
FPS = 25.0


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


class SyntheticLanguage:
    """The vocabulary, gloss parameters and signers for a seed; renders clips."""

    def __init__(self, seed: int = 0, num_glosses: int = 100, num_signers: int = 10):
        for name, v, lo in (("seed", seed, 0), ("num_glosses", num_glosses, MIN_GLOSSES),
                            ("num_signers", num_signers, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"SyntheticLanguage: {name} must be an int >= {lo}, got {v!r}")
        seed = int(seed)
        rng = np.random.default_rng([seed, 7919])
        self.seed = seed
        self.glosses, self.words, self.classes = _vocabulary(num_glosses)
        self.params = _draw_glosses(num_glosses, rng)
        self.signers = _signers(num_signers, rng)

    def render(self, gloss_seq: list[int], signer: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Gloss ids signed by signer ``signer`` (between rests) -> pose float32 (T, 123, 3)
        image-normalised, confidence float32 (T, 123)."""
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
        """Clip ``index`` of the corpus: an isolated gloss (kind 'islr', gloss ``gloss_hint`` or
        a random one) or a sentence (kind 'sentence').

        Returns ``pose`` float32 (T, 123, 3) canonical layout, ``conf`` float32 (T, 123) in
        [0, 1], ``glosses`` (gloss ids), ``text``, ``label`` (gloss id, -1 for a sentence) and
        ``signer`` (its id); a function of (seed, index, kind, gloss_hint) only.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"SyntheticLanguage.clip: index must be an int >= 0, got {index!r}")
        if kind not in ("islr", "sentence"):
            raise ValueError(f"SyntheticLanguage.clip: kind must be 'islr' or 'sentence', got {kind!r}")
        if gloss_hint is not None and (isinstance(gloss_hint, bool) or not isinstance(gloss_hint, (int, np.integer))
                                       or not 0 <= gloss_hint < len(self.glosses)):
            raise ValueError(f"SyntheticLanguage.clip: gloss_hint must be None or a gloss id in "
                             f"[0, {len(self.glosses)}), got {gloss_hint!r}")
        rng = np.random.default_rng([self.seed, int(index)])
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
