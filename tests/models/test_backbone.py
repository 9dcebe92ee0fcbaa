import pytest
import timm
import torch

from brainalign.models import BACKBONES, create_backbone


def test_every_short_name_is_a_timm_model():
    for name, timm_name in BACKBONES.items():
        assert timm.is_model(timm_name), name


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'vit_giant_typo'.*vit_tiny_test"):
        create_backbone("vit_giant_typo")


def test_output_shapes_match_the_architecture(tiny_backbone):
    images = torch.randn(3, 3, 32, 32)
    out = tiny_backbone(images)
    grid = 32 // tiny_backbone.patch_size
    assert out.cls.shape == (3, 64)
    assert out.registers.shape == (3, 4, 64)
    assert out.patches.shape == (3, grid * grid, 64)


def test_forward_layers_last_layer_equals_forward(tiny_backbone):
    images = torch.randn(2, 3, 32, 32)
    out = tiny_backbone(images)
    last = tiny_backbone.forward_layers(images, [tiny_backbone.depth - 1])[0]
    torch.testing.assert_close(last[:, 0], out.cls)
    torch.testing.assert_close(last[:, 5:], out.patches)


def test_forward_layers_matches_timm_forward_intermediates(tiny_backbone):
    images = torch.randn(2, 3, 32, 32)
    ours = tiny_backbone.forward_layers(images, [0, 2], norm=True)
    theirs = tiny_backbone.vit.forward_intermediates(
        images,
        indices=[0, 2],
        norm=True,
        output_fmt="NLC",
        intermediates_only=True,
        return_prefix_tokens=True,
    )
    for mine, (patches, prefix) in zip(ours, theirs):
        torch.testing.assert_close(mine[:, 5:], patches)
        torch.testing.assert_close(mine[:, :5], prefix)


def test_layer_out_of_range_is_rejected(tiny_backbone):
    with pytest.raises(ValueError, match="layer 4 out of range for a 4-block"):
        tiny_backbone.forward_layers(torch.randn(1, 3, 32, 32), [4])


def test_masked_patches_see_the_mask_token_and_others_do_not(tiny_backbone):
    images = torch.randn(2, 3, 32, 32)
    n_patches = (32 // tiny_backbone.patch_size) ** 2
    masks = torch.zeros(2, n_patches, dtype=torch.bool)
    masks[0, :10] = True
    with torch.no_grad():
        tiny_backbone.mask_token.fill_(3.0)
        embedded, _ = tiny_backbone._embed(images, masks)
        plain, _ = tiny_backbone._embed(images, None)
    prefix = tiny_backbone.n_prefix_tokens
    patches, plain_patches = embedded[:, prefix:], plain[:, prefix:]
    assert torch.all(patches[0, :10] == 3.0)
    torch.testing.assert_close(patches[0, 10:], plain_patches[0, 10:])
    torch.testing.assert_close(patches[1], plain_patches[1])


def test_wrong_mask_shape_is_rejected(tiny_backbone):
    with pytest.raises(ValueError, match="masks have shape"):
        tiny_backbone(torch.randn(2, 3, 32, 32), masks=torch.zeros(2, 7, dtype=torch.bool))


def test_drop_path_is_uniform_across_blocks():
    backbone = create_backbone("vit_tiny_test", drop_path_rate=0.3)
    rates = [block.drop_path1.drop_prob for block in backbone.vit.blocks]
    assert rates == [0.3] * backbone.depth


def test_rope_rescale_changes_training_outputs_only():
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny_test", rope_rescale=2.0)
    images = torch.randn(2, 3, 32, 32)
    backbone.eval()
    with torch.no_grad():
        first, second = backbone(images).cls, backbone(images).cls
    torch.testing.assert_close(first, second)
    backbone.train()
    with torch.no_grad():
        outputs = [backbone(images).cls for _ in range(4)]
    assert any(not torch.allclose(outputs[0], other) for other in outputs[1:])


def test_other_resolutions_are_accepted(tiny_backbone):
    out = tiny_backbone(torch.randn(1, 3, 16, 24))
    assert out.patches.shape == (1, (16 // 4) * (24 // 4), 64)
