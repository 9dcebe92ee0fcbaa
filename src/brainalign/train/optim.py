"""AdamW parameter groups: layer-wise lr decay, patch-embed lr multiplier, no decay on norms.

DINOv3 gives each parameter an lr multiplier ``decay ** (depth + 1 - layer_id)`` where the
embeddings are layer 0, block ``i`` is layer ``i + 1`` and the heads are layer ``depth + 1``;
patch-embedding weights get an extra multiplier (0.2). Biases, norms, layer-scale gammas and the
class/register/mask tokens get no weight decay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

_NO_DECAY = re.compile(r"(bias$|norm|gamma|\.ls\d|_token$|\.lambda)")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def _layer_id(name: str, depth: int) -> int:
    if name.startswith("backbone."):
        match = _BLOCK.search(name)
        if match:
            return int(match.group(1)) + 1
        if ".norm." in name or name.endswith(("vit.norm.weight", "vit.norm.bias")):
            return depth + 1
        return 0
    return depth + 1


def parameter_groups(
    named_modules: Iterable[tuple[str, nn.Module]],
    *,
    depth: int,
    layerwise_decay: float = 0.9,
    patch_embed_lr_mult: float = 0.2,
) -> list[dict]:
    """Group trainable parameters for AdamW.

    Parameters
    ----------
    named_modules : iterable of (prefix, module)
        e.g. ``[("backbone", backbone), ("dino_head", head), ...]``.
    depth : int
        Number of transformer blocks.
    layerwise_decay : float
        Per-layer lr decay factor (1.0 disables it).
    patch_embed_lr_mult : float
        Extra lr multiplier for the patch embedding.

    Returns
    -------
    list of dict
        Groups with keys ``params``, ``names``, ``lr_mult``, ``wd_mult`` and ``is_last_layer``
        (the prototype layer frozen during the first steps). Parameters sharing all three
        settings share a group, so the optimiser's fused per-group kernels stay efficient.
    """
    groups: dict[tuple[float, float, bool], dict] = {}
    for prefix, module in named_modules:
        for local_name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            name = f"{prefix}.{local_name}"
            lr_mult = layerwise_decay ** (depth + 1 - _layer_id(name, depth))
            if "patch_embed" in name:
                lr_mult *= patch_embed_lr_mult
            no_decay = parameter.ndim <= 1 or bool(_NO_DECAY.search(local_name))
            is_last_layer = local_name.startswith("last_layer")
            wd_mult = 0.0 if no_decay else 1.0
            key = (round(lr_mult, 12), wd_mult, is_last_layer)
            group = groups.setdefault(
                key,
                {
                    "params": [],
                    "names": [],
                    "lr_mult": lr_mult,
                    "wd_mult": wd_mult,
                    "is_last_layer": is_last_layer,
                },
            )
            group["params"].append(parameter)
            group["names"].append(name)
    return list(groups.values())
