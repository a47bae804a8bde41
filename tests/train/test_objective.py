"""The masked-diffusion objective's pieces."""

import math

import pytest
import torch

from lavida_train import objective as obj


def test_time_policies():
    torch.manual_seed(0)
    u = obj.sample_times(20000, "uniform")
    c = obj.sample_times(20000, "cosine")
    ln = obj.sample_times(20000, "logit_normal", mean=1.0, std=0.5)
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(c.mean() - 2 / math.pi) < 0.01  # E[cos(pi u / 2)] = 2 / pi
    assert abs(torch.logit(ln).mean() - 1.0) < 0.02 and abs(torch.logit(ln).std() - 0.5) < 0.02
    assert ((u > 0) & (u < 1)).all() and ((c >= 0) & (c <= 1)).all()
    with pytest.raises(ValueError):
        obj.sample_times(3, "linear")


def test_text_masking_touches_only_answers_and_at_least_one():
    torch.manual_seed(1)
    ids = torch.arange(40).view(4, 10)
    labels = torch.full((4, 10), -100)
    labels[:, 6:] = 7  # answers at 6..9
    labels[3] = -100  # a row with no answer
    masked_ids, masked = obj.mask_text(ids, labels, torch.tensor([0.0, 0.5, 1.0, 0.9]), mask_id=999)
    assert not masked[:, :6].any() and not masked[3].any()
    assert masked[0].sum() >= 1  # t = 0 still masks one
    assert masked[2, 6:].all()  # t = 1 masks every answer token
    assert (masked_ids[masked] == 999).all() and (masked_ids[~masked] == ids[~masked]).all()


def test_mask_rate_follows_t():
    torch.manual_seed(2)
    labels = torch.zeros(2000, 50, dtype=torch.long)
    t = torch.full((2000,), 0.3)
    _, masked = obj.mask_text(labels.clone(), labels, t, 5)
    assert abs(masked.float().mean() - ((1 - 1e-3) * 0.3 + 1e-3)) < 0.01


def test_plan_samples_kept_unmasked():
    labels = torch.zeros(2, 6, dtype=torch.long)
    _, masked = obj.mask_text(labels.clone(), labels, torch.ones(2), 5, keep=torch.tensor([True, False]))
    assert not masked[0].any() and masked[1].all()


def test_image_masking_per_image():
    torch.manual_seed(3)
    ids = torch.randint(0, 64, (3, 4, 4))
    masked_ids, masked = obj.mask_image(ids, torch.tensor([0.0, 1.0, 0.5]), 65)
    assert masked[0].sum() == 1 and masked[1].all()
    assert (masked_ids[masked] == 65).all()


def test_prompt_drop_covers_non_answer_non_image_positions():
    torch.manual_seed(4)
    labels = torch.tensor([[-100, -100, -100, 3, 4]] * 2)
    gen = torch.tensor([[False, False, True, False, False]] * 2)
    enc = torch.tensor([[False, True, False, False, False]] * 2)
    always = obj.prompt_drop(labels, gen, enc, 1.0)
    assert always.tolist() == [[True, False, False, False, False]] * 2
    assert not obj.prompt_drop(labels, gen, enc, 0.0).any()


def test_losses_average_over_masked_positions():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 10.0
    labels = torch.tensor([[2, 1, -100]])
    masked = torch.tensor([[True, False, False]])
    assert obj.text_loss(logits, labels, masked) < 1e-3
    masked = torch.tensor([[True, True, False]])
    expected = (torch.nn.functional.cross_entropy(logits[0, :2], labels[0, :2])).item()
    assert abs(obj.text_loss(logits, labels, masked).item() - expected) < 1e-6
    assert obj.text_loss(logits, labels, torch.zeros_like(masked)).item() == 0.0


def test_image_loss_weights_are_renormalised_per_image():
    torch.manual_seed(5)
    logits = torch.randn(2, 2, 2, 8)
    ids = torch.randint(0, 8, (2, 2, 2))
    masked = torch.ones(2, 2, 2, dtype=torch.bool)
    plain = obj.image_loss(logits, ids, masked)
    uniform = obj.image_loss(logits, ids, masked, torch.full((2, 2, 2), 3.0))
    assert torch.allclose(plain, uniform)  # a constant weight changes nothing after renormalising
    w = torch.ones(2, 2, 2)
    w[0, 0, 0] = 5.0
    weighted = obj.image_loss(logits, ids, masked, w)
    assert not torch.allclose(weighted, plain)
