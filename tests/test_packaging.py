"""Packaging as a user meets it: what pyproject.toml promises, what an sdist holds."""
import ast
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: standard-library modules newer than some Python that requires-python could admit
_STDLIB_SINCE = {"tomllib": (3, 11), "wsgiref.types": (3, 11), "zoneinfo": (3, 9), "graphlib": (3, 9)}


def _python_sources():
    for top in ("slpfast", "kernels"):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            yield from (os.path.join(d, f) for f in files if f.endswith(".py"))


def test_requires_python_admits_no_python_the_code_cannot_import_on():
    """requires-python said >=3.10 while the pre-training and fine-tuning configs import tomllib
    (3.11+): on Python 3.10 `pip install` accepted slpfast and `python -m slpfast.pretrain`
    died with ModuleNotFoundError: tomllib."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        spec = tomllib.load(f)["project"]["requires-python"]
    m = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", spec)
    assert m, f"requires-python is expected as '>=X.Y', got {spec!r}"
    floor = (int(m.group(1)), int(m.group(2)))
    too_new = []
    for path in _python_sources():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                need = _STDLIB_SINCE.get(name)
                if need and need > floor:
                    too_new.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} imports {name} (Python {need[0]}.{need[1]}+)")
    assert not too_new, f"requires-python = {spec!r} but:\n" + "\n".join(too_new)
