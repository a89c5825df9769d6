"""The words of the synthetic language: glosses, their English words and word classes, and
the sentence grammar that pairs a gloss sequence with its English text.

A sentence follows a sign-language-like order (time first, object before verb, adjective
after noun, question word and negation at the end); its text needs reordering and function
words (see :mod:`slpfast.data.synthetic`).
"""
from __future__ import annotations

import numpy as np

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


#: the smallest vocabulary: two pronouns, two verbs and one of each other class but NOT
MIN_GLOSSES = 8


def _vocabulary(num_glosses: int) -> tuple[list[str], list[str], list[str]]:
    """(gloss names, words, classes) for ``num_glosses`` glosses; words and gloss names are
    unique (a word beyond its class's list gets a number: ``book2``, ``book3``, ...)."""
    if isinstance(num_glosses, bool) or not isinstance(num_glosses, (int, np.integer)) or num_glosses < MIN_GLOSSES:
        raise ValueError(f"num_glosses must be an int >= {MIN_GLOSSES}, got {num_glosses!r}")
    num_glosses = int(num_glosses)
    counts = {c: max(1 if c != "neg" else 0, int(round(s * num_glosses))) for c, s in _CLASS_SHARE.items()}
    counts["pronoun"] = max(2, counts["pronoun"])
    counts["verb"] = max(2, counts["verb"])
    counts["noun"] = num_glosses - sum(counts.values())
    words, classes = [], []
    taken = {w for pool in _WORDS.values() for w in pool}  # a numbered word must not be a listed one
    for c in ("pronoun", "time", "question", "neg", "verb", "adjective", "noun"):
        pool = _WORDS[c]
        for k in range(counts[c]):
            if k < len(pool):
                w = pool[k]
            else:
                n = k // len(pool) + 1
                while f"{pool[k % len(pool)]}{n}" in taken:  # e.g. the listed noun teacher2
                    n += 1
                w = f"{pool[k % len(pool)]}{n}"
                taken.add(w)
            words.append(w)
            classes.append(c)
    glosses = ["IX-" + w.upper() if c == "pronoun" else w.upper() for w, c in zip(words, classes)]
    return glosses, words, classes


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
