"""Content hash of the C++/CUDA sources, shared by setup.py and the runtime staleness check.

Torch-free and import-free on purpose: setup.py loads it before torch's build machinery.
"""
import hashlib
import os

_SUFFIXES = (".h", ".cpp", ".cu", ".cuh")


def csrc_hash(csrc_dir: str) -> str | None:
    """SHA-256 (hex, 16 chars) over the names and bytes of every source under ``csrc_dir``.

    Returns None when the directory does not exist (an installed wheel without sources).
    """
    if not os.path.isdir(csrc_dir):
        return None
    h = hashlib.sha256()
    for root, dirs, files in os.walk(csrc_dir):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(_SUFFIXES):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, csrc_dir).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]
