"""Gradient features: per-image gradients, analytic answers, planted hierarchy, cache, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from brainalign.models import create_backbone
from brainalign.probe.cache import FeatureCache
from brainalign.probe.formats import load_brain
from brainalign.probe.gradients import (
    StimulusBatch,
    extract_gradient_features,
    image_seeds,
    layer_modules,
)
from brainalign.probe.models import HookProbeModel, Preprocess, TokenLayout, load_probe_model
from brainalign.probe.objectives import InvarianceObjective, SeededViews, SupervisedObjective
from brainalign.probe.pipeline import EncodingConfig, score_layers
from brainalign.probe.simulate import oracle_features, simulate_subject
from brainalign.probe.stimuli import StimulusSet


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def vit():
    """The tiny ViT with every weight perturbed (at init its blocks are near-identity)."""
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny_test").eval()
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return load_probe_model(backbone)


def _assert_close(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for layer in expected:
        scale = float(np.abs(expected[layer]).max())
        assert scale > 0, f"layer {layer}: all-zero gradients make this test vacuous"
        np.testing.assert_allclose(got[layer], expected[layer], rtol=1e-4, atol=1e-5 * scale)


# ---------------------------------------------------------------------------- per image
def test_gradients_do_not_depend_on_batch_size_or_order(vit):
    images = _images(7)
    objective = InvarianceObjective(seed=3)
    options = {"layers": [0, 2, 3], "pooling": "cls+mean", "progress": False}
    whole = extract_gradient_features(vit, images, objective, batch_size=7, **options)
    one_by_one = extract_gradient_features(vit, images, objective, batch_size=1, **options)
    _assert_close(one_by_one, whole)
    order = np.array([4, 0, 6, 2, 5, 1, 3])
    shuffled = extract_gradient_features(vit, images[order], objective, batch_size=3, **options)
    _assert_close({layer: array[np.argsort(order)] for layer, array in shuffled.items()}, whole)
    assert whole[0].shape == (7, 2 * 64)
    # different images give different gradients; a different seed draws other views
    assert not np.allclose(whole[0][0], whole[0][1])
    reseeded = extract_gradient_features(vit, images, InvarianceObjective(seed=4), **options)
    assert not np.allclose(reseeded[0], whole[0])


def test_duplicate_images_get_the_same_views_and_gradients(vit):
    images = _images(3)
    images[2] = images[0]
    got = extract_gradient_features(vit, images, InvarianceObjective(), progress=False)
    np.testing.assert_array_equal(got[1][2], got[1][0])
    assert image_seeds(images)[0] == image_seeds(images)[2] != image_seeds(images)[1]


def test_a_cls_loss_leaves_the_last_layer_patch_tokens_without_gradient(vit):
    """The final norm is per token: patch tokens of the last block never reach the CLS output."""
    objective = InvarianceObjective(embedding="cls")
    got = extract_gradient_features(vit, _images(4), objective, pooling="mean", progress=False)
    np.testing.assert_array_equal(got[3], np.zeros_like(got[3]))
    assert np.abs(got[2]).max() > 0  # earlier patch tokens feed the CLS token through attention
    cls = extract_gradient_features(vit, _images(4), objective, pooling="cls", progress=False)
    assert np.abs(cls[3]).max() > 0


def test_frozen_weights_and_surrounding_no_grad_still_give_gradients(vit):
    images = _images(3)
    expected = extract_gradient_features(vit, images, InvarianceObjective(), progress=False)
    vit.module.requires_grad_(False)
    try:
        with torch.inference_mode():
            got = extract_gradient_features(vit, images, InvarianceObjective(), progress=False)
    finally:
        vit.module.requires_grad_(True)
    _assert_close(got, expected)
    assert all(parameter.grad is None for parameter in vit.module.parameters())


# ---------------------------------------------------------------------------- analytic
class _LinearTokens(nn.Module):
    """Per-token linear layers 3 -> 5 -> 4 -> 6, patch mean, linear classifier with 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = images.flatten(2).transpose(1, 2)  # (B, H*W, 3)
        return self.head(self.layers(tokens).mean(dim=1))  # (B, 3)


def test_linear_toy_model_gradient_equals_the_analytic_one():
    torch.manual_seed(1)
    network = _LinearTokens()
    model = HookProbeModel(
        network,
        architecture="toy:linear",
        layer_names=["layers.0", "layers.1", "layers.2"],
        token_layout=TokenLayout(has_cls=False),
        preprocess=Preprocess(resolution=6),
    )
    images = _images(5, size=6, seed=2)
    labels = np.array([0, 2, 1, 1, 0])
    got = extract_gradient_features(
        model, images, SupervisedObjective(labels), batch_size=2, progress=False
    )

    # Analytic, in float64: z = W_c mean_t(h2) + b_c, dL/dz = softmax(z) - onehot(y); every
    # token of layer k gets (1/T) dL/dz W_c W_2 ... W_{k+1}, so its patch mean is that too.
    weights = [layer.weight.detach().double().numpy() for layer in network.layers]
    biases = [layer.bias.detach().double().numpy() for layer in network.layers]
    classifier = network.head.weight.detach().double().numpy()
    pixels = model.preprocess(torch.from_numpy(images).permute(0, 3, 1, 2)).double().numpy()
    tokens = pixels.reshape(5, 3, -1).transpose(0, 2, 1)  # (B, T, 3)
    hidden = tokens
    for weight, bias in zip(weights, biases):
        hidden = hidden @ weight.T + bias
    logits = hidden.mean(axis=1) @ classifier.T + network.head.bias.detach().double().numpy()
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    upstream = (probabilities - np.eye(3)[labels]) @ classifier / tokens.shape[1]  # (B, 6)
    expected = {2: upstream}
    expected[1] = upstream @ weights[2]  # (B, 4)
    expected[0] = expected[1] @ weights[1]  # (B, 5)
    for layer in (0, 1, 2):
        np.testing.assert_allclose(got[layer], expected[layer], rtol=1e-5, atol=1e-8)


def test_supervised_objective_needs_labels_and_a_classifier(vit):
    with pytest.raises(ValueError, match="no label for stimulus ids 's2'"):
        SupervisedObjective.from_mapping({"s0": 1, "s1": 0}, ["s0", "s1", "s2"])
    with pytest.raises(ValueError, match="non-negative integers"):
        SupervisedObjective(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="logits of shape"):  # a DINO backbone has no classifier
        extract_gradient_features(
            vit, _images(2), SupervisedObjective(np.array([0, 1])), progress=False
        )
    with pytest.raises(ValueError, match="stimulus position 2 has no label"):
        network = _LinearTokens()
        model = HookProbeModel(
            network,
            architecture="toy:linear",
            layer_names=["layers.0"],
            token_layout=TokenLayout(has_cls=False),
            preprocess=Preprocess(resolution=4),
        )
        extract_gradient_features(
            model, _images(3, 4), SupervisedObjective(np.array([0, 1])), progress=False
        )


# ---------------------------------------------------------------------------- views
def test_seeded_views_identity_crop_keeps_the_image_and_flip_mirrors_it():
    images = torch.from_numpy(_images(2, 8)).permute(0, 3, 1, 2).float() / 255.0
    preprocess = Preprocess(resolution=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    seeds = torch.tensor([11, 12])
    still = SeededViews(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, brightness=0, contrast=0)
    views = still(images, seeds, n_views=2, seed=0, preprocess=preprocess)  # (2, 2, 3, 8, 8)
    torch.testing.assert_close(views[0], images, atol=1e-5, rtol=0)
    torch.testing.assert_close(views[1], images, atol=1e-5, rtol=0)
    flipped = SeededViews(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, brightness=0, contrast=0)
    mirrored = flipped(images, seeds, n_views=1, seed=0, preprocess=preprocess)[0]
    torch.testing.assert_close(mirrored, images.flip(-1), atol=1e-5, rtol=0)
    random = SeededViews()(images, seeds, n_views=2, seed=0, preprocess=preprocess)
    again = SeededViews()(images.flip(0), seeds.flip(0), n_views=2, seed=0, preprocess=preprocess)
    torch.testing.assert_close(again.flip(1), random)  # a view follows its image, not its row
    assert not torch.allclose(random[0], random[1])


# ---------------------------------------------------------------------------- cache, errors
def test_cache_keys_gradients_by_objective(vit, tmp_path):
    stimuli = StimulusSet.from_array([f"s{i}" for i in range(4)], _images(4))
    cache = FeatureCache(tmp_path / "cache")
    options = {"layers": [1], "progress": False, "cache": cache}
    first = extract_gradient_features(vit, stimuli, InvarianceObjective(), **options)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    sidecar = next((tmp_path / "cache").rglob("*.json")).read_text()
    assert '"feature_kind": "gradient"' in sidecar and "invariance:" in sidecar

    class Exploding(InvarianceObjective):
        def __call__(self, model, batch):
            raise AssertionError("the model ran although every layer was cached")

    cached = extract_gradient_features(vit, stimuli, Exploding(), **options)
    np.testing.assert_array_equal(cached[1], first[1])
    extract_gradient_features(vit, stimuli, InvarianceObjective(seed=1), **options)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2


def test_bad_objectives_and_layers_fail_clearly(vit):
    images = _images(2)

    class NotPerImage(InvarianceObjective):
        def __call__(self, model, batch):
            return super().__call__(model, batch).sum()

    class TargetsOnly(InvarianceObjective):
        def __call__(self, model, batch):
            with torch.no_grad():
                model.extract(batch.images, [model.depth - 1])
            return batch.images.sum(dim=(1, 2, 3))

    with pytest.raises(ValueError, match=r"one loss per image, a Tensor of shape \(2,\)"):
        extract_gradient_features(vit, images, NotPerImage(), progress=False)
    with pytest.raises(ValueError, match="never ran with gradients"):
        extract_gradient_features(vit, images, TargetsOnly(), progress=False)
    with pytest.raises(ValueError, match=r"indices in \[0, 4\)"):
        extract_gradient_features(vit, images, InvarianceObjective(), layers=[4], progress=False)
    with pytest.raises(TypeError, match="identity"):
        extract_gradient_features(vit, images, lambda model, batch: None, progress=False)
    with pytest.raises(ValueError, match="class token"):
        toy = HookProbeModel(
            _LinearTokens(),
            architecture="toy",
            layer_names=["layers.0"],
            token_layout=TokenLayout(has_cls=False),
            preprocess=Preprocess(resolution=4),
        )
        extract_gradient_features(toy, _images(2, 4), InvarianceObjective(), pooling="cls")


def test_layer_modules_of_vits_are_the_blocks(vit):
    assert layer_modules(vit) == list(vit.module.vit.blocks)


# ---------------------------------------------------------------------------- planted truth
class _PlantedLevelNet(nn.Module):
    """Layer k outputs ``A_k @ level_k`` of the stimulus: activations linear in planted levels.

    It reads the stimulus position (the objective passes ``batch.indices``), not pixels.
    """

    def __init__(self, levels: list[np.ndarray], widths: list[int]) -> None:
        super().__init__()
        for k, level in enumerate(levels):
            self.register_buffer(f"level_{k}", torch.from_numpy(level.astype(np.float32)))
        self.layers = nn.ModuleList(
            nn.Linear(level.shape[1], width, bias=False) for level, width in zip(levels, widths)
        )

    def forward(self, indices: torch.Tensor) -> list[torch.Tensor]:
        return [layer(getattr(self, f"level_{k}")[indices]) for k, layer in enumerate(self.layers)]


class _PlantedGradientObjective:
    """``loss_i = sum_k <h_k(i), level_{K-1-k}(i)>``: d loss / d h_k = level_{K-1-k}(i).

    Gradients of layer k carry the level planted K-1-k steps up: the hierarchy inverted, as
    when the backward pass runs from the last layer to the first.
    """

    identity = "test:planted-inverted"

    def __init__(self, levels: list[np.ndarray]) -> None:
        self.targets = [torch.from_numpy(level.astype(np.float32)) for level in levels[::-1]]

    def __call__(self, model, batch: StimulusBatch) -> torch.Tensor:
        outputs = model.module(batch.indices)  # per layer (B, width_k)
        return sum((h * t[batch.indices]).sum(-1) for h, t in zip(outputs, self.targets))


def _planted_model(levels: list[np.ndarray]) -> HookProbeModel:
    torch.manual_seed(0)
    widths = [level.shape[1] for level in levels[::-1]]  # layer k's width = level K-1-k's size
    return HookProbeModel(
        _PlantedLevelNet(levels, widths),
        architecture="toy:planted",
        layer_names=[f"layers.{k}" for k in range(len(levels))],
        token_layout=TokenLayout(has_cls=False),
        preprocess=Preprocess(resolution=32),
    )


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    simulated = simulate_subject(root / "sim", n_stimuli=160, image_size=32, seed=2)
    fmri, stimuli = load_brain(str(simulated.fmri_dir))
    meg, _ = load_brain(str(simulated.meg_path))
    latents = pd.read_csv(simulated.stimuli_csv, dtype={"stimulus_id": str})
    latents = latents.set_index("stimulus_id").loc[stimuli.ids].reset_index()
    levels = oracle_features(stimuli.load_array(), latents)
    return fmri, meg, stimuli, levels


@pytest.mark.slow
def test_planted_gradients_invert_the_hierarchy_and_backward_order_restores_it(subject):
    fmri, meg, stimuli, levels = subject
    config = EncodingConfig(backend="numpy", n_folds=4)
    depths = {k: k / 3 for k in range(4)}
    for data in (fmri, meg):
        brain, aligned = data.align(stimuli)
        rows = stimuli.index_of(aligned.ids)
        ordered = [level[rows] for level in levels]
        model = _planted_model(ordered)
        gradients = extract_gradient_features(
            model, aligned, _PlantedGradientObjective(ordered), batch_size=50, progress=False
        )
        for k in range(4):  # the analytic gradient, exactly
            np.testing.assert_allclose(gradients[k], ordered[3 - k], rtol=1e-6, atol=1e-6)
        activations = {k: level for k, level in enumerate(ordered)}
        forward = score_layers(activations, depths, brain, config=config).summary
        backward = score_layers(
            gradients, depths, brain, config=config, feature_kind="gradient"
        ).summary
        score = "spatial_score" if data.modality == "fmri" else "temporal_score"
        assert forward[score] > 0.7, forward[score]
        assert backward[score] < -0.7, backward[score]
        assert backward[f"{score}_backward_order"] == pytest.approx(-backward[score])
        assert f"{score}_backward_order" not in forward


def test_outputs_changed_in_place_afterwards_are_refused():
    network = nn.Sequential(nn.Flatten(2), nn.Linear(16, 5), nn.ReLU(inplace=True), nn.Linear(5, 2))
    model = HookProbeModel(
        network,
        architecture="toy:inplace",
        layer_names=["1", "3"],
        token_layout=TokenLayout(has_cls=False),
        preprocess=Preprocess(resolution=4),
    )
    objective = SupervisedObjective(np.zeros(2, dtype=int), logits=lambda m, x: m(x).mean(1))
    with pytest.raises(ValueError, match=r"layers \['1'\] are modified in place"):
        extract_gradient_features(model, _images(2, 4), objective, progress=False)
    got = extract_gradient_features(model, _images(2, 4), objective, layers=[1], progress=False)
    assert got[1].shape == (2, 2)


def test_convolutional_networks_in_eval_mode_give_per_image_gradients():
    """torchvision ResNet-18 (BatchNorm uses its running statistics): supervised and invariance."""
    model = load_probe_model("torchvision:resnet18", weights="random", resolution=32)
    images = _images(4, seed=7)
    for objective in (SupervisedObjective(np.array([3, 1, 4, 1])), InvarianceObjective()):
        options = {"layers": [0, 4, 7], "progress": False}
        whole = extract_gradient_features(model, images, objective, batch_size=4, **options)
        single = extract_gradient_features(model, images, objective, batch_size=1, **options)
        _assert_close(single, whole)
        assert whole[7].shape == (4, 512)
