"""Triton kernels of slpfast, installed as the package ``slpfast.kernels``.

- ``attention``: FlashAttention-2-style masked attention for ragged pose sequences.
- ``contrastive``: fused symmetric InfoNCE (CLIP) loss, memory linear in batch.

On machines without a GPU these run in the Triton interpreter (``TRITON_INTERPRET=1``, set
before triton is imported).
"""


def _hand_over_top_level_name() -> None:
    """Import the installed PyPI package ``kernels`` in place of this folder.

    This folder is imported under the top-level name ``kernels`` only by accident: when the root
    of a checkout is on ``sys.path`` (``python -m slpfast.pretrain`` run from it puts the working
    folder first; so do the bench scripts). That name belongs to Hugging Face's ``kernels``
    package, which transformers imports (``from kernels import CUDAProperties, ...``): loading
    the MiniLM text encoder from a checkout's root failed with an ImportError naming this file.
    The import machinery returns whatever ``sys.modules["kernels"]`` holds once this module has
    run, so the real package is loaded there; without it, the name is simply not installed.
    """
    import importlib.util
    import os
    import sys

    mine = os.path.realpath(__file__)

    def is_mine(entry: str) -> bool:
        return os.path.realpath(os.path.join(entry or os.curdir, "kernels", "__init__.py")) == mine

    saved = list(sys.path)
    sys.path[:] = [p for p in saved if not (isinstance(p, str) and is_mine(p))]
    try:
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            found = find("kernels", None) if find is not None else None
            if found is not None and not (found.origin and os.path.realpath(found.origin) == mine):
                spec = found
                break
    finally:
        sys.path[:] = saved
    if spec is None:
        raise ModuleNotFoundError("No module named 'kernels' (the kernels/ folder of an slpfast checkout is "
                                  "the package slpfast.kernels)", name="kernels")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("kernels", None)
        raise


if __name__ == "kernels":
    _hand_over_top_level_name()
