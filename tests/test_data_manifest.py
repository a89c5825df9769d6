"""Text manifests (CSV / TSV / JSONL): texts kept exactly, structure errors named."""
from __future__ import annotations

import json

import pytest

from slpfast.data.manifest import read_manifest


def _write(tmp_path, name, body):
    p = tmp_path / name
    p.write_bytes(body.encode("utf-8"))
    return str(p)


@pytest.mark.parametrize("name, body, texts", [
    # quoted line breaks were dropped ("line oneline two")
    ("nl.csv", 'id,text\nc1,"line one\nline two"\nc2,y\n', {"c1": "line one\nline two", "c2": "y"}),
    ("crlf.csv", 'id,text\r\nc1,"a\r\nb"\r\nc2,y\r\n', {"c1": "a\r\nb", "c2": "y"}),
    # Unicode line separators split the row in two (text "first", and a row with id "second")
    ("ls.csv", "id,text\nc1,first\u2028second\nc2,y\n", {"c1": "first\u2028second", "c2": "y"}),
    ("nel.tsv", "id\ttext\nc1\tabc\x85def\nc2\ty\n", {"c1": "abc\x85def", "c2": "y"}),
    ("ff.csv", 'id,text\nc1,"quoted \x0c form\x1efeed"\nc2,y\n', {"c1": "quoted \x0c form\x1efeed", "c2": "y"}),
    # .txt: the delimiter is sniffed on the header line only, not on a text's tab
    ("m.txt", 'id,text\nc1,"a\tb"\n', {"c1": "a\tb"}),
    ("t.txt", "\ufeffid\ttext\nc1\thello, world\n", {"c1": "hello, world"}),
])
def test_csv_texts_are_kept_exactly(tmp_path, name, body, texts):
    m = read_manifest(_write(tmp_path, name, body))
    assert {k: r["text"] for k, r in m.rows.items()} == texts


def test_jsonl_gloss_list(tmp_path):
    """A JSON list of glosses became the tokens "['A'," and "'B']"."""
    p = _write(tmp_path, "g.jsonl", json.dumps({"id": "c1", "text": "t", "gloss": ["A", "B"], "label": "B"}) + "\n")
    m = read_manifest(p)
    assert m.gloss_vocab == ["A", "B"] and m.gloss_ids(m.rows["c1"]) == [0, 1] and m.label(m.rows["c1"]) == 1
    for bad in ({"id": "c1", "text": ["a", "b"]}, {"id": "c1", "text": "t", "gloss": ["A B"]},
                {"id": "c1", "text": "t", "signer": {"x": 1}}):
        with pytest.raises(ValueError, match=r"g2.jsonl:1: .*(field 'text'|gloss list|field 'signer')"):
            read_manifest(_write(tmp_path, "g2.jsonl", json.dumps(bad) + "\n"))


@pytest.mark.parametrize("name, body, msg", [
    ("dup.csv", "id,text\nc1,first\nc2,x\nc1,second\n", r"dup.csv: id 'c1' is given twice \(lines 2 and 4\)"),
    ("dup.jsonl", '{"id": "c1", "text": "a"}\n\n{"id": "c1", "text": "b"}\n',
     r"dup.jsonl: id 'c1' is given twice \(lines 1 and 3\)"),
    ("empty.csv", "id,text\nc2,x\n,orphan\n", r"empty.csv:3: empty id"),
    ("empty.jsonl", '{"id": null, "text": "a"}\n', r"empty.jsonl:1: empty id"),
])
def test_duplicate_or_empty_ids_are_refused(tmp_path, name, body, msg):
    """The last row of a duplicated id silently won; an empty id was accepted."""
    with pytest.raises(ValueError, match=msg):
        read_manifest(_write(tmp_path, name, body))


def test_gloss_lookups_index_the_vocabulary_once(tmp_path, monkeypatch):
    """gloss_ids built a dict of the whole gloss vocabulary, and label() searched the list, for
    every clip: minutes over a 1.5M-clip corpus with thousands of glosses. The index is built
    once per vocabulary (again if the vocabulary is replaced or grows) and never pickled."""
    import pickle

    body = "id,text,gloss,label\n" + "".join(f"c{i},t,G{i} G{i + 1},G{i + 2}\n" for i in range(50))
    m = read_manifest(_write(tmp_path, "m.csv", body))
    vocab = m.gloss_vocab
    assert m.gloss_ids(m.rows["c3"]) == [vocab.index("G3"), vocab.index("G4")]
    assert m.label(m.rows["c3"]) == vocab.index("G5") and m.label({"label": "nope"}) == -1
    index = m._gloss_index()
    for i in range(50):
        m.gloss_ids(m.rows[f"c{i}"]), m.label(m.rows[f"c{i}"])
    assert m._gloss_index()[0] is index[0]  # built once, not per clip
    m.gloss_vocab.append("NEW")
    assert m.label({"label": "NEW"}) == len(vocab) - 1
    m.gloss_vocab = ["X", "Y"]
    assert m.gloss_ids({"gloss": "Y X"}) == [1, 0] and m.label({"label": "Y"}) == 1
    copy = pickle.loads(pickle.dumps(m))
    assert "_index_cache" not in copy.__dict__ and copy == m and copy.gloss_ids({"gloss": "X"}) == [0]


@pytest.mark.parametrize("fps", ["abc", "-5", "0", "nan", "inf"])
def test_a_bad_fps_is_an_error_naming_the_line(tmp_path, fps):
    """A manifest fps was used unchecked: 'abc' skipped its clip as "corrupt" (an unexpected
    ValueError inside the converter), '-5' was stored as the clip's frame rate, '0' silently
    became --default-fps."""
    p = _write(tmp_path, "m.csv", f"id,text,fps\nc1,hello,25\nc2,hi,{fps}\n")
    with pytest.raises(ValueError, match=rf"m.csv:3: fps must be a positive frame rate.*{fps}"):
        read_manifest(p)


def test_an_empty_fps_is_no_fps(tmp_path):
    m = read_manifest(_write(tmp_path, "m.csv", "id,text,fps\nc1,hello,\nc2,hi,29.97\n"))
    assert m.rows["c1"]["fps"] == "" and m.rows["c2"]["fps"] == "29.97"


def test_memory_per_row_stays_small(tmp_path):
    """The converter holds the whole manifest (1.5M rows): read_manifest kept ~830 bytes per row
    (every row its own copies of the field names and of values like "train"), and twice that at
    its peak (the whole file, then every row twice). Each row now shares its field names and the
    values of its few-valued fields, and rows are read as a stream."""
    import gc
    import tracemalloc

    n = 20000
    lines = ["id,text,language,split,source"]
    lines += [f"corpus/signer{i % 300:03d}/clip{i:07d},text number {i} of the corpus: a short sentence,ase,"
              f"{'train' if i % 10 else 'val'},youtube-asl" for i in range(n)]
    p = _write(tmp_path, "big.csv", "\n".join(lines) + "\n")
    gc.collect()
    tracemalloc.start()
    try:
        m = read_manifest(p)
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(m.rows) == n and m.rows["corpus/signer001/clip0000001"]["split"] == "train"
    # a row: its dict (~184 B), its slot in rows (~100 B), its id and text (~170 B)
    assert kept / n < 600, f"{kept / n:.0f} bytes per row kept"
    assert peak / n < 800, f"{peak / n:.0f} bytes per row at the peak"
