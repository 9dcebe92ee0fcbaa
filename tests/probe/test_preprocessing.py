"""Preprocessing as the models' authors do it, on real image files (issue 10).

Each test compares the model input brainalign builds from image files (through the same
batches feature extraction reads) with the authors' own pipeline applied to the same files
opened with PIL: timm's ``create_transform(**resolve_data_config(...))``, a Hugging Face image
processor, a torchvision weights' ``transforms()``. They guard against brainalign resizing,
cropping or normalising in its own way (the issue found it ignored timm's ``crop_pct`` and
interpolation, and a Hugging Face processor's resampling and resize-then-crop).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from brainalign.models import create_backbone, save_teacher_export
from brainalign.probe.features import extract_features, model_input_batches
from brainalign.probe.models import load_probe_model
from brainalign.probe.stimuli import StimulusSet

CPU = torch.device("cpu")
#: (name, (width, height), PIL mode): non-square, smaller than the inputs, grey, JPEG and PNG
IMAGE_FILES = [
    ("wide.png", (300, 200), "RGB"),
    ("small.jpg", (20, 20), "RGB"),
    ("portrait.png", (57, 91), "RGB"),
    ("square.jpg", (224, 224), "RGB"),
    ("grey.png", (64, 40), "L"),
]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list:
    """Smooth random images (bilinear-upsampled noise) saved as PNG and JPEG files."""
    folder = tmp_path_factory.mktemp("images")
    generator = np.random.default_rng(0)
    paths = []
    for name, (width, height), mode in IMAGE_FILES:
        coarse = generator.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3))
        image = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR)
        noise = generator.integers(-20, 21, (height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        image.save(folder / name, quality=90) if name.endswith(".jpg") else image.save(
            folder / name
        )
        paths.append(folder / name)
    return paths


def _stimuli(paths) -> StimulusSet:
    return StimulusSet.from_paths([path.stem for path in paths], paths)


def _brainalign_inputs(model, paths, batch_size: int = 2) -> torch.Tensor:
    """The model input feature extraction builds from the files: (N, 3, R, R)."""
    batches = model_input_batches(
        model, _stimuli(paths), batch_size, CPU, desc="test", progress=False
    )
    return torch.cat([batch.inputs for batch in batches])


def _pil(paths) -> list:
    """The files as the authors' evaluation scripts open them."""
    return [Image.open(path).convert("RGB") for path in paths]


def _timm_reference(model, paths, **config) -> torch.Tensor:
    data_config = resolve_data_config(config, model=model)
    transform = create_transform(**data_config, is_training=False)
    return torch.stack([transform(image) for image in _pil(paths)])


def _square(side: int) -> dict:
    return {"height": side, "width": side}


def _patch_mean(tokens: torch.Tensor, n_prefix: int) -> np.ndarray:
    return tokens[:, n_prefix:].float().mean(dim=1).numpy()


# ---------------------------------------------------------------------------- timm
@pytest.mark.parametrize(
    "name, crop_pct", [("resnet18", 0.95), ("vit_tiny_patch16_224", 0.9)], ids=["resnet", "vit"]
)
def test_timm_inputs_and_features_are_timms_own(image_files, name, crop_pct):
    # Guards (a) of the issue: timm's crop_pct (not 1.0 here), its interpolation and its
    # floor() of the resize size, for a convnet and a ViT, on files of many sizes.
    model = load_probe_model(f"timm:{name}", weights="random")
    network = model.module
    assert resolve_data_config({}, model=network)["crop_pct"] == crop_pct
    expected = _timm_reference(network, image_files)
    got = _brainalign_inputs(model, image_files)
    assert got.shape == expected.shape == (len(image_files), 3, 224, 224)
    assert torch.equal(got, expected)

    layers = [0, model.depth // 2, model.depth - 1]
    features = extract_features(
        model, _stimuli(image_files), layers=layers, pooling="mean", batch_size=2,
        device="cpu", progress=False,
    )  # fmt: skip
    options = {"indices": layers, "intermediates_only": True}
    n_prefix = model.token_layout.n_prefix
    if n_prefix:
        options.update(norm=True, return_prefix_tokens=True)
    for start in (0, 2, 4):
        with torch.inference_mode():
            ours = model.extract(got[start : start + 2], layers)
            theirs = network.forward_intermediates(expected[start : start + 2], **options)
        for layer, tokens, output in zip(layers, ours, theirs):
            if n_prefix:  # (patches (B, D, h, w), prefix (B, P, D))
                assert torch.equal(tokens[:, :n_prefix], output[1])
                output = output[0]
            patches = output.flatten(2).transpose(1, 2)  # (B, h*w, D)
            assert torch.equal(tokens[:, n_prefix:], patches)
            # the pooled feature is the mean over patch tokens (up to summation order)
            np.testing.assert_allclose(
                features[layer][start : start + 2], _patch_mean(patches, 0), rtol=1e-6, atol=1e-7
            )


def test_timm_vit_built_for_32_px_is_preprocessed_at_32(image_files):
    # The bug: a timm ViT built with img_size=32 and given as an nn.Module was
    # preprocessed at the pretrained config's 224 px and extraction died in timm with a bare
    # AssertionError. Its own input size must be used, with timm's transform at that size.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32).eval()
    model = load_probe_model(network)
    assert model.preprocess.resolution == 32
    expected = _timm_reference(network, image_files, input_size=(3, 32, 32))
    got = _brainalign_inputs(model, image_files)
    assert got.shape == (len(image_files), 3, 32, 32)
    assert torch.equal(got, expected)
    features = extract_features(
        model, _stimuli(image_files), layers=[11], pooling="cls", device="cpu", progress=False
    )
    assert features[11].shape == (len(image_files), network.embed_dim)
    assert np.isfinite(features[11]).all()


@pytest.mark.parametrize("hooked", [False, True], ids=["forward_intermediates", "hooks"])
def test_a_resolution_a_fixed_size_vit_rejects_is_one_clear_error(hooked):
    network = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32).eval()
    options = {"layer_names": ["blocks.0"]} if hooked else {}
    with pytest.raises(ValueError, match=r"built for 32x32 inputs.*resolution=64") as caught:
        load_probe_model(network, resolution=64, **options)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------- Hugging Face
def _tiny_dinov2_folder(folder, *, resample: int = 3):
    """A DINOv2 folder with DINOv2's own processor settings scaled down (256 -> 224 becomes
    40 -> 32; bicubic; ImageNet mean/std)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Dinov2Model(config).eval()
    with torch.no_grad():  # a final norm that is not the identity, so that it shows
        model.layernorm.weight.normal_(1.0, 0.5)
    model.save_pretrained(folder)
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 40},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        resample=resample,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    )
    processor.save_pretrained(folder)
    return model, processor


def test_huggingface_pixels_and_hidden_states_are_the_processors_and_models(image_files, tmp_path):
    # Guards (b): the processor's resampling and resize-then-crop, not only its mean/std/size.
    network, processor = _tiny_dinov2_folder(tmp_path / "dinov2")
    expected = processor(images=_pil(image_files), return_tensors="pt")["pixel_values"]
    assert expected.shape == (len(image_files), 3, 32, 32)
    for final_norm in (False, True):
        model = load_probe_model(tmp_path / "dinov2", final_norm=final_norm)
        got = _brainalign_inputs(model, image_files)
        assert torch.equal(got, expected)
        features = extract_features(
            model, _stimuli(image_files), layers=[0, 1], pooling="mean", batch_size=2,
            device="cpu", progress=False,
        )  # fmt: skip
        for layer in (0, 1):
            with torch.inference_mode():
                tokens = [
                    network(
                        pixel_values=expected[i : i + 2], output_hidden_states=True
                    ).hidden_states[layer + 1]
                    for i in (0, 2, 4)
                ]
                if final_norm:
                    tokens = [network.layernorm(state) for state in tokens]
            rows = np.concatenate([_patch_mean(state, 1) for state in tokens])
            np.testing.assert_array_equal(features[layer], rows)


@pytest.mark.parametrize(
    "overrides, processor_options",
    [
        # resolution keeps the processor's resize/crop ratio (40/32): shortest edge 30, crop 24
        ({"resolution": 24}, {"size": {"shortest_edge": 30}, "crop_size": _square(24)}),
        # crop_pct alone: the crop stays 32, the resize becomes floor(32 / 0.5) = 64
        ({"crop_pct": 0.5}, {"size": {"shortest_edge": 64}}),
        ({"resolution": 40, "crop_pct": 0.8},
         {"size": {"shortest_edge": 50}, "crop_size": _square(40)}),
        ({"interpolation": "nearest"}, {"resample": Image.Resampling.NEAREST}),
    ],
    ids=["resolution", "crop_pct", "both", "interpolation"],
)  # fmt: skip
def test_huggingface_overrides_give_what_the_processor_gives(
    image_files, tmp_path, overrides, processor_options
):
    _, processor = _tiny_dinov2_folder(tmp_path / "dinov2")
    expected = processor(images=_pil(image_files), return_tensors="pt", **processor_options)
    model = load_probe_model(tmp_path / "dinov2", **overrides)
    got = _brainalign_inputs(model, image_files)
    side = overrides.get("resolution", 32)
    assert model.preprocess.resolution == side
    assert got.shape == (len(image_files), 3, side, side)
    assert torch.equal(got, expected["pixel_values"])


def _tiny_vit_folder(folder):
    """A 32-px Hugging Face ViT folder (no image processor yet); returns ``transformers``."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return transformers


def test_huggingface_vit_processor_without_crop(image_files, tmp_path):
    # ViTImageProcessor resizes to a fixed height x width (bilinear here), no crop, mean 0.5.
    transformers = _tiny_vit_folder(tmp_path / "vit")
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=2)
    processor.save_pretrained(tmp_path / "vit")
    expected = processor(images=_pil(image_files), return_tensors="pt")["pixel_values"]
    assert torch.equal(
        _brainalign_inputs(load_probe_model(tmp_path / "vit"), image_files), expected
    )


# ---------------------------------------------------------------------------- torchvision
@pytest.mark.parametrize("resolution", [None, 160], ids=["default", "resolution"])
def test_torchvision_inputs_are_the_weights_transforms(image_files, resolution):
    import torchvision

    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    if resolution is None:
        transform, side = weights.transforms(), 224
    else:  # the preset's resize/crop ratio (256/224) kept: resize floor(160 / 0.875) = 182
        resize = math.floor(resolution / (224 / 256) + 1e-9)
        transform, side = weights.transforms(crop_size=resolution, resize_size=resize), resolution
    expected = torch.stack([transform(image) for image in _pil(image_files)])
    model = load_probe_model("torchvision:resnet18", weights="random", resolution=resolution)
    got = _brainalign_inputs(model, image_files)
    assert got.shape == (len(image_files), 3, side, side)
    assert torch.equal(got, expected)


# ---------------------------------------------------------------------------- final norm
def _hf_vit_from_timm(network, folder):
    """A Hugging Face ViT folder holding the same weights as a timm ViT (the mapping of
    transformers' ``convert_vit_timm_to_pytorch``, in the names of transformers 5 or 4)."""
    transformers = pytest.importorskip("transformers")
    block, depth = network.blocks[0], len(network.blocks)
    config = transformers.ViTConfig(
        hidden_size=network.embed_dim,
        num_hidden_layers=depth,
        num_attention_heads=block.attn.num_heads,
        intermediate_size=block.mlp.fc1.out_features,
        image_size=32,
        patch_size=network.patch_embed.patch_size[0],
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    model = transformers.ViTModel(config, add_pooling_layer=False)
    version_5 = "layers.0.mlp.fc1.weight" in model.state_dict()
    layer = "layers.{}." if version_5 else "encoder.layer.{}."
    renames = {  # timm block part -> Hugging Face layer part
        "norm1": "layernorm_before", "norm2": "layernorm_after",
        "attn.proj": "attention.o_proj" if version_5 else "attention.output.dense",
        "mlp.fc1": "mlp.fc1" if version_5 else "intermediate.dense",
        "mlp.fc2": "mlp.fc2" if version_5 else "output.dense",
    }  # fmt: skip
    qkv = (
        ("attention.q_proj", "attention.k_proj", "attention.v_proj")
        if version_5
        else tuple(f"attention.attention.{name}" for name in ("query", "key", "value"))
    )
    source = network.state_dict()
    state = {
        "embeddings.cls_token": source["cls_token"],
        "embeddings.position_embeddings": source["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": source["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": source["patch_embed.proj.bias"],
        "layernorm.weight": source["norm.weight"],
        "layernorm.bias": source["norm.bias"],
    }
    for index in range(depth):
        ours, theirs = f"blocks.{index}.", layer.format(index)
        for kind in ("weight", "bias"):
            for old, new in renames.items():
                state[f"{theirs}{new}.{kind}"] = source[f"{ours}{old}.{kind}"]
            for name, part in zip(qkv, source[f"{ours}attn.qkv.{kind}"].chunk(3)):
                state[f"{theirs}{name}.{kind}"] = part
    model.load_state_dict(state, strict=True)
    model.save_pretrained(folder)


def test_final_norm_means_the_same_for_timm_and_hugging_face(tmp_path):
    # Guards (c): the final norm used to be applied to every block for timm models but never
    # for Hugging Face ViTs, so one architecture gave different features by source.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
            depth=3, num_heads=2,
        ).eval()  # fmt: skip
        with torch.no_grad():  # a norm that is not the identity, so that it shows
            network.norm.weight.normal_(1.0, 0.5)
            network.norm.bias.normal_(0.0, 0.5)
    _hf_vit_from_timm(network, tmp_path / "vit")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    identities = set()
    for final_norm in (True, False):
        timm_model = load_probe_model(network, final_norm=final_norm)
        hf_model = load_probe_model(tmp_path / "vit", final_norm=final_norm)
        blocks = [f"blocks.{index}" for index in range(3)]  # the same module through hooks
        hooked = load_probe_model(network, final_norm=final_norm, layer_names=blocks)
        with torch.no_grad():
            from_timm = timm_model.extract(images, [0, 1, 2])
            from_hf = hf_model.extract(images, [0, 1, 2])
            from_hooks = hooked.extract(images, [0, 1, 2])
        for layer in range(3):
            torch.testing.assert_close(from_hf[layer], from_timm[layer], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(from_hooks[layer], from_timm[layer], atol=0, rtol=0)
        identities |= {timm_model.identity, hf_model.identity}
    assert len(identities) == 4, "final_norm must change the identity (the feature cache key)"
    # and it does change the tokens
    with torch.no_grad():
        normed = load_probe_model(network, final_norm=True).extract(images, [0])[0]
        raw = load_probe_model(network, final_norm=False).extract(images, [0])[0]
    assert (normed - raw).abs().max() > 0.1


def test_final_norm_means_the_same_for_brainalign_backbones_exports_and_timm(tmp_path):
    # The same DINOv3-style ViT as a brainalign backbone object, a teacher export, the timm
    # module inside it and a ``timm:`` spec with its weights: one set of tokens per final_norm.
    from safetensors.torch import save_file

    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny_test").eval()
    with torch.no_grad():
        backbone.vit.norm.weight.normal_(1.0, 0.5)
    export = save_teacher_export(backbone, tmp_path / "export", {"step": 0})
    weights = tmp_path / "vit.safetensors"
    save_file(
        {key: value.contiguous() for key, value in backbone.vit.state_dict().items()}, weights
    )
    timm_name = backbone.vit.pretrained_cfg["architecture"]
    blocks = [f"vit.blocks.{index}" for index in range(backbone.depth)]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    identities = set()
    for final_norm in (True, False):
        models = {
            "backbone": load_probe_model(backbone, final_norm=final_norm),
            "export": load_probe_model(export, final_norm=final_norm),
            "timm module": load_probe_model(backbone.vit, final_norm=final_norm),
            "timm spec": load_probe_model(
                f"timm:{timm_name}", weights=weights, final_norm=final_norm
            ),
            "hooked backbone": load_probe_model(
                backbone, final_norm=final_norm, layer_names=blocks
            ),
        }
        with torch.no_grad():
            tokens = {name: model.extract(images, [0, 2]) for name, model in models.items()}
        for name, layers in tokens.items():
            for layer, expected in zip(layers, tokens["backbone"]):
                torch.testing.assert_close(layer, expected, msg=f"{name}, final_norm={final_norm}")
        identities |= {models["export"].identity, models["timm spec"].identity}
    assert len(identities) == 4, "final_norm must change the identity (the feature cache key)"


def test_a_resolution_a_fixed_size_hugging_face_vit_rejects_is_one_clear_error(tmp_path):
    # Hugging Face ViTs are built for one input size; an override used to fail with the
    # model's own message, which names neither the folder nor the option.
    _tiny_vit_folder(tmp_path / "vit")
    with pytest.raises(
        ValueError, match=r"vit does not take 24x24 inputs.*resolution=24"
    ) as caught:
        load_probe_model(tmp_path / "vit", resolution=24)
    assert "\n" not in str(caught.value) and "resolution 32" in str(caught.value)


def test_timm_overrides_give_timms_transform_with_those_settings(image_files):
    # resolution and crop_pct change the data config timm's transform is built from.
    model = load_probe_model("timm:resnet18", weights="random", resolution=96, crop_pct=0.5)
    expected = _timm_reference(model.module, image_files, input_size=(3, 96, 96), crop_pct=0.5)
    got = _brainalign_inputs(model, image_files)
    assert got.shape == (len(image_files), 3, 96, 96)
    assert torch.equal(got, expected)


def test_crop_pct_for_a_processor_without_a_crop_is_one_clear_error(tmp_path):
    # ViTImageProcessor resizes to height x width and never crops: a crop_pct override used to
    # be dropped without a word.
    transformers = _tiny_vit_folder(tmp_path / "vit")
    transformers.ViTImageProcessor(size=_square(32)).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match=r"without a centre crop.*crop_pct=0\.875") as caught:
        load_probe_model(tmp_path / "vit", crop_pct=0.875)
    assert "\n" not in str(caught.value)
    assert load_probe_model(tmp_path / "vit", crop_pct=1.0).preprocess.resolution == 32
