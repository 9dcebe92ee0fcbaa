"""Tiny DINOv3-style ViTs registered in timm beside the real sizes.

They use the same Eva class, RoPE, register tokens and layer-scale as timm's
``vit_*_patch16_dinov3`` models, only smaller, so that every test and the CPU demo run the
real architecture. Registering them with timm's ``register_model`` means
``timm.create_model("vit_test_tiny_patch4_dinov3")`` works like any other timm name.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import LayerNorm
from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models.eva import Eva, checkpoint_filter_fn

_DINOV3_COMMON: dict[str, Any] = dict(
    dynamic_img_size=True,
    qkv_bias=False,
    init_values=1.0e-5,
    rope_type="dinov3",
    rope_temperature=100,
    rope_rotate_half=True,
    use_rot_pos_emb=True,
    use_abs_pos_emb=False,
    num_reg_tokens=4,
    use_fc_norm=False,
    norm_layer=partial(LayerNorm, eps=1e-5),
)


def _create(variant: str, model_args: dict[str, Any], **kwargs: Any) -> Eva:
    for key in ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay"):
        kwargs.pop(key, None)
    model_args = {**_DINOV3_COMMON, **model_args, **kwargs}
    return build_model_with_cfg(
        Eva,
        variant,
        pretrained=False,
        pretrained_filter_fn=checkpoint_filter_fn,
        pretrained_cfg={
            "num_classes": 0,
            "input_size": (3, model_args["img_size"], model_args["img_size"]),
        },
        **model_args,
    )


@register_model
def vit_test_tiny_patch4_dinov3(pretrained: bool = False, **kwargs: Any) -> Eva:
    """Test size: 32 px, patch 4, width 64, 4 blocks, 4 heads (about 0.2 M parameters)."""
    args = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4)
    return _create("vit_test_tiny_patch4_dinov3", args, **kwargs)


@register_model
def vit_test_small_patch8_dinov3(pretrained: bool = False, **kwargs: Any) -> Eva:
    """Benchmark size: 64 px, patch 8, width 128, 12 blocks, 4 heads (about 2.4 M parameters)."""
    args = dict(img_size=64, patch_size=8, embed_dim=128, depth=12, num_heads=4)
    return _create("vit_test_small_patch8_dinov3", args, **kwargs)
