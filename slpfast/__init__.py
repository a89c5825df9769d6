"""slpfast: fast multimodal pre-training for sign language understanding from pose.

Public entry points:

- ``slpfast.ops``: ``masked_attention``, ``contrastive_loss``, ``normalize_pose``,
  ``augment_pose``, ``pack_padded``, ``unpack_packed`` (backend-dispatched, validated).
- ``slpfast.nn``: modules built on those ops.
- ``python -m slpfast.info``: versions, extension build status, backends per op.
- ``torchrun -m slpfast.pretrain``: pre-training.
"""
__version__ = "0.1.0"


def _map_source_kernels() -> None:
    """In a source checkout used without ``pip install`` (``PYTHONPATH=.``), ``kernels/`` sits
    beside this package instead of being installed as ``slpfast.kernels``: map it."""
    import importlib.util
    import os

    if importlib.util.find_spec(__name__ + ".kernels") is None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.isfile(os.path.join(root, "kernels", "__init__.py")):
            __path__.append(root)  # noqa: F821  (module __path__ of this package)


_map_source_kernels()
