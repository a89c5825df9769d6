"""slpfast: fast multimodal pre-training for sign language understanding from pose.

Public entry points:

- ``slpfast.ops``: ``masked_attention``, ``contrastive_loss``, ``normalize_pose``,
  ``augment_pose``, ``pack_padded``, ``unpack_packed`` (backend-dispatched, validated).
- ``slpfast.nn``: modules built on those ops.
- ``python -m slpfast.info``: versions, extension build status, backends per op.
- ``torchrun -m slpfast.pretrain``: pre-training.
"""
__version__ = "0.1.0"
