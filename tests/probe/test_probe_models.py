"""Loading models for probing: exports, Lightning checkpoints, timm, torchvision, modules."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from brainalign.models import create_backbone, save_teacher_export
from brainalign.probe.models import (
    DinoProbeModel,
    HookProbeModel,
    Preprocess,
    TimmProbeModel,
    TokenLayout,
    load_probe_model,
    read_weights_file,
)


def _images(batch: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)  # (B, 3, H, W)


def _backbone(seed: int):
    torch.manual_seed(seed)
    backbone = create_backbone("vit_tiny_test").eval()
    with torch.no_grad():  # make every tensor differ between seeds, layer scale included
        for parameter in backbone.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return backbone


# ---------------------------------------------------------------------------- brainalign
def test_dino_probe_model_returns_forward_layers_tokens(tiny_backbone):
    model = load_probe_model(tiny_backbone)
    images = _images()
    assert isinstance(model, DinoProbeModel)
    assert model.depth == 4
    assert model.relative_depths == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert model.token_layout == TokenLayout(has_cls=True, n_registers=4)
    assert model.preprocess.resolution == 32
    with torch.no_grad():
        got = model.extract(images, [3, 1])
        expected = tiny_backbone.forward_layers(images, [3, 1], norm=True)
    assert [tuple(tokens.shape) for tokens in got] == [(3, 1 + 4 + 64, 64)] * 2
    for tokens, reference in zip(got, expected):
        torch.testing.assert_close(tokens, reference)


def test_extract_rejects_out_of_range_layers(tiny_backbone):
    model = load_probe_model(tiny_backbone)
    with pytest.raises(ValueError, match=r"layer indices \[4\] out of range.*0\.\.3"):
        model.extract(_images(), [0, 4])


def test_teacher_export_gives_the_in_memory_backbone_tokens(tmp_path):
    backbone = _backbone(1)
    folder = save_teacher_export(backbone, tmp_path / "export", {"step": 10})
    from_disk = load_probe_model(folder)
    in_memory = load_probe_model(backbone)
    images = _images()
    with torch.no_grad():
        for disk_tokens, memory_tokens in zip(
            from_disk.extract(images, [0, 2]), in_memory.extract(images, [0, 2])
        ):
            torch.testing.assert_close(disk_tokens, memory_tokens, rtol=0, atol=0)
    assert from_disk.identity == in_memory.identity
    assert from_disk.identity != load_probe_model(_backbone(2)).identity


@dataclasses.dataclass
class _FakeHeadConfig:
    n_prototypes: int = 16


@pytest.fixture
def brainalign_config_class(monkeypatch):
    """A dataclass importable as ``brainalign._test_fake_config.HeadConfig``."""
    module = types.ModuleType("brainalign._test_fake_config")
    config_class = type("HeadConfig", (_FakeHeadConfig,), {"__module__": module.__name__})
    config_class.__qualname__ = "HeadConfig"
    module.HeadConfig = config_class
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return config_class


def _write_checkpoint(path, teacher, student, hyper_parameters_extra=None, **extra):
    state = {f"teacher.backbone.{k}": v for k, v in teacher.state_dict().items()}
    state |= {f"student.backbone.{k}": v for k, v in student.state_dict().items()}
    state["teacher.dino_head.weight"] = torch.zeros(3)
    checkpoint = {
        "state_dict": state,
        "hyper_parameters": {"backbone": "vit_tiny_test", "img_size": None}
        | (hyper_parameters_extra or {}),
        "global_step": 7,
        **extra,
    }
    torch.save(checkpoint, path)
    return path


def test_ckpt_loads_teacher_or_student_weights(tmp_path, brainalign_config_class):
    teacher, student = _backbone(1), _backbone(2)
    # brainalign config dataclasses in hyper_parameters load as inert records, no allow_pickle.
    path = _write_checkpoint(
        tmp_path / "step_0000007.ckpt",
        teacher,
        student,
        hyper_parameters_extra={"dino_head": brainalign_config_class(n_prototypes=16)},
    )
    as_teacher = load_probe_model(path)
    as_student = load_probe_model(str(path), network="student")
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(as_teacher.module.state_dict()[name], value, rtol=0, atol=0)
    for name, value in student.state_dict().items():
        torch.testing.assert_close(as_student.module.state_dict()[name], value, rtol=0, atol=0)
    assert as_teacher.identity == load_probe_model(teacher).identity
    assert as_student.identity == load_probe_model(student).identity
    assert as_teacher.identity != as_student.identity


class _Payload:
    """Stands for any Python object a malicious checkpoint could carry."""

    def __init__(self) -> None:
        self.value = 1


def test_ckpt_with_pickled_object_needs_allow_pickle(tmp_path):
    backbone = _backbone(1)
    path = _write_checkpoint(tmp_path / "odd.ckpt", backbone, backbone, payload=_Payload())
    with pytest.raises(ValueError, match=r"allow_pickle=True.*at your own risk") as error:
        load_probe_model(path)
    assert "_Payload" in str(error.value)
    with pytest.warns(UserWarning, match="arbitrary code"):
        model = load_probe_model(path, allow_pickle=True)
    assert model.identity == load_probe_model(backbone).identity


def test_ckpt_errors_name_what_is_missing(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": {}}, path)
    with pytest.raises(ValueError, match="no 'backbone' name"):
        load_probe_model(path)
    torch.save(
        {"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": {"backbone": "x"}},
        path,
    )
    with pytest.raises(ValueError, match=r"no weights under 'teacher\.backbone\.'.*encoder"):
        load_probe_model(path)


# ---------------------------------------------------------------------------- timm
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_spec_with_local_weights_matches_brainalign_backbone(tmp_path, suffix):
    backbone = _backbone(3)
    state = {k: v.contiguous() for k, v in backbone.vit.state_dict().items()}
    weights = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(weights))
    else:
        torch.save({"state_dict": state, "epoch": 3}, weights)
    model = load_probe_model("timm:vit_test_tiny_patch4_dinov3", weights=weights)
    assert isinstance(model, TimmProbeModel)
    assert model.depth == 4
    assert model.token_layout == TokenLayout(has_cls=True, n_registers=4)
    images = _images()
    with torch.no_grad():
        got = model.extract(images, [1, 3])
        expected = backbone.forward_layers(images, [1, 3], norm=True)
    for tokens, reference in zip(got, expected):
        torch.testing.assert_close(tokens, reference, rtol=1e-5, atol=1e-5)


def test_timm_spec_needs_weights_and_a_known_name(tmp_path):
    with pytest.raises(ValueError, match="nothing is downloaded"):
        load_probe_model("timm:vit_test_tiny_patch4_dinov3")
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        load_probe_model("timm:no_such_net", weights=tmp_path / "w.pth")
    random_a = load_probe_model("timm:vit_test_tiny_patch4_dinov3", weights="random")
    random_b = load_probe_model("timm:vit_test_tiny_patch4_dinov3", weights="random")
    assert random_a.identity == random_b.identity  # seeded initialisation


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    weights = tmp_path / "wrong.safetensors"
    save_file({"something.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(ValueError, match=r"do not fit.*unexpected keys.*something\.weight"):
        load_probe_model("timm:vit_test_tiny_patch4_dinov3", weights=weights)


# ---------------------------------------------------------------------------- torchvision
@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("torchvision") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_torchvision_resnet_layers_are_residual_blocks(resnet18_weights):
    reference, path = resnet18_weights
    model = load_probe_model("torchvision:resnet18", weights=path, resolution=32)
    assert isinstance(model, HookProbeModel)
    assert model.layer_names == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert model.token_layout == TokenLayout(has_cls=False)
    assert model.preprocess.resolution == 32
    images = _images(2)
    with torch.no_grad():
        stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
        after_layer2 = reference.layer2(reference.layer1(stem))  # (B, 128, 4, 4)
        after_layer4 = reference.layer4(reference.layer3(after_layer2))  # (B, 512, 1, 1)
        layer2_tokens, layer4_tokens = model.extract(images, [3, 7])
    torch.testing.assert_close(layer2_tokens, after_layer2.flatten(2).transpose(1, 2))
    torch.testing.assert_close(layer4_tokens, after_layer4.flatten(2).transpose(1, 2))
    assert layer2_tokens.shape == (2, 16, 128)


def test_hooked_forward_stops_after_the_deepest_requested_layer(resnet18_weights):
    _, path = resnet18_weights
    model = load_probe_model("torchvision:resnet18", weights=path, resolution=32)
    calls = []
    handle = model.module.layer4.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        model.extract(_images(1), [0])
    handle.remove()
    assert calls == []


# ---------------------------------------------------------------------------- nn.Module
class _ConvTower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.blocks = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 5, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(images))


def test_nn_module_hooks_on_blocks_or_named_layers():
    torch.manual_seed(0)
    tower = _ConvTower().eval()
    images = _images(2, size=8)
    model = load_probe_model(tower, resolution=8)
    assert model.layer_names == ["blocks.0", "blocks.1"]
    with torch.no_grad():
        (tokens,) = model.extract(images, [1])
        expected = tower(images).flatten(2).transpose(1, 2)  # (B, 64, 5)
    torch.testing.assert_close(tokens, expected)
    named = load_probe_model(tower, layer_names=["stem"], resolution=8)
    with torch.no_grad():
        torch.testing.assert_close(
            named.extract(images, [0])[0], tower.stem(images).flatten(2).transpose(1, 2)
        )
    with pytest.raises(ValueError, match="resolution="):
        load_probe_model(tower)
    with pytest.raises(ValueError, match=r"no submodule named \['nope'\]"):
        load_probe_model(tower, layer_names=["nope"], resolution=8)
    with pytest.raises(ValueError, match="layer_names="):
        load_probe_model(nn.Sequential(), resolution=8)


class _ChannelsLastStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).permute(0, 2, 3, 1)  # (B, H, W, C), as Swin stages


def test_channels_last_outputs_become_row_major_tokens():
    torch.manual_seed(0)
    stem = _ChannelsLastStem().eval()
    model = HookProbeModel(
        stem,
        architecture="test:channels_last",
        layer_names=[""],
        token_layout=TokenLayout(has_cls=False),
        preprocess=Preprocess(resolution=5),
        channels_last=True,
    )
    images = _images(2, size=5)
    with torch.no_grad():
        (tokens,) = model.extract(images, [0])
        expected = stem.conv(images).flatten(2).transpose(1, 2)  # (B, 25, 4)
    torch.testing.assert_close(tokens, expected)


def test_identity_follows_in_place_weight_updates(tiny_backbone):
    model = load_probe_model(tiny_backbone)
    before = model.identity
    assert model.identity == before
    with torch.no_grad():
        tiny_backbone.vit.blocks[0].mlp.fc1.weight.mul_(0.5)
    assert model.identity != before


# ---------------------------------------------------------------------------- errors
def test_unknown_spec_lists_the_accepted_forms(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder") as error:
        load_probe_model("nope:thing")
    message = str(error.value)
    for form in (
        "teacher-export folder",
        ".ckpt",
        "timm:<model name>",
        "torchvision:",
        "nn.Module",
    ):
        assert form in message
    with pytest.raises(ValueError, match="neither a brainalign export"):
        load_probe_model(tmp_path)
    with pytest.raises(ValueError, match="network must be"):
        load_probe_model("x.ckpt", network="ema")


def test_huggingface_folder_without_transformers_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ImportError, match="pip install transformers"):
        load_probe_model(tmp_path)


def _tiny_hf_vit(folder, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(seed)
    model = transformers.ViTModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(folder)
    return model


def test_huggingface_folder_gives_the_models_own_hidden_states(tmp_path):
    reference = _tiny_hf_vit(tmp_path / "vit")
    model = load_probe_model(tmp_path / "vit", final_norm=False)
    assert model.depth == 3
    assert model.token_layout == TokenLayout(has_cls=True, n_registers=0)
    assert model.preprocess.resolution == 32
    images = _images(size=32)
    with torch.no_grad():
        hidden = reference(pixel_values=images, output_hidden_states=True).hidden_states
        got = model.extract(images, [0, 2])
    torch.testing.assert_close(got[0], hidden[1])  # block 0 = hidden_states[1]
    torch.testing.assert_close(got[1], hidden[3])


def test_huggingface_final_norm_is_the_models_own_layernorm_on_every_block(tmp_path):
    # final_norm (the default) applies the norm the model applies to its last hidden state.
    reference = _tiny_hf_vit(tmp_path / "vit")
    model = load_probe_model(tmp_path / "vit")
    images = _images(size=32)
    with torch.no_grad():
        outputs = reference(pixel_values=images, output_hidden_states=True)
        got = model.extract(images, [0, 2])
        torch.testing.assert_close(got[0], reference.layernorm(outputs.hidden_states[1]))
    torch.testing.assert_close(got[1], outputs.last_hidden_state)  # the model's own output
    assert model.identity != load_probe_model(tmp_path / "vit", final_norm=False).identity


def test_huggingface_folder_with_registers_and_a_convnet(tmp_path):
    transformers = pytest.importorskip("transformers")
    common = {"image_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(
            hidden_size=32, num_hidden_layers=2, patch_size=8, num_register_tokens=4, **common
        )
    ).save_pretrained(tmp_path / "registers")
    model = load_probe_model(tmp_path / "registers")
    assert model.token_layout == TokenLayout(has_cls=True, n_registers=4)
    assert model.extract(_images(size=32), [1])[0].shape == (3, 1 + 4 + 16, 32)

    transformers.ConvNextModel(
        transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1] * 4, image_size=32)
    ).save_pretrained(tmp_path / "convnext")
    model = load_probe_model(tmp_path / "convnext")
    assert model.depth == 4 and not model.token_layout.has_cls
    assert model.extract(_images(size=32), [0])[0].shape == (3, 8 * 8, 8)  # stride-4 stem


def test_huggingface_pytorch_bin_is_read_safely(tmp_path):
    folder = tmp_path / "vit"
    reference = _tiny_hf_vit(folder)
    (folder / "model.safetensors").unlink()
    torch.save(reference.state_dict(), folder / "pytorch_model.bin")
    images = _images(size=32)
    with torch.no_grad():
        expected = reference(pixel_values=images, output_hidden_states=True).hidden_states[2]
        got = load_probe_model(folder, final_norm=False).extract(images, [1])[0]
        torch.testing.assert_close(got, expected)

    pickled = {"weights": reference.state_dict(), "extra": _Opaque()}
    torch.save(pickled, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled Python objects"):
        load_probe_model(folder)


class _Opaque:
    """A class torch's weights-only unpickler does not know."""


def test_huggingface_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    _tiny_hf_vit(tmp_path / "vit")
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    config["num_hidden_layers"] = 4  # one block more than the weights hold
    (tmp_path / "vit" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"does not fit config\.json: \d+ weights missing"):
        load_probe_model(tmp_path / "vit")


def test_read_weights_file_rejects_unknown_formats(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"0")
    with pytest.raises(ValueError, match=r"unknown weights format '\.npz'"):
        read_weights_file(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        read_weights_file(tmp_path / "missing.pth")


def test_damaged_weights_files_are_named(tmp_path):
    backbone = _backbone(0)
    export = save_teacher_export(backbone, tmp_path / "export", {"step": 0})
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # header cut short
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot read a safetensors"):
        load_probe_model(export)

    state = {key: value.contiguous() for key, value in backbone.vit.state_dict().items()}
    torch.save(state, tmp_path / "vit.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((tmp_path / "vit.pth").read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"truncated\.pth: cannot read a PyTorch weights file"):
        read_weights_file(truncated)
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.safetensors: cannot read"):
        read_weights_file(tmp_path / "text.safetensors")


# ---------------------------------------------------------------------------- preprocess
def test_preprocess_normalises_and_keeps_native_size():
    preprocess = Preprocess(resolution=4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    images[:, 2] = 51  # 0.2 after scaling
    out = preprocess(images)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out[:, 0], torch.full((2, 4, 4), 1.0))
    torch.testing.assert_close(out[:, 1], torch.full((2, 4, 4), 3.0))
    torch.testing.assert_close(out[:, 2], torch.full((2, 4, 4), 0.2))


def test_preprocess_resizes_the_shorter_side_then_centre_crops():
    preprocess = Preprocess(resolution=8, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.5)
    assert preprocess.resize_to == 16
    images = torch.zeros(1, 3, 16, 24, dtype=torch.uint8)
    images[..., 4:12, 8:16] = 255  # the central 8 x 8 square
    out = preprocess(images)
    assert out.shape == (1, 3, 8, 8)
    torch.testing.assert_close(out, torch.ones(1, 3, 8, 8))
    floats = torch.rand(1, 3, 8, 8)
    copy = floats.clone()
    Preprocess(resolution=8, mean=(0.5, 0.5, 0.5))(floats)
    torch.testing.assert_close(floats, copy)  # the caller's tensor is untouched
