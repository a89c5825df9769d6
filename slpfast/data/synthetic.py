"""A procedural sign language, rendered in the canonical layout: the embedded default corpus.

The language
------------
Each gloss of the vocabulary is a combination of phonological parameters, like a real sign:

- **location** of the dominant hand (forehead, temple, nose, chin, cheek, neck, chest, own
  shoulder, other shoulder, stomach, neutral space low/high),
- **movement** (hold, line, circle, double tap, arc, zigzag, finger wiggle, wrist twist) and
  its **direction** (up/down/left/right/forward/back),
- **handshape** (15 finger configurations: A, S, B, 5, 1, V, Y, L, C, O, W, I, claw, X,
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
(CSLR gloss sequences, retrieval and translation: ``label`` = -1). About 80/10/10; the ISLR
clips cycle over the glosses and each cycle goes to one split, so every gloss is in every ISLR
split once there are at least 5 cycles (``num_clips * islr_fraction >= 5 * num_glosses``, as
in the defaults); the same signers appear in all splits. Sentence clips take their split by
clip index: a sentence drawn twice can stand in two splits (6 of the 978 distinct sentences of
the default corpus). Keeping each sentence in one split would empty the sentence splits of small
corpora, whose few glosses repeat most sentences.

``generate_corpus(out_dir, num_clips=4000, seed=0)`` writes it as a store (deterministic
given the arguments; each clip is a function of (seed, clip index) only) and returns the
opened :class:`~slpfast.data.Store`. The vocabulary, gloss->word mapping, the gloss
parameters and the generator settings are in ``store.meta["synthetic"]``.

Modules
-------
:mod:`.synthetic_vocabulary` (glosses, words, sentence grammar), :mod:`.synthetic_phonology`
(sign parameters, gloss drawing), :mod:`.synthetic_motion` (parameter tracks),
:mod:`.synthetic_render` (skeleton, face, tracks -> pose), :mod:`.synthetic_language`
(:class:`SyntheticLanguage`, signers) and :mod:`.synthetic_corpus` (:func:`generate_corpus`,
:func:`default_corpus`, :func:`corpus_plan`). This module re-exports the names imported
from it.
"""
from __future__ import annotations

from .synthetic_corpus import corpus_plan, default_corpus, generate_corpus
from .synthetic_language import FPS, GENERATOR_VERSION, SyntheticLanguage  # noqa: F401
from .synthetic_phonology import (  # noqa: F401
    _FEATURES, BROWS, DIRECTIONS, HANDSHAPES, HEADS, LOCATIONS, MOUTHINGS, MOVEMENTS, NONDOM, ORIENTATIONS)
from .synthetic_render import _hand  # noqa: F401

__all__ = ["generate_corpus", "default_corpus", "SyntheticLanguage", "corpus_plan", "FPS"]
