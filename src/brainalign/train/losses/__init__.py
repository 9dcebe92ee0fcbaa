"""DINOv3 training losses, one per module, and the Sinkhorn-Knopp teacher targets."""

from brainalign.train.losses.dino import DINOLoss
from brainalign.train.losses.gram import GramAnchoringLoss
from brainalign.train.losses.ibot import IBOTPatchLoss, masked_patch_indices_and_weights
from brainalign.train.losses.koleo import KoLeoLoss
from brainalign.train.losses.sinkhorn import sinkhorn_knopp

__all__ = [
    "DINOLoss",
    "GramAnchoringLoss",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "masked_patch_indices_and_weights",
    "sinkhorn_knopp",
]
