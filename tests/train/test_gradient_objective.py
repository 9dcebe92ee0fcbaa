"""The per-image DINO + iBOT objective of gradient features, and its use by the callback."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainalign.callbacks import BrainProbeCallback
from brainalign.probe.gradients import StimulusBatch, extract_gradient_features, image_seeds
from brainalign.probe.models import DinoProbeModel
from brainalign.probe.objectives import InvarianceObjective
from brainalign.train.gradient_objective import DinoGradientObjective, _seeded_views
from brainalign.train.losses import DINOLoss, IBOTPatchLoss, masked_patch_indices_and_weights
from brainalign.train.module import DINOv3Module, HeadConfig
from brainalign.train.schedules import Schedule

HEAD = HeadConfig(n_prototypes=48, hidden_dim=24, bottleneck_dim=12, n_layers=3)


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def module():
    """A tiny DINOv3Module whose student and teacher differ (as after some training)."""
    torch.manual_seed(0)
    dino = DINOv3Module(
        backbone="vit_tiny_test",
        dino_head=HEAD,
        ibot_head=HEAD,
        teacher_temp=Schedule(start=0.05, kind="constant"),
        student_temp=0.2,
    )
    with torch.no_grad():
        for parameter in dino.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return dino.eval()


def _batch(model: DinoProbeModel, images: np.ndarray) -> StimulusBatch:
    pixels = model.preprocess(torch.from_numpy(images).permute(0, 3, 1, 2))  # (B, 3, R, R)
    return StimulusBatch(
        images=pixels,
        seeds=torch.from_numpy(image_seeds(images)),
        indices=torch.arange(len(images)),
    )


# ---------------------------------------------------------------------------- the loss
def test_per_image_loss_equals_the_training_losses_on_that_image_alone(module):
    objective = DinoGradientObjective.from_module(module)
    assert objective.config["teacher_temp"] == 0.05 and objective.config["student_temp"] == 0.2
    student = DinoProbeModel(module.student_backbone)
    images = _images(3)
    batch = _batch(student, images)
    with torch.no_grad():
        losses = objective(student, batch)
    assert losses.shape == (3,)

    # Reference: DINOv3Module's own loss modules on one image, Sinkhorn replaced by softmax.
    temperature, student_temp = 0.05, 0.2
    for i in range(3):
        seed = [int(batch.seeds[i])]
        views = _seeded_views(batch.images[i : i + 1], seed, student.preprocess, objective.config)
        views = views.flatten(0, 1)  # (2, 3, R, R)
        masks = objective._masks(seed, (8, 8))  # (2, 64)
        assert masks.any(dim=1).sum() == 1  # mask_probability 0.5: one of the two views
        index, weights = masked_patch_indices_and_weights(masks)
        with torch.no_grad():
            teacher = module.teacher_backbone(views)
            targets = F.softmax(module.teacher["dino_head"](teacher.cls) / temperature, -1)
            patch_targets = F.softmax(
                module.teacher["ibot_head"](teacher.patches.flatten(0, 1)[index]) / temperature, -1
            )
            out = module.student_backbone(views, masks=masks)
            cls_logits = module.student["dino_head"](out.cls)  # (2, K)
            patch_logits = module.student["ibot_head"](out.patches.flatten(0, 1)[index])
            dino = DINOLoss()(cls_logits[:, None], None, targets[:, None], student_temp)
            ibot = IBOTPatchLoss()(patch_logits, patch_targets, weights, 2, student_temp)
        torch.testing.assert_close(losses[i], dino + ibot, rtol=1e-5, atol=1e-6)


def test_gradients_equal_a_batch_of_one_and_the_teacher_stays_fixed(module):
    objective = DinoGradientObjective.from_module(module)
    student = DinoProbeModel(module.student_backbone)
    images = _images(5, seed=1)
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    whole = extract_gradient_features(student, images, objective, batch_size=5, progress=False)
    single = extract_gradient_features(student, images, objective, batch_size=1, progress=False)
    order = np.array([3, 1, 4, 0, 2])
    shuffled = extract_gradient_features(
        student, images[order], objective, batch_size=2, progress=False
    )
    for layer, array in whole.items():
        scale = np.abs(array).max()
        assert scale > 0
        np.testing.assert_allclose(single[layer], array, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(
            shuffled[layer][np.argsort(order)], array, rtol=1e-4, atol=1e-5 * scale
        )
    assert all(parameter.grad is None for parameter in module.parameters())
    for key, value in module.teacher.state_dict().items():
        torch.testing.assert_close(value, teacher_before[key], rtol=0, atol=0)

    # No gradient reaches the teacher even when its weights could take one.
    module.teacher.requires_grad_(True)
    try:
        losses = objective(student, _batch(student, images[:2]))
        teacher_grads = torch.autograd.grad(
            losses.sum(), list(module.teacher.parameters()), allow_unused=True
        )
    finally:
        module.teacher.requires_grad_(False)
    assert all(grad is None for grad in teacher_grads)


def test_objective_needs_a_brainalign_vit(module):
    objective = DinoGradientObjective.from_module(module)
    other = SimpleNamespace(module=torch.nn.Linear(2, 2), preprocess=None)
    with pytest.raises(ValueError, match="needs a brainalign ViT"):
        objective(other, _batch(DinoProbeModel(module.student_backbone), _images(1)))
    with pytest.raises(ValueError, match="needs a brainalign DINOv3Module"):
        DinoGradientObjective.from_module(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------- checkpoints
def _save_checkpoint(module: DINOv3Module, path, drop: str | None = None):
    state = {k: v for k, v in module.state_dict().items() if drop is None or not k.startswith(drop)}
    torch.save({"state_dict": state, "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_checkpoint_objective_equals_the_module_objective(module, tmp_path):
    path = _save_checkpoint(module, tmp_path / "step.ckpt")  # hparams hold HeadConfig objects
    from_checkpoint = DinoGradientObjective.from_checkpoint(path)
    from_module = DinoGradientObjective.from_module(module)
    assert from_checkpoint.identity == from_module.identity
    student = DinoProbeModel(module.student_backbone)
    batch = _batch(student, _images(2))
    with torch.no_grad():
        torch.testing.assert_close(from_checkpoint(student, batch), from_module(student, batch))
    overridden = DinoGradientObjective.from_checkpoint(path, teacher_temp=0.1, seed=3)
    assert overridden.identity != from_module.identity
    assert overridden.config["teacher_temp"] == 0.1


def test_checkpoint_without_heads_is_refused_with_the_missing_keys(module, tmp_path):
    path = _save_checkpoint(module, tmp_path / "no_ibot.ckpt", drop="teacher.ibot_head.")
    with pytest.raises(ValueError, match=r"teacher\.ibot_head\.\*.*invariance objective"):
        DinoGradientObjective.from_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        DinoGradientObjective.from_checkpoint(tmp_path / "missing.ckpt")


# ---------------------------------------------------------------------------- callback
@pytest.fixture(scope="module")
def fmri_folder(tmp_path_factory):
    from brainalign.probe.simulate import simulate_subject

    root = tmp_path_factory.mktemp("subject")
    return str(simulate_subject(root / "sim", n_stimuli=20, image_size=32, seed=0).fmri_dir)


def _callback_and_trainer(fmri_folder, rank: int = 0, world: int = 1):
    from brainalign.probe.config import FeatureConfig, ProbeConfig
    from brainalign.probe.run import StimulusGroup
    from brainalign.probe.stimuli import StimulusSet

    features = FeatureConfig(kinds=["activation", "gradient"], pooling="mean", batch_size=4)
    callback = BrainProbeCallback(brain=[fmri_folder], probe=ProbeConfig(features=features))
    images = _images(6, seed=5)
    stimuli = StimulusSet.from_array([str(index) for index in range(6)], images)
    callback._groups = [StimulusGroup(stimuli=stimuli)]
    trainer = SimpleNamespace(global_rank=rank, world_size=world, global_step=0)
    return callback, trainer, images


def _extract_all(callback, trainer, module):
    model = callback._probe_model(module)
    layers = list(range(model.depth))
    return callback._extract_shares(model, module, layers, trainer.global_rank, trainer.world_size)


def test_callback_gradient_features_use_the_module_objective_and_rank_split(module, fmri_folder):
    callback, trainer, images = _callback_and_trainer(fmri_folder)
    shares = _extract_all(callback, trainer, module)
    assert set(shares[0]) == {"activation", "gradient"}
    teacher = DinoProbeModel(module.teacher_backbone)
    expected = extract_gradient_features(
        teacher, images, DinoGradientObjective.from_module(module, step=0), progress=False
    )
    for layer, array in expected.items():
        np.testing.assert_allclose(shares[0]["gradient"][layer], array, rtol=1e-4, atol=1e-7)
        assert not np.allclose(shares[0]["gradient"][layer], shares[0]["activation"][layer])
    # In DDP, rank 1 of 2 computes rows 1, 3, 5: the same gradients as in the full pass.
    callback, trainer, _ = _callback_and_trainer(fmri_folder, rank=1, world=2)
    rank_share = _extract_all(callback, trainer, module)[0]["gradient"]
    for layer, array in expected.items():
        np.testing.assert_allclose(rank_share[layer], array[1::2], rtol=1e-4, atol=1e-7)


def test_callback_falls_back_to_invariance_for_a_module_without_heads():
    from brainalign.probe.config import FeatureConfig
    from brainalign.probe.run import choose_objective

    ssl = BrainProbeCallback._ssl_objective(torch.nn.Linear(2, 2))
    with pytest.warns(UserWarning, match="invariance objective"):
        objective = choose_objective(FeatureConfig(kinds=["gradient"]), ssl, None)
    assert isinstance(objective, InvarianceObjective)
    with pytest.raises(ValueError, match="unknown feature kinds"):
        FeatureConfig(kinds=["activation", "gradients"])


# ---------------------------------------------------------------------------- CLI
def _probe_namespace(*args: str):
    """The probe command's parsed options: ``.model`` (ModelSource) and ``.probe`` (config)."""
    from brainalign.commands import probe as probe_command
    from brainalign.commands.probe_options import parse

    return parse(probe_command.build_parser(), ["--out", "unused", *args])[1]


def _probe_model(ns):
    from brainalign.commands.probe import ssl_objective_for
    from brainalign.probe.run import probe_model

    return probe_model(ns.model, ns.probe, ssl=ssl_objective_for(ns.model), progress=False)


def gradient_objective(spec, ns, stimuli):
    from brainalign.commands.probe import ssl_objective_for
    from brainalign.probe.run import choose_objective

    return choose_objective(ns.probe.features, ssl_objective_for(ns.model), stimuli)


@pytest.mark.slow
def test_probe_command_scores_activations_and_ssl_gradients(module, tmp_path):
    from brainalign.models import save_teacher_export
    from brainalign.probe.simulate import simulate_subject

    simulated = simulate_subject(tmp_path / "sim", n_stimuli=40, image_size=32, seed=0)
    checkpoint = _save_checkpoint(module, tmp_path / "run.ckpt")
    common = ["--brain", str(simulated.fmri_dir), "--brain", str(simulated.meg_path)]
    common += ["--n-folds", "3", "--backend", "numpy", "--cache-dir", "", "--pooling", "cls"]
    ns = _probe_namespace("--model", str(checkpoint), "--features", "activation,gradient", *common)
    result = _probe_model(ns)
    table = result.table
    assert set(table["feature_kind"]) == {"activation", "gradient"}
    assert result.summary["gradient_objective"].startswith("dino_ibot:")
    gradient_metrics = set(table.loc[table["feature_kind"] == "gradient", "metric"])
    assert {"spatial_score_backward_order", "temporal_score_backward_order"} <= gradient_metrics
    assert "temporal_score_backward_order" not in set(
        table.loc[table["feature_kind"] == "activation", "metric"]
    )
    for entry in result.summary["results"]:
        if entry["feature_kind"] == "gradient" and entry["modality"] == "meg":
            assert entry["temporal_score_backward_order"] == pytest.approx(
                -entry["temporal_score"], nan_ok=True
            )

    export = save_teacher_export(module.teacher_backbone, tmp_path / "export", {"step": 0})
    ns = _probe_namespace("--model", str(export), "--features", "gradient", *common)
    with pytest.warns(UserWarning, match="without the DINO/iBOT heads.*invariance objective"):
        result = _probe_model(ns)
    assert result.summary["gradient_objective"].startswith("invariance:")


def test_probe_command_refuses_ssl_gradients_without_a_checkpoint():
    ns = _probe_namespace("--model", "timm:resnet18", "--gradient-loss", "ssl")
    with pytest.raises(ValueError, match="needs a brainalign .ckpt"):
        gradient_objective("timm:resnet18", ns, None)
    ns = _probe_namespace("--model", "timm:resnet18", "--gradient-loss", "supervised")
    with pytest.raises(ValueError, match="needs --labels"):
        gradient_objective("timm:resnet18", ns, None)


@pytest.mark.slow
def test_fit_with_gradient_features_logs_both_kinds(tmp_path):
    import pandas as pd
    from runs import run_fit, scalar_tags

    from brainalign.probe.simulate import simulate_subject

    simulated = simulate_subject(tmp_path / "sim", n_stimuli=40, image_size=32, seed=0)
    callback = {
        "class_path": "brainalign.callbacks.BrainProbeCallback",
        "init_args": {
            "brain": [str(simulated.fmri_dir), str(simulated.meg_path)],
            "probe": {
                "features": {"kinds": ["activation", "gradient"], "pooling": "cls"},
                "encoding": {"n_folds": 3, "backend": "numpy"},
            },
            "n_probes": 2,
            "log_figures": False,
        },
    }
    run_fit(tmp_path, overrides={"trainer": {"callbacks": [callback], "max_steps": 4}})
    run_dir = tmp_path / "runs" / "smoke"
    chronology = pd.read_parquet(run_dir / "chronology.parquet")
    assert set(chronology["status"]) == {"ok"}
    assert set(chronology["feature_kind"]) == {"activation", "gradient"}
    gradient_rows = chronology[chronology["feature_kind"] == "gradient"]
    assert sorted(gradient_rows["step"].unique()) == sorted(chronology["step"].unique())
    tags = scalar_tags(run_dir)
    assert "brain/sim01/meg/gradient/temporal_score_backward_order" in tags
    assert "brain/sim01/fmri/gradient/spatial_score" in tags
