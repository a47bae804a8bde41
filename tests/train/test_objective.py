"""The masked-diffusion objective's pieces (upstream's rules; the whole loss against upstream's own
numbers is in test_upstream_model.py)."""

import math

import pytest
import torch

from lavida_train import objective as obj


def test_time_policies():
    g = torch.Generator().manual_seed(0)
    u = obj.sample_times(20000, "uniform", generator=g)
    c = obj.sample_times(20000, "cosine", generator=g)
    ln = obj.sample_times(20000, "logit_normal", mean=1.0, std=0.5, generator=g)
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(c.mean() - 2 / math.pi) < 0.01  # E[cos(pi u / 2)] = 2 / pi
    assert abs(torch.logit(ln).mean() - 1.0) < 0.02 and abs(torch.logit(ln).std() - 0.5) < 0.02
    assert ((u >= 0) & (u < 1)).all() and ((c >= 0) & (c <= 1)).all()
    with pytest.raises(ValueError):
        obj.sample_times(3, "linear")


def test_threshold_mask_is_upstreams_forward_process():
    """Masked where u <= max(p, min(u of the row)), p = (1 - eps) t + eps."""
    u = torch.tensor([[0.30, 0.10, 0.70, 0.50], [0.90, 0.80, 0.95, 0.99], [0.2, 0.4, 0.6, 0.8]])
    t = torch.tensor([0.5, 0.0, 1.0])
    m = obj.threshold_mask(u, t)
    p = (1 - 1e-3) * 0.5 + 1e-3
    assert m[0].tolist() == [x <= p for x in u[0].tolist()]
    assert m[1].tolist() == [False, True, False, False]  # t = 0: only the row's smallest u
    assert m[2].all()  # t = 1: everything
    eligible = torch.tensor([[True] * 4, [True, False, True, True], [False] * 4])
    m = obj.threshold_mask(u, t, eligible)
    assert not m[1].any() and not m[2].any()  # the forced position may be ineligible: no target


def test_text_masking_touches_only_answers():
    g = torch.Generator().manual_seed(1)
    ids = torch.arange(40).view(4, 10)
    labels = torch.full((4, 10), -100)
    labels[:, 6:] = 7  # answers at 6..9
    labels[3] = -100  # a row with no answer
    labels[2, 9] = 5  # the infill token: never masked
    u = torch.rand(4, 10, generator=g)
    masked_ids, masked = obj.mask_text(ids, labels, torch.tensor([0.0, 0.5, 1.0, 0.9]), u, mask_id=999,
                                       infill_id=5)
    assert not masked[:, :6].any() and not masked[3].any()
    assert masked[2, 6:9].all() and not masked[2, 9]  # t = 1 masks every answer token but the infill
    assert int(masked[0].sum()) <= 1  # t = 0: at most the row's smallest u, if it is an answer
    assert (masked_ids[masked] == 999).all() and (masked_ids[~masked] == ids[~masked]).all()


def test_mask_rate_follows_t():
    g = torch.Generator().manual_seed(2)
    labels = torch.zeros(2000, 50, dtype=torch.long)
    t = torch.full((2000,), 0.3)
    _, masked = obj.mask_text(labels.clone(), labels, t, torch.rand(2000, 50, generator=g), 5)
    assert abs(masked.float().mean() - ((1 - 1e-3) * 0.3 + 1e-3)) < 0.01


def test_plan_samples_kept_unmasked():
    labels = torch.zeros(2, 6, dtype=torch.long)
    _, masked = obj.mask_text(labels.clone(), labels, torch.ones(2), torch.rand(2, 6), 5,
                              keep=torch.tensor([True, False]))
    assert not masked[0].any() and masked[1].all()


def test_image_masking_per_image():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 64, (3, 4, 4), generator=g)
    u = torch.rand(3, 16, generator=g)
    masked_ids, masked = obj.mask_image(ids, torch.tensor([0.0, 1.0, 0.5]), u, 65)
    assert masked[0].sum() == 1 and masked[0].flatten()[u[0].argmin()]  # t = 0: the smallest u
    assert masked[1].all() and (masked_ids[masked] == 65).all()


def test_padding_is_a_target():
    ids = torch.tensor([[1, 2, 9, 9]])
    labels = torch.tensor([[-100, 2, -100, -100]])
    assert obj.revert_padding_labels(ids, labels, 9).tolist() == [[-100, 2, 9, 9]]
    assert obj.revert_padding_labels(ids, labels, None) is labels


def test_drop_positions():
    labels = torch.tensor([[-100, -100, -100, -100, 3, 4]] * 2)
    gen = torch.tensor([[False, False, False, True, False, False]] * 2)
    enc = torch.tensor([[False, True, True, False, False, False]] * 2)
    prompt = torch.tensor([True, False])
    assert obj.drop_positions(labels, gen, enc, prompt, None).tolist() == [
        [True, False, False, False, False, False], [False] * 6]
    both = obj.drop_positions(labels, gen, enc, prompt, torch.tensor([False, True]))
    assert both.tolist() == [[True, False, False, False, False, False], [False, True, True, False, False, False]]


def test_draws_are_seeded_and_coerced():
    a = obj.MaskDraws.draw(2, 5, 3, 16, "cosine", generator=torch.Generator().manual_seed(9))
    b = obj.MaskDraws.draw(2, 5, 3, 16, "cosine", generator=torch.Generator().manual_seed(9))
    assert a.u_text.shape == (2, 5) and a.u_img.shape == (3, 16) and a.t_img.shape == (3,)
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("t_text", "u_text", "u_img"))
    c = obj.MaskDraws.coerce({k: getattr(a, k).tolist() for k in ("t_text", "u_text", "u_prompt", "u_enc", "u_keep",
                                                                   "t_img", "u_img")})
    assert torch.equal(c.u_img, a.u_img)


def test_losses_average_over_masked_positions():
    logits = torch.zeros(3, 4)
    logits[0, 2] = 10.0
    targets = torch.tensor([2, 1, 3])
    assert obj.text_loss(logits[:1], targets[:1]) < 1e-3
    expected = torch.nn.functional.cross_entropy(logits, targets).item()
    assert abs(obj.text_loss(logits, targets).item() - expected) < 1e-6
    assert obj.text_loss(logits[:0], targets[:0]).item() == 0.0


def test_image_loss_weights_are_renormalised_per_image():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 2, 2, 8, generator=g)
    ids = torch.randint(0, 8, (2, 2, 2), generator=g)
    masked = torch.ones(2, 2, 2, dtype=torch.bool)
    plain = obj.image_loss(logits, ids, masked)
    uniform = obj.image_loss(logits, ids, masked, torch.full((2, 2, 2), 3.0))
    assert torch.allclose(plain, uniform)  # a constant weight changes nothing after renormalising
    w = torch.ones(2, 2, 2)
    w[0, 0, 0] = 5.0
    weighted = obj.image_loss(logits, ids, masked, w)
    assert not torch.allclose(weighted, plain)
