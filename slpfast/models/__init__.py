"""Models: the part-aware pose encoder, MPM, text encoders and the pre-training model.

- :class:`PoseEncoder` / :class:`PoseEncoderConfig` (``forward(pose, conf, lengths) ->
  EncoderOutput(frames (B,T,D), pooled (B,D), ...)``, ``from_pretrained(path)``).
- :func:`sample_joint_mask`, :class:`MPMDecoder`, :func:`mpm_loss`: masked pose modeling.
- :class:`HFTextEncoder`, :class:`SmallTextEncoder`, :func:`build_text_encoder`,
  :func:`cache_text_features`: the text side.
- :func:`finegrained_loss`: the token-level sign-text term.
- :class:`PretrainModel`: everything above wired together, returning the losses.
"""
from slpfast.models.encoder import SIZES, EncoderOutput, PoseEncoder, PoseEncoderConfig
from slpfast.models.finegrained import finegrained_loss, finegrained_scores
from slpfast.models.masking import STRATEGIES, sample_joint_mask
from slpfast.models.mpm import MPMDecoder, mpm_loss
from slpfast.models.part_embed import PartEmbedding
from slpfast.models.pretrain_model import PretrainModel
from slpfast.models.text_encoder import (HFTextEncoder, SmallTextEncoder, TextFeatures, build_text_encoder,
                                         cache_text_features, default_text_model_path)

__all__ = ["SIZES", "EncoderOutput", "PoseEncoder", "PoseEncoderConfig", "finegrained_loss", "finegrained_scores",
           "STRATEGIES", "sample_joint_mask", "MPMDecoder", "mpm_loss", "PartEmbedding", "PretrainModel",
           "HFTextEncoder", "SmallTextEncoder", "TextFeatures", "build_text_encoder", "cache_text_features",
           "default_text_model_path"]
