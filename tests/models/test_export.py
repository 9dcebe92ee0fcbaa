import json

import pytest
import torch
from safetensors.torch import save_file

from brainalign.models import create_backbone, load_teacher_export, save_teacher_export


def test_export_round_trip(tmp_path, tiny_backbone):
    folder = save_teacher_export(tiny_backbone, tmp_path / "step_0000010", {"step": 10})
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["architecture"] == "vit_tiny_test" and meta["step"] == 10
    loaded, loaded_meta = load_teacher_export(folder)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).cls, tiny_backbone(images).cls)
    assert loaded_meta["depth"] == 4
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temporary left behind"


def test_export_from_another_architecture_is_a_clear_error(tmp_path, tiny_backbone):
    folder = save_teacher_export(tiny_backbone, tmp_path / "export", {"step": 0})
    other = create_backbone("vit_small_test")
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()}, folder / "model.safetensors"
    )
    with pytest.raises(ValueError, match="do not fit.*different model size"):
        load_teacher_export(folder)


def test_not_an_export_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a brainalign teacher export"):
        load_teacher_export(tmp_path)
