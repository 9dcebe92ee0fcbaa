"""DINOv3 ViT backbones looked up by name, with iBOT masking and per-layer token output.

``create_backbone("vit_s")`` builds timm's ``vit_small_patch16_dinov3`` (random weights: nothing
is downloaded) wrapped in :class:`DinoBackbone`, which adds the learned mask token used by the
student for iBOT and one feature API, :meth:`DinoBackbone.forward_layers`, returning every
requested block's tokens for the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from timm.layers import DropPath
from torch import Tensor, nn

from brainalign.models import registry as _registry  # noqa: F401  (registers the test sizes)

#: Short names used in configs -> timm model names.
BACKBONES: dict[str, str] = {
    "vit_s": "vit_small_patch16_dinov3",
    "vit_s_plus": "vit_small_plus_patch16_dinov3",
    "vit_b": "vit_base_patch16_dinov3",
    "vit_l": "vit_large_patch16_dinov3",
    "vit_h_plus": "vit_huge_plus_patch16_dinov3",
    "vit_7b": "vit_7b_patch16_dinov3",
    "vit_tiny_test": "vit_test_tiny_patch4_dinov3",
    "vit_small_test": "vit_test_small_patch8_dinov3",
}


@dataclass
class BackboneOutput:
    """Final-layer tokens after the last norm.

    Attributes
    ----------
    cls : Tensor of shape (B, D)
    registers : Tensor of shape (B, R, D)
    patches : Tensor of shape (B, N, D)
    """

    cls: Tensor
    registers: Tensor
    patches: Tensor


class DinoBackbone(nn.Module):
    """A timm Eva ViT plus a learned mask token and a per-layer feature API.

    Parameters
    ----------
    vit : timm.models.eva.Eva
        A DINOv3-style ViT (class token, register tokens, RoPE).
    name : str
        The name it was created from, stored in exports.
    """

    def __init__(self, vit: nn.Module, name: str) -> None:
        super().__init__()
        if getattr(vit, "cls_token", None) is None:
            raise ValueError(f"backbone {name!r} has no class token; DINO needs one")
        self.vit = vit
        self.name = name
        self.mask_token = nn.Parameter(torch.zeros(1, vit.embed_dim))

    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def patch_size(self) -> int:
        return int(self.vit.patch_embed.patch_size[0])

    @property
    def n_registers(self) -> int:
        return self.n_prefix_tokens - 1  # prefix = class token + registers

    @property
    def n_prefix_tokens(self) -> int:
        return int(self.vit.num_prefix_tokens)

    def _embed(self, images: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Patch-embed, replace masked patches by the mask token, add prefix tokens and RoPE."""
        x = self.vit.patch_embed(images)  # (B, H, W, D) with dynamic size, else (B, N, D)
        if masks is not None:
            n_patches = x.shape[1] * x.shape[2] if x.ndim == 4 else x.shape[1]
            if masks.shape != (x.shape[0], n_patches):
                raise ValueError(
                    f"masks have shape {tuple(masks.shape)}, expected {(x.shape[0], n_patches)}"
                )
            token = self.mask_token.to(x.dtype)
            masks = masks.view(*x.shape[:-1], 1)
            x = torch.where(masks, token, x)
        x, rope = self.vit._pos_embed(x)  # (B, 1 + R + N, D)
        return self.vit.norm_pre(x), rope

    def _split(self, tokens: Tensor) -> BackboneOutput:
        n_prefix = self.n_prefix_tokens
        return BackboneOutput(
            cls=tokens[:, 0],
            registers=tokens[:, 1:n_prefix],
            patches=tokens[:, n_prefix:],
        )

    def forward(self, images: Tensor, masks: Tensor | None = None) -> BackboneOutput:
        """Run the ViT; ``masks`` (B, N) bool replaces those patch tokens by the mask token.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W)
        masks : Tensor of shape (B, N) of bool, optional

        Returns
        -------
        BackboneOutput
            Final tokens after the last norm.
        """
        x, rope = self._embed(images, masks)
        for block in self.vit.blocks:
            x = block(x, rope=rope)
        return self._split(self.vit.norm(x))

    def forward_layers(
        self,
        images: Tensor,
        layers: list[int] | None = None,
        *,
        norm: bool = True,
    ) -> list[Tensor]:
        """Tokens of the requested blocks in one forward pass.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W)
        layers : list of int, optional
            Block indices in ``[0, depth)``; all blocks when None. The pass stops after the
            deepest one requested.
        norm : bool
            Apply the final LayerNorm to each block's output (as DINOv3's own probes do).

        Returns
        -------
        list of Tensor of shape (B, 1 + R + N, D)
            One entry per requested layer, in the order requested; token order is
            class token, registers, patches.
        """
        wanted = list(range(self.depth)) if layers is None else list(layers)
        for index in wanted:
            if not 0 <= index < self.depth:
                raise ValueError(f"layer {index} out of range for a {self.depth}-block backbone")
        last = max(wanted)
        x, rope = self._embed(images, None)
        collected: dict[int, Tensor] = {}
        for index, block in enumerate(self.vit.blocks[: last + 1]):
            x = block(x, rope=rope)
            if index in wanted:
                collected[index] = self.vit.norm(x) if norm else x
        return [collected[index] for index in wanted]


def create_backbone(
    name: str,
    *,
    img_size: int | None = None,
    drop_path_rate: float = 0.0,
    rope_rescale: float | None = None,
    rope_jitter: float | None = None,
    rope_shift: float | None = None,
) -> DinoBackbone:
    """Build a DINOv3 ViT by short name (see :data:`BACKBONES`) or timm name, random weights.

    Parameters
    ----------
    name : str
        ``vit_s``, ``vit_s_plus``, ``vit_b``, ``vit_l``, ``vit_h_plus``, ``vit_7b``, the test
        sizes ``vit_tiny_test`` and ``vit_small_test``, or any timm ``*_dinov3`` name.
    img_size : int, optional
        Nominal input size (the models accept any multiple of the patch size).
    drop_path_rate : float
        Stochastic depth, the same rate on every block (as in DINOv3).
    rope_rescale, rope_jitter, rope_shift : float, optional
        RoPE coordinate augmentation applied in training mode only: rescale by a factor in
        ``[1/rope_rescale, rope_rescale]``, per-axis jitter in ``[1/rope_jitter, rope_jitter]``,
        shift in ``[-rope_shift, rope_shift]``.

    Returns
    -------
    DinoBackbone
    """
    timm_name = BACKBONES.get(name, name)
    if not timm.is_model(timm_name):
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(
            f"unknown backbone {name!r}: use one of {known}, or a timm model name "
            "(see timm.list_models('*dinov3*'))"
        )
    kwargs: dict[str, object] = {
        "pretrained": False,
        "num_classes": 0,
        "drop_path_rate": drop_path_rate,
        "rope_rescale_coords": rope_rescale,
        "rope_jitter_coords": rope_jitter,
        "rope_shift_coords": rope_shift,
    }
    if img_size is not None:
        kwargs["img_size"] = img_size
    vit = timm.create_model(timm_name, **kwargs)
    # Stochastic depth with the same rate on every block (timm's default decays it linearly).
    if drop_path_rate > 0:
        for block in vit.blocks:
            for attribute in ("drop_path1", "drop_path2"):
                if hasattr(block, attribute):
                    setattr(block, attribute, DropPath(drop_path_rate))
    return DinoBackbone(vit, name)
