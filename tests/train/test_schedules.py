import math

import pytest
import torch

from brainalign.train.heads import DINOHead
from brainalign.train.optim import parameter_groups
from brainalign.train.schedules import Schedule


def test_cosine_schedule_endpoints_and_midpoint():
    schedule = Schedule(start=1.0, end=0.0, kind="cosine")
    assert schedule(0, 100) == pytest.approx(1.0)
    assert schedule(50, 100) == pytest.approx(0.5)
    assert schedule(100, 100) == pytest.approx(0.0)


def test_warmup_then_cosine_matches_closed_form():
    schedule = Schedule(start=2.0, end=0.1, warmup_fraction=0.1, warmup_start=0.0)
    assert schedule(5, 100) == pytest.approx(1.0)
    progress = (40 - 10) / 90
    expected = 0.1 + 0.5 * (2.0 - 0.1) * (1 + math.cos(math.pi * progress))
    assert schedule(40, 100) == pytest.approx(expected)


def test_constant_after_warmup():
    schedule = Schedule(start=0.07, kind="constant", warmup_fraction=0.3, warmup_start=0.04)
    assert schedule(0, 100) == pytest.approx(0.04)
    assert schedule(15, 100) == pytest.approx(0.055)
    assert schedule(30, 100) == schedule(99, 100) == pytest.approx(0.07)


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="warmup_fraction"):
        Schedule(start=1.0, warmup_fraction=1.5)


def test_head_output_and_normalised_bottleneck():
    head = DINOHead(16, 50, hidden_dim=32, bottleneck_dim=8)
    logits = head(torch.randn(5, 16))
    assert logits.shape == (5, 50)
    bottleneck = torch.nn.functional.normalize(head.mlp(torch.randn(3, 16)), dim=-1)
    assert torch.allclose(bottleneck.norm(dim=-1), torch.ones(3))


def test_parameter_groups_layerwise_decay_and_no_decay(tiny_backbone):
    head = DINOHead(64, 10, hidden_dim=16, bottleneck_dim=8)
    groups = parameter_groups(
        [("backbone", tiny_backbone), ("dino_head", head)],
        depth=4,
        layerwise_decay=0.5,
        patch_embed_lr_mult=0.2,
    )
    by_name = {name: group for group in groups for name in group["names"]}
    assert by_name["backbone.vit.blocks.3.attn.qkv.weight"]["lr_mult"] == pytest.approx(0.5)
    assert by_name["backbone.vit.blocks.0.attn.qkv.weight"]["lr_mult"] == pytest.approx(0.5**4)
    assert by_name["backbone.vit.patch_embed.proj.weight"]["lr_mult"] == pytest.approx(0.2 * 0.5**5)
    assert by_name["dino_head.mlp.0.weight"]["lr_mult"] == pytest.approx(1.0)
    assert by_name["backbone.vit.blocks.1.norm1.weight"]["wd_mult"] == 0.0
    assert by_name["backbone.vit.blocks.1.attn.proj.bias"]["wd_mult"] == 0.0
    assert by_name["backbone.vit.cls_token"]["wd_mult"] == 0.0
    assert by_name["backbone.vit.blocks.1.mlp.fc1.weight"]["wd_mult"] == 1.0
    assert by_name["dino_head.last_layer.weight"]["is_last_layer"]
    n_params = sum(len(group["params"]) for group in groups)
    assert n_params == len(list(tiny_backbone.parameters())) + len(list(head.parameters()))
