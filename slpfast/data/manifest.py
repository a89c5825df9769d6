"""Text manifests: CSV, TSV or JSONL with the fields id, text, language, split, source and
optionally gloss (space-separated gloss tokens; in JSONL also a list of tokens), signer, fps
and label (an ISLR class: an integer, or a gloss token). Ids are unique and non-empty.

A clip file matches a row when the row's id equals the file's path relative to its source
root without extension (``a/b/clip1``), or its stem (``clip1``).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

FIELDS = ("id", "text", "language", "split", "source", "gloss", "signer", "fps", "label")


@dataclass
class Manifest:
    rows: dict = field(default_factory=dict)  # id -> dict
    gloss_vocab: list = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        """Every field name used by some row."""
        return sorted({k for r in self.rows.values() for k in r})

    def key_for(self, rel_id: str, stem: str) -> str | None:
        """The id of the row a file matches: its relative id, else its stem (None: no row). The
        one rule of matching, for the converter's lookups and its checks of the manifest."""
        if rel_id in self.rows:
            return rel_id
        return stem if stem in self.rows else None

    def lookup(self, rel_id: str, stem: str) -> dict | None:
        key = self.key_for(rel_id, stem)
        return None if key is None else self.rows[key]

    def _gloss_index(self) -> tuple[dict, dict]:
        """(last, first) position of each gloss in ``gloss_vocab``, built once per vocabulary:
        the converter asks for every clip, and a dict (or a list search) over a vocabulary of
        thousands of glosses per clip cost minutes over a 1.5M-clip corpus."""
        vocab = self.gloss_vocab
        cache = self.__dict__.get("_index_cache")
        if cache is None or cache[0] is not vocab or cache[1] != len(vocab):
            last = {g: i for i, g in enumerate(vocab)}
            first = {}
            for i, g in enumerate(vocab):
                first.setdefault(g, i)
            cache = (vocab, len(vocab), last, first)
            self.__dict__["_index_cache"] = cache
        return cache[2], cache[3]

    def __getstate__(self):  # the index is rebuilt where it is used, never pickled
        return {k: v for k, v in self.__dict__.items() if k != "_index_cache"}

    def gloss_ids(self, row: dict) -> list[int]:
        index = self._gloss_index()[0]
        return [index[g] for g in (row.get("gloss") or "").split()]

    def label(self, row: dict) -> int:
        lab = (row.get("label") or "").strip()
        if not lab:
            return -1
        try:
            return int(lab)
        except ValueError:
            return self._gloss_index()[1].get(lab, -1)


def _value(path: str, line: int, key: str, v) -> str:
    """A row's value as the string the converter uses. JSON lists are accepted for ``gloss`` only
    (joined with spaces: one token per element); any other list / object is an error rather than
    its Python repr (``"['A', 'B']"`` became two junk gloss tokens)."""
    if v is None:
        return ""
    if isinstance(v, list) and key == "gloss":
        toks = ["" if t is None else str(t) for t in v]
        bad = [t for t in toks if not t or t.split() != [t]]
        if bad or any(isinstance(t, (list, dict)) for t in v):
            raise ValueError(f"{path}:{line}: gloss list items must be single non-empty tokens, got {v!r}")
        return " ".join(toks)
    if isinstance(v, (list, dict)):
        raise ValueError(f"{path}:{line}: field {key!r} must be a string or number, got a JSON "
                         f"{type(v).__name__} {v!r}" + (" (only 'gloss' may be a list of tokens)"
                                                         if isinstance(v, list) else ""))
    return str(v)


#: fields whose values are (nearly) all distinct: not worth a lookup in the table of shared values
_UNSHARED = ("id", "text", "gloss")


def _jsonl_rows(path: str):
    """(line number, parsed line) of each non-empty line of a JSONL file, as it is read."""
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield n, json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: bad JSON line: {e}") from None


def _csv_rows(path: str, ext: str):
    """(line number, row dict) of each record of a CSV / TSV file, as it is read (the file is
    never held whole: a 1.5M-row manifest and its copies were most of the peak memory)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        # Sniff on the first *physical* line (the header): csv's record terminators are \r / \n
        # (a newline="" readline() ends a line there too, never at U+2028, NEL, \f, ...).
        header = f.readline().split("\n", 1)[0].split("\r", 1)[0]
        delim = "\t" if ext == ".tsv" or (ext != ".csv" and "\t" in header) else ","
        f.seek(0)  # from the start again (the utf-8-sig decoder drops a BOM again)
        # A newline="" stream, not str.splitlines(): splitlines() also breaks at U+2028, NEL, \f,
        # ... (splitting one row in two) and drops the line breaks inside quoted fields.
        reader = csv.DictReader(f, delimiter=delim)
        for r in reader:
            yield reader.line_num, r  # line_num: the record's last physical line


def read_manifest(path: str) -> Manifest:
    """Read a CSV / TSV / JSONL manifest (by extension; ``.txt`` is TSV when its header line has
    a tab, else CSV). A UTF-8 BOM is ignored.

    CSV / TSV follow the csv module's dialect: quoted fields may hold the delimiter, quotes and
    line breaks, which are kept as they are; only ``\r``/``\n`` end a record, so other Unicode
    line separators (U+2028, NEL, form feed, ...) are text. In JSONL, ``gloss`` may be a list of
    tokens (joined with spaces); other fields must be strings, numbers or null (null is empty).

    Raises ``ValueError`` (message starting with ``path``) for a row that is not an object, a
    missing ``id`` field, an empty id, an id given twice (naming both lines: a second row of
    one id silently replaced the first), or an ``fps`` that is not a positive number.
    """
    ext = os.path.splitext(path)[1].lower()
    rows = _jsonl_rows(path) if ext in (".jsonl", ".ndjson") else _csv_rows(path, ext)
    out: dict[str, dict] = {}
    where: dict[str, int] = {}
    vocab: dict[str, None] = {}
    # At 1.5M rows the manifest is held whole (the converter looks every clip up in it): every
    # row's dict shares one object per field name and per value of the fields with few distinct
    # values (split, language, ...), instead of a fresh string each (~400 of its ~800 bytes).
    names: dict[str, str] = {}
    shared: dict[str, str] = {}
    for i, (n, r) in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: row {i} is a JSON {type(r).__name__} (line {n}), not an object with id, "
                             "text, ...")
        row = {}
        for k, v in r.items():
            if not k:
                continue
            k = names.get(k) or names.setdefault(k, k.strip().lower())
            v = _value(path, n, k, v)
            row[k] = v if k in _UNSHARED else shared.setdefault(v, v)
        r = row
        if "id" not in r:
            raise ValueError(f"{path}: manifest rows need an 'id' field (got {sorted(r)})")
        cid = r["id"]
        if not cid.strip():
            raise ValueError(f"{path}:{n}: empty id (every row needs the id of its clip)")
        if cid in where:
            raise ValueError(f"{path}: id {cid!r} is given twice (lines {where[cid]} and {n}); one clip "
                             "cannot have two rows")
        fps = r.get("fps", "").strip()
        if fps:  # checked here: a bad one became a "corrupt" clip, a stored negative rate, or --default-fps
            try:
                ok = math.isfinite(float(fps)) and float(fps) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{path}:{n}: fps must be a positive frame rate (or empty), got {fps!r} for id "
                                 f"{cid!r}")
        if "fps" in r:
            r["fps"] = fps  # stripped: " 25 " and " " are what they mean to the converter
        where[cid] = n
        out[cid] = r
        for g in r.get("gloss", "").split():
            vocab.setdefault(g)
    return Manifest(out, list(vocab))
