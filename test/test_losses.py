"""Tests for defvos_core.training.losses on small hand-made tensors."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from defvos_core.training import losses as L

torch.set_num_threads(1)


def _attention(batch, heads, queries, keys, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, queries, keys, generator=generator).softmax(-1)


# --------------------------------------------------------------------------- CKA

def test_cka_of_identical_matrices_is_one():
    x = torch.randn(50, 7, dtype=torch.float64)
    assert L.linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-9)


def test_cka_invariant_to_isotropic_scaling_and_orthogonal_transform():
    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randn(64, 5, dtype=torch.float64) + x[:, :5]
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    reference = L.linear_cka(x, y).item()
    assert 0.1 < reference < 0.99
    assert L.linear_cka(3.7 * x, y).item() == pytest.approx(reference, abs=1e-9)
    assert L.linear_cka(x @ q, y).item() == pytest.approx(reference, abs=1e-9)
    assert L.linear_cka(x, 0.01 * y).item() == pytest.approx(reference, abs=1e-9)


def test_cka_of_independent_random_matrices_is_small():
    torch.manual_seed(1)
    x = torch.randn(4000, 4)
    y = torch.randn(4000, 3)
    assert L.linear_cka(x, y).item() < 0.2


def test_cka_handles_different_widths_and_constant_input():
    torch.manual_seed(2)
    x = torch.randn(30, 3)
    y = torch.cat([x, torch.randn(30, 9)], dim=1)  # q = 12 != p = 3
    value = L.linear_cka(x, y).item()
    assert 0.0 < value < 1.0
    assert L.linear_cka(torch.ones(30, 3), y).item() == pytest.approx(0.0, abs=1e-6)


def test_cka_gradient_is_finite():
    torch.manual_seed(3)
    x = torch.randn(20, 4, requires_grad=True)
    y = torch.randn(20, 6)
    L.linear_cka(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    z = torch.randn(20, 4, requires_grad=True)
    L.linear_cka(z, z.detach()).backward()  # at the maximum CKA = 1
    assert torch.isfinite(z.grad).all()


def test_cka_batched_equals_per_item():
    torch.manual_seed(4)
    x = torch.randn(3, 40, 5)
    y = torch.randn(3, 40, 8)
    y[1] = x[1] @ torch.randn(5, 8)
    batched = L.linear_cka_batched(x, y)
    assert batched.shape == (3,)
    for item in range(3):
        assert batched[item].item() == pytest.approx(L.linear_cka(x[item], y[item]).item(),
                                                     abs=1e-6)


# --------------------------------------------------------------------------- attention

def test_pair_layers_uses_relative_depth():
    assert L.pair_layers(1, 3) == [(0, 2)]
    assert L.pair_layers(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert L.pair_layers(2, 3) == [(0, 1), (1, 2)]
    assert L.pair_layers(3, 1) == [(0, 0), (1, 0), (2, 0)]


def test_attention_cka_loss_zero_for_identical_positive_for_different():
    maps = [_attention(2, 1, 12, 10, seed) for seed in (0, 1)]
    same = L.attention_cka_loss(maps, [m.clone() for m in maps], (3, 4), (3, 4))
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    other = [_attention(2, 1, 12, 10, seed) for seed in (5, 6)]
    assert L.attention_cka_loss(maps, other, (3, 4), (3, 4)).item() > 0.05


def test_attention_cka_loss_pairs_single_student_layer_with_last_teacher_layer():
    student = [_attention(1, 1, 12, 10, 0)]
    teacher = [_attention(1, 1, 12, 10, 7), _attention(1, 1, 12, 10, 8), student[0].clone()]
    assert L.attention_cka_loss(student, teacher, (3, 4), (3, 4)).item() == \
        pytest.approx(0.0, abs=1e-5)
    teacher.reverse()  # the matching layer is now first, not paired
    assert L.attention_cka_loss(student, teacher, (3, 4), (3, 4)).item() > 0.05


def test_attention_cka_loss_handles_heads_keys_and_grids():
    student = [_attention(2, 1, 12, 10, 0)]  # 1 head, Nk = 10, grid 3x4
    # Teacher: 4 identical heads, Nk = 20 (the student's keys duplicated), grid 6x8 made of
    # nearest-neighbour copies of the student's rows: interpolation must undo the grid.
    rows = student[0][:, 0].transpose(1, 2).reshape(2, 10, 3, 4)
    rows = F.interpolate(rows, size=(6, 8), mode='nearest')
    teacher_rows = rows.flatten(2).transpose(1, 2)  # (2, 48, 10)
    teacher_rows = torch.cat([teacher_rows, teacher_rows], dim=-1) / 2
    teacher = [teacher_rows[:, None].expand(2, 4, 48, 20).contiguous()]
    loss = L.attention_cka_loss(student, teacher, (3, 4), (6, 8))
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    different = [_attention(2, 4, 48, 20, 9)]
    assert L.attention_cka_loss(student, different, (3, 4), (6, 8)).item() > 0.05
    with pytest.raises(ValueError, match='teacher_grid'):
        L.attention_cka_loss(student, different, (3, 4), (6, 7))


def test_attention_cka_loss_gradient_reaches_student():
    student = [_attention(2, 2, 12, 10, 0).requires_grad_()]
    teacher = [_attention(2, 1, 12, 6, 1)]
    L.attention_cka_loss(student, teacher, (3, 4), (3, 4)).backward()
    assert torch.isfinite(student[0].grad).all() and student[0].grad.abs().sum() > 0


# --------------------------------------------------------------------------- logit KL

def _logits(seed, shape=(2, 4, 3, 5)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('kl', [L.intra_object_kl, L.inter_object_kl])
def test_kl_zero_for_equal_positive_for_different(kl):
    logits = _logits(0)
    assert kl(logits, logits.clone(), [3, 2]).item() == pytest.approx(0.0, abs=1e-6)
    assert kl(logits, _logits(1), [3, 2]).item() > 0.01


def test_intra_kl_invariant_to_constant_per_channel():
    student, teacher = _logits(0), _logits(1)
    shift = torch.randn(2, 4, 1, 1) * 5
    base = L.intra_object_kl(student, teacher, [3, 3])
    shifted = L.intra_object_kl(student + shift, teacher - shift, [3, 3])
    assert shifted.item() == pytest.approx(base.item(), rel=1e-5)
    # A constant per pixel changes the spatial distributions: not invariant.
    pixel_shift = torch.randn(2, 1, 3, 5)
    assert abs(L.intra_object_kl(student + pixel_shift, teacher, [3, 3]).item()
               - base.item()) > 1e-3


def test_inter_kl_invariant_to_constant_per_pixel():
    student, teacher = _logits(0), _logits(1)
    shift = torch.randn(2, 1, 3, 5) * 5
    base = L.inter_object_kl(student, teacher, [3, 3])
    shifted = L.inter_object_kl(student + shift, teacher - shift, [3, 3])
    assert shifted.item() == pytest.approx(base.item(), rel=1e-5)


@pytest.mark.parametrize('kl', [L.intra_object_kl, L.inter_object_kl])
def test_kl_ignores_invalid_slots(kl):
    student, teacher = _logits(0), _logits(1)
    valid_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    base = kl(student, teacher, valid_mask)
    assert kl(student, teacher, torch.tensor([2, 1])).item() == pytest.approx(base.item())
    student2, teacher2 = student.clone(), teacher.clone()
    student2[0, 3] = 100.0
    teacher2[1, 2:] = torch.randn(2, 3, 5) * 10
    assert kl(student2, teacher2, valid_mask).item() == pytest.approx(base.item(), rel=1e-6)
    # Changing a valid slot does change the value (the check above can fail).
    student2[0, 2] += torch.randn(3, 5) * 3
    assert kl(student2, teacher2, valid_mask).item() != pytest.approx(base.item(), rel=1e-3)


def test_kl_gradient_finite_with_invalid_slots():
    student = _logits(0).requires_grad_()
    teacher = _logits(1).requires_grad_()
    total = L.inter_object_kl(student, teacher, [1, 2]) + \
        L.intra_object_kl(student, teacher, [1, 2])
    total.backward()
    assert torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()
    assert student.grad[0, 2:].abs().sum() == 0  # invalid slots get no gradient


def test_inter_kl_temperature_hand_computation():
    # One pixel, background + one object. tau = 2: teacher [2, 0] -> softmax([1, 0]).
    student = torch.zeros(1, 2, 1, 1)
    teacher = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    p1 = math.exp(1) / (math.exp(1) + 1)
    p = [p1, 1 - p1]
    expected = 4.0 * sum(pi * math.log(pi / 0.5) for pi in p)
    assert L.inter_object_kl(student, teacher, [1], temperature=2.0).item() == \
        pytest.approx(expected, rel=1e-6)
    expected_tau1 = sum(pi * math.log(pi / 0.5) for pi in
                        [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)])
    assert L.inter_object_kl(student, teacher, [1]).item() == pytest.approx(expected_tau1,
                                                                            rel=1e-6)


def test_intra_kl_temperature_hand_computation():
    # Object channel over two positions: teacher [3, 1], student [0, 0], tau = 2.
    student = torch.zeros(1, 2, 1, 2)
    teacher = torch.zeros(1, 2, 1, 2)
    teacher[0, 1, 0] = torch.tensor([3.0, 1.0])
    teacher[0, 0, 0] = torch.tensor([50.0, -50.0])  # background: excluded by default
    p1 = math.exp(1.5) / (math.exp(1.5) + math.exp(0.5))
    expected = 4.0 * sum(pi * math.log(pi / 0.5) for pi in [p1, 1 - p1])
    assert L.intra_object_kl(student, teacher, [1], temperature=2.0).item() == \
        pytest.approx(expected, rel=1e-6)
    with_background = L.intra_object_kl(student, teacher, [1], temperature=2.0,
                                        include_background=True)
    assert with_background.item() > expected


# --------------------------------------------------------------------------- supervised

def test_bootstrapped_ce_full_fraction_equals_cross_entropy():
    logits = _logits(0)
    labels = torch.randint(0, 4, (2, 3, 5), generator=torch.Generator().manual_seed(0))
    labels[0, 0, :3] = 255
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    assert L.bootstrapped_cross_entropy(logits, labels, top_k_fraction=1.0).item() == \
        pytest.approx(expected.item(), rel=1e-6)
    # warm-up not started: plain CE whatever the fraction
    assert L.bootstrapped_cross_entropy(logits, labels, 0.15, warmup_ratio=0.0).item() == \
        pytest.approx(expected.item(), rel=1e-6)


def test_bootstrapped_ce_top_quarter_by_hand():
    logits = _logits(3, shape=(1, 3, 2, 4))  # 8 pixels
    labels = torch.tensor([[[0, 1, 2, 0], [255, 255, 1, 2]]])  # 6 valid pixels
    log_probs = F.log_softmax(logits, dim=1)[0]
    pixel_losses = [-log_probs[labels[0, r, c], r, c].item()
                    for r in range(2) for c in range(4) if labels[0, r, c] != 255]
    hardest = sorted(pixel_losses, reverse=True)[:2]  # ceil(0.25 * 6) = 2
    assert L.bootstrapped_cross_entropy(logits, labels, top_k_fraction=0.25).item() == \
        pytest.approx(sum(hardest) / 2, rel=1e-6)
    # warm-up half-way: fraction 1 - 0.5 * 0.5 = 0.75 -> ceil(4.5) = 5 pixels
    hardest5 = sorted(pixel_losses, reverse=True)[:5]
    assert L.bootstrapped_cross_entropy(logits, labels, 0.5, warmup_ratio=0.5).item() == \
        pytest.approx(sum(hardest5) / 5, rel=1e-6)


def test_bootstrapped_ce_ignores_255_pixels():
    logits = _logits(4, shape=(1, 3, 2, 2))
    labels = torch.tensor([[[0, 1], [2, 255]]])
    base = L.bootstrapped_cross_entropy(logits, labels, 0.5)
    changed = logits.clone()
    changed[0, :, 1, 1] = torch.tensor([-30.0, 40.0, 7.0])
    assert L.bootstrapped_cross_entropy(changed, labels, 0.5).item() == \
        pytest.approx(base.item())
    assert L.soft_jaccard_loss(changed, labels).item() == \
        pytest.approx(L.soft_jaccard_loss(logits, labels).item())


def _confident_logits(labels, channels, confidence=30.0):
    return F.one_hot(labels, channels).permute(0, 3, 1, 2).float() * confidence


def test_soft_jaccard_confident_right_and_wrong():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1], [0, 0, 0, 0]]])
    right = _confident_logits(labels, 4)
    assert L.soft_jaccard_loss(right, labels, [2]).item() == pytest.approx(0.0, abs=1e-4)
    wrong = _confident_logits((labels + 1) % 3, 4)
    assert L.soft_jaccard_loss(wrong, labels, [2]).item() > 0.8


def test_supervised_terms_ignore_invalid_slots():
    labels = torch.tensor([[[0, 1], [1, 0]]])
    logits = _confident_logits(labels, 3)
    ce = L.bootstrapped_cross_entropy(logits, labels, 1.0, valid_slots=[1])
    jaccard = L.soft_jaccard_loss(logits, labels, [1])
    logits[0, 2] = 100.0  # invalid slot claims every pixel
    assert L.bootstrapped_cross_entropy(logits, labels, 1.0, valid_slots=[1]).item() == \
        pytest.approx(ce.item(), abs=1e-6)
    assert L.soft_jaccard_loss(logits, labels, [1]).item() == pytest.approx(jaccard.item())
    assert L.soft_jaccard_loss(logits, labels).item() > jaccard.item() + 0.3
    total = L.supervised_loss(logits, labels, [1], top_k_fraction=1.0)
    assert total.item() == pytest.approx(ce.item() + jaccard.item(), abs=1e-6)


# --------------------------------------------------------------------------- combined

def _outputs(seed, attention=True, grid=(3, 4), logit_size=(6, 8)):
    maps = [_attention(2, 1, grid[0] * grid[1], 10, seed)] if attention else None
    return SimpleNamespace(logits=_logits(seed, shape=(2, 4) + logit_size),
                           attention_maps=maps, query_grid=grid)


def test_distillation_loss_skips_zero_weight_terms():
    student = _outputs(0, attention=False)
    teacher = _outputs(1, attention=False)
    weights = L.DistillationWeights(attention=0.0, intra=0.5, inter=2.0)
    total, terms = L.distillation_loss(student, teacher, weights, valid_slots=[3, 2])
    assert set(terms) == {'intra', 'inter', 'total'}
    assert total.item() == pytest.approx(0.5 * terms['intra'] + 2.0 * terms['inter'],
                                         rel=1e-6)
    assert terms['total'] == pytest.approx(total.item())


def test_distillation_loss_total_is_weighted_sum_with_all_terms():
    student = _outputs(0)
    student.logits.requires_grad_()
    teacher = _outputs(1, grid=(6, 8), logit_size=(12, 16))  # bigger teacher everywhere
    teacher.attention_maps = [_attention(2, 2, 48, 14, 5), _attention(2, 2, 48, 14, 6)]
    labels = torch.randint(0, 3, (2, 6, 8), generator=torch.Generator().manual_seed(0))
    weights = L.DistillationWeights(attention=0.3, intra=0.7, inter=1.5, supervised=0.25,
                                    temperature=2.0)
    total, terms = L.distillation_loss(student, teacher, weights, labels=labels,
                                       valid_slots=[2, 3])
    assert set(terms) == {'attention', 'intra', 'inter', 'supervised', 'total'}
    expected = sum(getattr(weights, name) * terms[name]
                   for name in ('attention', 'intra', 'inter', 'supervised'))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert all(terms[name] > 0 for name in ('attention', 'intra', 'inter', 'supervised'))
    total.backward()
    assert torch.isfinite(student.logits.grad).all()
    assert teacher.logits.grad is None


def test_distillation_loss_supervised_needs_labels():
    student, teacher = _outputs(0), _outputs(1)
    weights = L.DistillationWeights(attention=0.0, intra=0.0, inter=0.0, supervised=1.0)
    total, terms = L.distillation_loss(student, teacher, weights)
    assert set(terms) == {'total'} and total.item() == 0.0
    labels = torch.zeros(2, 6, 8, dtype=torch.long)
    total, terms = L.distillation_loss(student, teacher, weights, labels=labels)
    assert set(terms) == {'supervised', 'total'} and total.item() > 0


def test_distillation_loss_supervised_term_is_the_teacher_stage_loss():
    """Same mining warm-up as a student trained without a teacher: the ablation is fair."""
    student, teacher = _outputs(0), _outputs(1)
    labels = torch.randint(0, 3, (2, 6, 8), generator=torch.Generator().manual_seed(2))
    weights = L.DistillationWeights(attention=0.0, intra=0.0, inter=0.0, supervised=1.0)
    for ratio in (0.0, 0.4, 1.0):
        total, _ = L.distillation_loss(student, teacher, weights, labels=labels,
                                       valid_slots=[3, 3], top_k_fraction=0.15,
                                       warmup_ratio=ratio)
        expected = L.supervised_loss(student.logits, labels, [3, 3], 0.15, ratio)
        assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = L.distillation_loss(student, teacher, weights, labels=labels, warmup_ratio=0.0)[0]
    mined = L.distillation_loss(student, teacher, weights, labels=labels, warmup_ratio=1.0)[0]
    assert mined.item() > plain.item()  # the hardest 15 % of pixels cost more than the mean
