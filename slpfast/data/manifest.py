"""Text manifests: CSV, TSV or JSONL with the fields id, text, language, split, source and
optionally gloss (space-separated gloss tokens), signer, fps and label (an ISLR class: an
integer, or a gloss token).

A clip file matches a row when the row's id equals the file's path relative to its source
root without extension (``a/b/clip1``), or its stem (``clip1``).
"""
from __future__ import annotations

import csv
import json
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

    def lookup(self, rel_id: str, stem: str) -> dict | None:
        return self.rows.get(rel_id) or self.rows.get(stem)

    def gloss_ids(self, row: dict) -> list[int]:
        index = {g: i for i, g in enumerate(self.gloss_vocab)}
        return [index[g] for g in (row.get("gloss") or "").split()]

    def label(self, row: dict) -> int:
        lab = (row.get("label") or "").strip()
        if not lab:
            return -1
        try:
            return int(lab)
        except ValueError:
            return self.gloss_vocab.index(lab) if lab in self.gloss_vocab else -1


def read_manifest(path: str) -> Manifest:
    """Read a CSV / TSV / JSONL manifest (by extension; ``.txt`` is sniffed)."""
    ext = os.path.splitext(path)[1].lower()
    rows: list[dict] = []
    if ext in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: bad JSON line: {e}") from None
    else:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
        delim = "\t" if ext == ".tsv" or (ext != ".csv" and "\t" in text.split("\n", 1)[0]) else ","
        rows = list(csv.DictReader(text.splitlines(), delimiter=delim))
    out: dict[str, dict] = {}
    vocab: dict[str, None] = {}
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: row {n} is a JSON {type(r).__name__}, not an object with id, text, ...")
        r = {k.strip().lower(): ("" if v is None else str(v)) for k, v in r.items() if k}
        if "id" not in r:
            raise ValueError(f"{path}: manifest rows need an 'id' field (got {sorted(r)})")
        out[r["id"]] = r
        for g in r.get("gloss", "").split():
            vocab.setdefault(g)
    return Manifest(out, list(vocab))
