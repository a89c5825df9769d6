"""Reference symmetric InfoNCE (CLIP) loss: the executable specification of
:func:`slpfast.ops.contrastive_loss`. It materializes the full logits, O(N_local * N_global).

Local-loss formulation (open_clip ``ClipLoss(local_loss=True, gather_with_grad=True)``): rank r
holds ``sign, text (N_local, D)`` and the gathered batch ``sign_all, text_all (N_global, D)``
(its own rows start at ``label_offset = r * N_local``). With ``s = logit_scale``::

    logits_st = s * sign @ text_all.T          (N_local, N_global)
    logits_ts = s * text @ sign_all.T          (N_local, N_global)
    labels    = label_offset + arange(N_local)
    loss      = (CE(logits_st, labels) + CE(logits_ts, labels)) / 2      (mean over rows)

In one process ``sign_all = sign``, ``text_all = text`` and ``label_offset = 0``: the plain CLIP
loss, where ``logits_ts`` is ``logits_st.T``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(sign: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float, *,
                     sign_all: torch.Tensor | None = None, text_all: torch.Tensor | None = None,
                     label_offset: int = 0) -> torch.Tensor:
    """Symmetric InfoNCE, computed the obvious way (autograd gives every gradient).

    Args:
        sign, text: (N_local, D) embeddings of the local rows (row i of one matches row i of
            the other).
        logit_scale: scalar multiplier ``s`` (already exponentiated); a tensor gets a gradient.
        sign_all, text_all: (N_global, D) the gathered batch; default: ``sign`` / ``text``.
        label_offset: index of local row 0 inside the gathered batch.
    Returns:
        0-dim loss in the dtype of the logits (``sign``'s dtype).
    """
    sign_all = sign if sign_all is None else sign_all
    text_all = text if text_all is None else text_all
    labels = torch.arange(sign.shape[0], device=sign.device) + label_offset
    logits_st = logit_scale * (sign @ text_all.T)
    logits_ts = logit_scale * (text @ sign_all.T)
    return 0.5 * (F.cross_entropy(logits_st, labels) + F.cross_entropy(logits_ts, labels))


def contrastive_loss_global(sign: torch.Tensor, text: torch.Tensor, logit_scale) -> torch.Tensor:
    """Plain CLIP loss over one batch, symmetric by transposing a single logits matrix.

    Used by the tests as the independent check of the local-loss code path: (N, D), (N, D) -> ().
    """
    logits = logit_scale * (sign @ text.T)
    labels = torch.arange(sign.shape[0], device=sign.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
