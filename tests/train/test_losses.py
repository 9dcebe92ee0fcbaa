"""Known-answer tests for the DINOv3 losses and Sinkhorn-Knopp targets."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from brainalign.train.losses import (
    DINOLoss,
    GramAnchoringLoss,
    IBOTPatchLoss,
    KoLeoLoss,
    masked_patch_indices_and_weights,
    sinkhorn_knopp,
)

# ---------------------------------------------------------------- trusted loop references


def reference_sinkhorn(logits: torch.Tensor, temperature: float, n_iterations: int = 3):
    """RECIPE.md's Sinkhorn-Knopp, written literally with Python loops in float64."""
    q = torch.exp(logits.double() / temperature)  # (N, K)
    n_samples, n_prototypes = q.shape
    q = q / q.sum()
    for _ in range(n_iterations):
        for k in range(n_prototypes):
            q[:, k] = q[:, k] / q[:, k].sum() / n_prototypes
        for i in range(n_samples):
            q[i, :] = q[i, :] / q[i, :].sum() / n_samples
    return (q * n_samples).float()


def cross_entropy(teacher_probs: torch.Tensor, student_logits: torch.Tensor, temp: float):
    """-sum_k p_k log softmax(s / temp)_k for one pair of (K,) vectors."""
    return -(teacher_probs * torch.log_softmax(student_logits / temp, dim=-1)).sum()


def reference_dino(student_global, student_local, teacher_probs, temp=0.1):
    """Double loop over crop pairs and images, parts weighted as in RECIPE.md."""
    n_global, batch, _ = student_global.shape
    global_terms = [
        cross_entropy(teacher_probs[t, b], student_global[s, b], temp)
        for s in range(n_global)
        for t in range(n_global)
        if s != t
        for b in range(batch)
    ]
    global_mean = torch.stack(global_terms).mean()
    n_local = 0 if student_local is None else student_local.shape[0]
    if n_local == 0:
        return global_mean
    local_terms = [
        cross_entropy(teacher_probs[t, b], student_local[l_crop, b], temp)
        for l_crop in range(n_local)
        for t in range(n_global)
        for b in range(batch)
    ]
    local_mean = torch.stack(local_terms).mean()
    return global_mean * 2 / (2 + 2 * n_local) + local_mean * 2 * n_local / (2 + 2 * n_local)


# ---------------------------------------------------------------- Sinkhorn


def test_sinkhorn_matches_loop_reference_and_is_doubly_normalised():
    torch.manual_seed(0)
    logits = torch.randn(7, 5)  # unequal N and K so a transposed axis fails
    probs = sinkhorn_knopp(logits, temperature=0.5)
    assert probs.shape == (7, 5) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, reference_sinkhorn(logits, 0.5), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(7))
    # After 3 rounds the columns are balanced to within 10 % of N / K (a plain softmax is not).
    balanced = torch.full((5,), 7 / 5)
    torch.testing.assert_close(probs.sum(dim=0), balanced, rtol=0.1, atol=0)
    plain_softmax = torch.softmax(logits / 0.5, dim=1)
    assert (plain_softmax.sum(dim=0) - balanced).abs().max() > 0.3


def test_sinkhorn_many_iterations_converge_to_exact_column_balance():
    torch.manual_seed(1)
    logits = torch.randn(9, 4)
    probs = sinkhorn_knopp(logits, temperature=1.0, n_iterations=60)
    torch.testing.assert_close(probs.sum(dim=0), torch.full((4,), 9 / 4), rtol=1e-4, atol=0)
    torch.testing.assert_close(probs, reference_sinkhorn(logits, 1.0, 60), rtol=1e-4, atol=1e-6)


def test_sinkhorn_iteration_count_matters():
    torch.manual_seed(2)
    logits = 3 * torch.randn(6, 5)
    one = sinkhorn_knopp(logits, 0.3, n_iterations=1)
    torch.testing.assert_close(one, reference_sinkhorn(logits, 0.3, 1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(one, sinkhorn_knopp(logits, 0.3, n_iterations=3), atol=1e-4)


def test_sinkhorn_large_logits_stay_finite_where_naive_overflows():
    torch.manual_seed(3)
    logits = 4 * torch.randn(8, 6)
    naive = torch.exp(logits / 0.04)
    assert not torch.isfinite(naive).all()  # the literal recipe overflows in float32
    probs = sinkhorn_knopp(logits, temperature=0.04)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(8))
    # Float64 has the range for this case (exponents up to ~300): same answer.
    torch.testing.assert_close(probs, reference_sinkhorn(logits, 0.04), rtol=1e-4, atol=1e-5)


def test_sinkhorn_bf16_input_gives_float32_without_grad():
    logits = torch.randn(4, 3, requires_grad=True)
    probs = sinkhorn_knopp(logits.bfloat16(), 0.1)
    assert probs.dtype == torch.float32 and not probs.requires_grad


@pytest.mark.parametrize(
    ("logits", "kwargs", "message"),
    [
        (torch.zeros(2, 3, 4), {"temperature": 0.1}, "2-D"),
        (torch.zeros(3, 4), {"temperature": 0.0}, "temperature"),
        (torch.zeros(3, 4), {"temperature": 0.1, "n_iterations": 0}, "n_iterations"),
        (torch.zeros(3, 4, dtype=torch.long), {"temperature": 0.1}, "float"),
    ],
)
def test_sinkhorn_rejects_bad_input(logits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sinkhorn_knopp(logits, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sinkhorn_worker(rank: int, world_size: int, port: int, cases: list, out_dir: str) -> None:
    """Run every case on this rank's rows and save the results for the parent."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        results = []
        for logits, split, temperature in cases:
            start = sum(split[:rank])
            local = logits[start : start + split[rank]]
            results.append(
                (
                    sinkhorn_knopp(local, temperature),
                    sinkhorn_knopp(local, temperature, reduce=False),
                )
            )
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sinkhorn_two_process_gloo_equals_single_process_on_concatenation(tmp_path):
    torch.manual_seed(4)
    # (all rows, rows per rank, temperature): even split (DINO), uneven and empty (iBOT).
    cases = [
        (torch.randn(10, 6), [5, 5], 0.2),
        (3 * torch.randn(11, 6), [3, 8], 0.07),
        (torch.randn(7, 6), [0, 7], 0.5),
    ]
    world_size = 2
    mp.spawn(
        _sinkhorn_worker,
        args=(world_size, _free_port(), cases, str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    per_rank = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world_size)]
    for case_index, (logits, split, temperature) in enumerate(cases):
        expected = sinkhorn_knopp(logits, temperature)
        gathered = torch.cat([per_rank[rank][case_index][0] for rank in range(world_size)])
        torch.testing.assert_close(gathered, expected, rtol=1e-5, atol=1e-6)
        # Without the reduction each rank normalises its own rows only: different targets.
        start = 0
        for rank in range(world_size):
            rows = logits[start : start + split[rank]]
            local_only = per_rank[rank][case_index][1]
            torch.testing.assert_close(local_only, sinkhorn_knopp(rows, temperature))
            start += split[rank]
    split_gathered = torch.cat([per_rank[rank][0][1] for rank in range(world_size)])
    assert not torch.allclose(split_gathered, sinkhorn_knopp(cases[0][0], 0.2), atol=1e-4)


# ---------------------------------------------------------------- DINO


@pytest.mark.parametrize("n_local", [0, 1, 3])
def test_dino_loss_equals_double_loop(n_local):
    torch.manual_seed(5)
    batch, n_prototypes = 4, 7
    student_global = torch.randn(2, batch, n_prototypes)
    student_local = torch.randn(n_local, batch, n_prototypes) if n_local else None
    teacher_probs = torch.softmax(torch.randn(2, batch, n_prototypes) / 0.3, dim=-1)
    loss = DINOLoss()(student_global, student_local, teacher_probs, student_temp=0.1)
    expected = reference_dino(student_global, student_local, teacher_probs, temp=0.1)
    torch.testing.assert_close(loss, expected)


def test_dino_loss_ignores_same_crop_pairs():
    """Student crop s must never be compared with teacher crop s."""
    torch.manual_seed(6)
    student_global = torch.randn(2, 3, 5)
    teacher_probs = torch.softmax(torch.randn(2, 3, 5), dim=-1)
    loss = DINOLoss()(student_global, None, teacher_probs)
    swapped_teacher = teacher_probs.flip(0)
    swapped_loss = DINOLoss()(student_global, None, swapped_teacher)
    # Only cross pairs count, so the loss with crop t aligned to student s equals the
    # diagonal-only loss of the swapped teacher.
    diagonal_only = torch.stack(
        [
            cross_entropy(swapped_teacher[c, b], student_global[c, b], 0.1)
            for c in range(2)
            for b in range(3)
        ]
    ).mean()
    torch.testing.assert_close(loss, diagonal_only)
    assert not torch.isclose(loss, swapped_loss)


def test_dino_loss_minimal_when_student_matches_teacher():
    torch.manual_seed(7)
    batch, n_prototypes, temp = 3, 6, 0.1
    shared_logits = torch.randn(batch, n_prototypes)
    teacher_probs = torch.softmax(shared_logits / temp, dim=-1).expand(2, -1, -1)
    student_global = shared_logits.expand(2, -1, -1).clone().requires_grad_(True)
    student_local = shared_logits.expand(2, -1, -1).clone().requires_grad_(True)
    loss = DINOLoss()(student_global, student_local, teacher_probs, student_temp=temp)
    entropy = -(teacher_probs[0] * teacher_probs[0].log()).sum(dim=-1).mean()
    torch.testing.assert_close(loss, entropy)  # cross-entropy minimum is the entropy
    loss.backward()
    assert student_global.grad.abs().max() < 1e-6 and student_local.grad.abs().max() < 1e-6
    perturbed = DINOLoss()(
        student_global.detach() + 0.5 * torch.randn(2, batch, n_prototypes),
        student_local.detach(),
        teacher_probs,
        student_temp=temp,
    )
    assert perturbed > loss


def test_dino_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="teacher_probs"):
        DINOLoss()(torch.zeros(2, 3, 4), None, torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="student_local_logits"):
        DINOLoss()(torch.zeros(2, 3, 4), torch.zeros(8, 2, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="no crop pairs"):
        DINOLoss()(torch.zeros(1, 3, 4), None, torch.zeros(1, 3, 4))


# ---------------------------------------------------------------- iBOT


def _ibot_setup():
    torch.manual_seed(8)
    n_images, n_patches, n_prototypes = 4, 6, 5
    masks = torch.tensor(
        [
            [1, 0, 0, 1, 1, 0],  # 3 masked
            [0, 0, 0, 0, 0, 0],  # unmasked image: still counts in the denominator
            [0, 1, 0, 0, 0, 0],  # 1 masked
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    student = torch.randn(n_images, n_patches, n_prototypes)
    teacher = torch.softmax(torch.randn(n_images, n_patches, n_prototypes), dim=-1)
    return masks, student, teacher


def test_masked_patch_indices_and_weights():
    masks, _, _ = _ibot_setup()
    indices, weights = masked_patch_indices_and_weights(masks)
    torch.testing.assert_close(indices, torch.tensor([0, 3, 4, 13]))
    torch.testing.assert_close(weights, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0]))
    with pytest.raises(ValueError, match="bool"):
        masked_patch_indices_and_weights(masks.long())


def test_ibot_loss_known_answer_with_per_image_weighting():
    masks, student, teacher = _ibot_setup()
    indices, weights = masked_patch_indices_and_weights(masks)
    loss = IBOTPatchLoss()(
        student.flatten(0, 1)[indices], teacher.flatten(0, 1)[indices], weights, n_images=4
    )
    image0 = torch.stack([cross_entropy(teacher[0, p], student[0, p], 0.1) for p in (0, 3, 4)])
    image2 = cross_entropy(teacher[2, 1], student[2, 1], 0.1)
    expected = (image0.mean() + image2) / 4  # each masked image weighs 1, divided by 4 images
    torch.testing.assert_close(loss, expected)


def test_ibot_loss_ignores_unmasked_patches():
    masks, student, teacher = _ibot_setup()
    indices, weights = masked_patch_indices_and_weights(masks)

    def loss_of(student_all: torch.Tensor) -> torch.Tensor:
        return IBOTPatchLoss()(
            student_all.flatten(0, 1)[indices], teacher.flatten(0, 1)[indices], weights, 4
        )

    student = student.clone().requires_grad_(True)
    loss = loss_of(student)
    loss.backward()
    assert (student.grad[~masks] == 0).all()
    assert (student.grad[masks].abs().sum(dim=-1) > 0).all()
    changed = student.detach().clone()
    changed[~masks] = 100 * torch.randn(int((~masks).sum()), student.shape[-1])
    torch.testing.assert_close(loss_of(changed), loss.detach())
    changed[0, 0, 0] += 1.0  # a masked patch: must change the loss
    assert not torch.isclose(loss_of(changed), loss.detach())


def test_ibot_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="mask_weights"):
        IBOTPatchLoss()(torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(2), n_images=2)
    with pytest.raises(ValueError, match="n_images"):
        IBOTPatchLoss()(torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(3), n_images=0)


# ---------------------------------------------------------------- KoLeo


def reference_koleo(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    unit = features / features.norm(dim=1, keepdim=True)
    terms = []
    for i in range(unit.shape[0]):
        distances = [(unit[i] - unit[j]).norm() for j in range(unit.shape[0]) if j != i]
        terms.append(-torch.log(min(distances) + eps))
    return torch.stack(terms).mean()


def test_koleo_equals_loop_reference():
    torch.manual_seed(9)
    features = torch.randn(6, 5)
    torch.testing.assert_close(KoLeoLoss()(features), reference_koleo(features))


def test_koleo_falls_as_points_spread():
    angles_close = torch.linspace(0, 0.3, 8)
    angles_spread = torch.linspace(0, 2 * math.pi, 9)[:-1]
    close = torch.stack([angles_close.cos(), angles_close.sin()], dim=1)
    spread = torch.stack([angles_spread.cos(), angles_spread.sin()], dim=1)
    loss_close, loss_spread = KoLeoLoss()(close), KoLeoLoss()(spread)
    assert loss_spread < loss_close
    # Evenly spaced on the circle: every nearest distance is the chord 2 sin(pi / 8).
    torch.testing.assert_close(loss_spread, torch.tensor(-math.log(2 * math.sin(math.pi / 8))))


def test_koleo_is_finite_for_duplicate_points_and_zero_vectors():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], requires_grad=True)
    loss = KoLeoLoss(eps=1e-8)(features)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(features.grad).all()
    duplicate_term = -math.log(2e-8)
    assert loss > duplicate_term / 4  # the duplicates dominate, but stay finite


def test_koleo_rejects_single_sample():
    with pytest.raises(ValueError, match="batch >= 2"):
        KoLeoLoss()(torch.randn(1, 4))


# ---------------------------------------------------------------- Gram anchoring


def reference_gram(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    batch, n_patches, _ = student.shape
    total = 0.0
    for b in range(batch):
        for i in range(n_patches):
            for j in range(n_patches):
                s = torch.nn.functional.cosine_similarity(student[b, i], student[b, j], dim=0)
                t = torch.nn.functional.cosine_similarity(teacher[b, i], teacher[b, j], dim=0)
                total = total + (s - t) ** 2
    return total / (batch * n_patches * n_patches)


def test_gram_loss_zero_for_identical_and_scale_invariant():
    torch.manual_seed(10)
    patches = torch.randn(3, 5, 4)
    assert GramAnchoringLoss()(patches, patches) == 0
    torch.testing.assert_close(
        GramAnchoringLoss()(patches, 3.0 * patches), torch.tensor(0.0), atol=1e-7, rtol=0
    )


def test_gram_loss_equals_loop_and_only_student_gets_gradient():
    torch.manual_seed(11)
    student = torch.randn(2, 5, 3, requires_grad=True)  # (B, N, D) unequal sizes
    teacher = torch.randn(2, 5, 3, requires_grad=True)
    loss = GramAnchoringLoss()(student, teacher)
    torch.testing.assert_close(loss, reference_gram(student.detach(), teacher.detach()))
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_gram_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        GramAnchoringLoss()(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3))
