"""Tversky loss: equals nnU-Net's Dice at alpha = beta = 0.5, weighs FN by beta; CE combination."""

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from nnunet_transfer.brainunet.losses import MemoryEfficientTverskyLoss, TverskyAndCELoss, use_tversky


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("do_bg", [True, False])
def test_equals_dice_at_half_half(batch_dice, do_bg):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, 6)
    target = torch.randint(0, 4, (2, 1, 6, 6, 6))
    kwargs = dict(apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice, do_bg=do_bg, smooth=1e-5, ddp=False)
    dice = MemoryEfficientSoftDiceLoss(**kwargs)(logits, target)
    tversky = MemoryEfficientTverskyLoss(alpha=0.5, beta=0.5, **kwargs)(logits, target)
    torch.testing.assert_close(tversky, dice)


def _binary_case(pred_fg: np.ndarray, gt_fg: np.ndarray):
    probs = torch.tensor(np.stack([1 - pred_fg, pred_fg])[None], dtype=torch.float32)
    return probs, torch.tensor(gt_fg[None, None], dtype=torch.float32)


def test_penalises_false_negatives_more_when_beta_exceeds_alpha():
    gt = np.zeros((4, 4, 4)); gt[:2] = 1                    # 32 foreground voxels
    under = gt.copy(); under[1] = 0                         # misses 16 voxels: FN
    over = gt.copy(); over[2] = 1                           # adds 16 voxels: FP
    loss = MemoryEfficientTverskyLoss(do_bg=False, smooth=0, ddp=False, alpha=0.3, beta=0.7)
    fn_loss = float(loss(*_binary_case(under, gt)))
    fp_loss = float(loss(*_binary_case(over, gt)))
    assert fn_loss > fp_loss
    # swapping the weights swaps the preference
    mirrored = MemoryEfficientTverskyLoss(do_bg=False, smooth=0, ddp=False, alpha=0.7, beta=0.3)
    assert float(mirrored(*_binary_case(under, gt))) < float(mirrored(*_binary_case(over, gt)))
    # exact values: TI = TP / (TP + a FP + b FN)
    assert fn_loss == pytest.approx(-16 / (16 + 0.7 * 16))
    assert fp_loss == pytest.approx(-32 / (32 + 0.3 * 16))


def test_perfect_prediction_gives_minus_one_and_gradients_flow():
    gt = torch.randint(0, 3, (1, 1, 5, 5, 5))
    logits = (torch.nn.functional.one_hot(gt[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 20).requires_grad_()
    loss = MemoryEfficientTverskyLoss(apply_nonlin=softmax_helper_dim1, do_bg=False, ddp=False)(logits, gt)
    assert float(loss.detach()) == pytest.approx(-1, abs=1e-4)
    noisy = torch.randn(1, 3, 5, 5, 5, requires_grad=True)
    MemoryEfficientTverskyLoss(apply_nonlin=softmax_helper_dim1, ddp=False)(noisy, gt).backward()
    assert float(noisy.grad.abs().sum()) > 0


def test_tversky_and_ce_is_ce_plus_tversky_with_ignore_label():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4))
    target[0, 0, 0] = 3  # ignore label
    tk = {"batch_dice": True, "do_bg": False, "smooth": 1e-5, "ddp": False}
    combined = TverskyAndCELoss(dict(tk), {}, ignore_label=3)(logits, target)
    mask = target != 3
    tversky = MemoryEfficientTverskyLoss(apply_nonlin=softmax_helper_dim1, **tk)(logits, torch.where(mask, target, 0),
                                                                                 loss_mask=mask)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0].long(), ignore_index=3)
    torch.testing.assert_close(combined, tversky + ce)


def test_use_tversky_swaps_dice_inside_nnunet_losses():
    dice_kwargs = {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}
    wrapped = DeepSupervisionWrapper(DC_and_CE_loss(dict(dice_kwargs), {}, dice_class=MemoryEfficientSoftDiceLoss),
                                     [0.6, 0.4])
    use_tversky(wrapped, 0.2, 0.8)
    dc = wrapped.loss.dc
    assert isinstance(dc, MemoryEfficientTverskyLoss)
    assert (dc.alpha, dc.beta, dc.batch_dice, dc.do_bg, dc.smooth) == (0.2, 0.8, True, False, 1e-5)
    regions = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False},
                              dice_class=MemoryEfficientSoftDiceLoss)
    assert use_tversky(regions).dc.apply_nonlin is torch.sigmoid
    with pytest.raises(TypeError, match="DC_and_CE_loss"):
        use_tversky(torch.nn.MSELoss())


def test_invalid_weights_rejected():
    with pytest.raises(ValueError, match="alpha"):
        MemoryEfficientTverskyLoss(alpha=-0.1, beta=0.5)
