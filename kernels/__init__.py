"""Triton kernels of slpfast, installed as the package ``slpfast.kernels``.

- ``attention``: FlashAttention-2-style masked attention for ragged pose sequences.
- ``contrastive``: fused symmetric InfoNCE (CLIP) loss, memory linear in batch.

On machines without a GPU these run in the Triton interpreter (``TRITON_INTERPRET=1``, set
before triton is imported).
"""
