"""Unit tests of the trainer building blocks (no nnU-Net training runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from torch import nn

from nnunet_transfer.domains import domain_of, read_domains, target_domain_of
from nnunet_transfer.training.domain_head import DomainClassifier
from nnunet_transfer.training.freezing import freeze_parameters, part_parameter_names, unwrap
from nnunet_transfer.training.grl import GradientReversal, ganin_lambda, grad_reverse
from nnunet_transfer.training.lr_schedule import PolyWarmupLR, poly_warmup_factor
from nnunet_transfer.training.mixins import host_values, pretrained_weights_from_argv
from nnunet_transfer.training.sampling import DomainBalancedDataLoader, batch_domain_counts


def tiny_unet(deep_supervision: bool = False) -> PlainConvUNet:
    return PlainConvUNet(2, 3, (4, 8, 16), nn.Conv3d, 3, (1, 2, 2), (1, 1, 1), 3, (1, 1), True,
                         nn.InstanceNorm3d, {"affine": True}, nonlin=nn.LeakyReLU, deep_supervision=deep_supervision)


@pytest.mark.parametrize("lambd", [0.0, 0.3, 1.0, 2.5])
def test_grl_reverses_and_scales_gradients_and_keeps_forward(lambd):
    x = torch.randn(4, 3, requires_grad=True)
    weights = torch.randn(4, 3)
    y = grad_reverse(x, lambd)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    assert torch.allclose(x.grad, -lambd * weights)


def test_grl_module_uses_its_attribute():
    layer = GradientReversal(0.5)
    x = torch.ones(2, requires_grad=True)
    layer.lambd = 2.0
    layer(x).sum().backward()
    assert x.grad.tolist() == [-2.0, -2.0]


def test_ganin_lambda_schedule():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(0.5) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert ganin_lambda(1.0) == pytest.approx(1.0, abs=1e-4)
    values = [ganin_lambda(p) for p in np.linspace(0, 1, 11)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert ganin_lambda(2.0) == ganin_lambda(1.0) and ganin_lambda(-1.0) == 0.0


def test_domain_head_learns_separable_domains_and_receives_gradients():
    torch.manual_seed(0)
    head = DomainClassifier([8], n_domains=2, hidden=16, dropout=0.0)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    labels = torch.tensor([0, 1] * 8)
    features = [torch.randn(16, 8, 2, 2, 2) + labels.view(-1, 1, 1, 1, 1) * 2.0]
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = head.loss(head(features), labels)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (head.predict(head(features)) == labels).float().mean() == 1.0


def test_domain_head_multiclass_uses_cross_entropy():
    head = DomainClassifier([4, 8], n_domains=3)
    logits = head([torch.randn(5, 4, 3, 3, 3), torch.randn(5, 8, 2, 2, 2)])
    assert logits.shape == (5, 3)
    assert head.loss(logits, torch.tensor([0, 1, 2, 1, 0])).item() > 0
    with pytest.raises(ValueError):
        DomainClassifier([4], n_domains=1)


def test_encoder_features_reach_through_grl():
    """The DANN path: reversed gradients from the head arrive in the encoder."""
    net = tiny_unet()
    captured = {}
    net.encoder.register_forward_hook(lambda m, i, o: captured.__setitem__("f", o))
    net(torch.randn(2, 2, 8, 8, 8))
    head = DomainClassifier([16])
    head.loss(head([grad_reverse(captured["f"][-1], 1.0)]), torch.tensor([0, 1])).backward()
    assert net.encoder.stages[-1][0].convs[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in net.named_parameters() if n.startswith("decoder.") and
               not n.startswith("decoder.encoder."))


@pytest.mark.parametrize("part", ["decoder", "encoder"])
def test_frozen_parameters_bitwise_unchanged_while_others_train(part):
    torch.manual_seed(0)
    net = tiny_unet()
    names = part_parameter_names(net, part)
    assert names and all(not n.startswith("decoder.encoder.") for n in names)
    other = "encoder" if part == "decoder" else "decoder"
    assert names.isdisjoint(part_parameter_names(net, other))
    freeze_parameters(net, names)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                                weight_decay=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        net(torch.randn(2, 2, 8, 8, 8)).square().mean().backward()
        optimizer.step()
    for name, param in net.named_parameters():
        if name in names:
            assert torch.equal(param, before[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in net.named_parameters() if n not in names)


def test_decoder_selection_by_name_excludes_encoder_reference():
    net = tiny_unet()
    # the pitfall: the decoder module yields encoder weights too
    assert {id(p) for p in net.encoder.parameters()} <= {id(p) for p in net.decoder.parameters()}
    decoder = part_parameter_names(net, "decoder")
    encoder_ids = {id(p) for p in net.encoder.parameters()}
    params = dict(net.named_parameters())
    assert not any(id(params[n]) in encoder_ids for n in decoder)
    assert any(".seg_layers." in f".{n}" for n in decoder)
    assert not any(".seg_layers." in f".{n}" for n in part_parameter_names(net, "decoder", False))
    with pytest.raises(ValueError):
        part_parameter_names(net, "bottleneck")


def test_unwrap_compiled_module():
    net = tiny_unet()
    assert unwrap(torch.compile(net, backend="eager")) is net


class _FakeDataset:
    def __init__(self, identifiers):
        self.identifiers = identifiers


def _loader(keys, domains, batch_size, share, **kwargs):
    labels = LabelManager({"background": 0, "NCR": 1, "ED": 2, "ET": 3}, regions_class_order=None)
    return DomainBalancedDataLoader(_FakeDataset(keys), batch_size, (8, 8, 8), (8, 8, 8), labels,
                                    case_domains=domains, target_domain="SSA", target_share=share, **kwargs)


@pytest.mark.parametrize("batch_size,share", [(2, 0.5), (4, 0.5), (4, 0.25), (1, 0.5), (1, 0.2), (3, 0.5)])
def test_sampler_domain_shares(batch_size, share):
    keys = [f"BraTS-GLI-{i:05d}-000" for i in range(20)] + [f"BraTS-SSA-{i:05d}-000" for i in range(3)]
    domains = read_domains({}, keys)
    loader = _loader(keys, domains, batch_size, share)
    np.random.seed(0)
    batches = [loader.get_indices() for _ in range(2000)]
    assert all(len(b) == batch_size for b in batches)
    fractions = [sum(domains[k] == "SSA" for k in b) / batch_size for b in batches]
    if batch_size == 1:
        assert np.mean(fractions) == pytest.approx(share, abs=0.03)
    else:
        expected = batch_domain_counts(batch_size, share) / batch_size
        assert set(fractions) == {expected}  # every batch holds exactly that share, so both domains
    assert {k for b in batches for k in b} == set(keys)


def test_sampler_uniform_and_single_domain_fallbacks():
    keys = [f"BraTS-GLI-{i:05d}-000" for i in range(9)] + ["BraTS-SSA-00000-000"]
    domains = read_domains({}, keys)
    np.random.seed(1)
    uniform = _loader(keys, domains, 2, None)
    share = np.mean([domains[k] == "SSA" for _ in range(2000) for k in uniform.get_indices()])
    assert share == pytest.approx(0.1, abs=0.03)
    only_ssa = _loader(["BraTS-SSA-00000-000", "BraTS-SSA-00001-000"], read_domains({}, [
        "BraTS-SSA-00000-000", "BraTS-SSA-00001-000"]), 2, 0.5)
    assert not only_ssa.balanced and len(only_ssa.get_indices()) == 2
    with pytest.raises(ValueError):
        _loader(keys, domains, 2, 1.5)


def _forced_per_domain(loader, domains, n_batches=400):
    """Per batch: (source cases forced to foreground, target cases forced, positions forced)."""
    rows = []
    for _ in range(n_batches):
        keys = loader.get_indices()
        forced = [loader.get_do_oversample(j) for j in range(len(keys))]
        rows.append((sum(f for k, f in zip(keys, forced) if domains[k] != "SSA"),
                     sum(f for k, f in zip(keys, forced) if domains[k] == "SSA"),
                     tuple(j for j, f in enumerate(forced) if f)))
    return rows


def test_per_domain_oversampling_gives_each_domain_nnunets_slots():
    """batch_per_domain (2 source + 2 target): 1 forced patch per domain, as in source-only batches of 2."""
    keys = [f"BraTS-GLI-{i:05d}-000" for i in range(8)] + [f"BraTS-SSA-{i:05d}-000" for i in range(4)]
    domains = read_domains({}, keys)
    np.random.seed(0)
    per_domain = _loader(keys, domains, 4, 0.5, oversample_foreground_percent=0.33, per_domain_oversampling=True)
    rows = _forced_per_domain(per_domain, domains)
    assert {(s, t) for s, t, _ in rows} == {(1, 1)}
    assert {j for _, _, slots in rows for j in slots} == {0, 1, 2, 3}  # shuffled with their cases
    # nnU-Net's rule on the whole batch: slot 3 only, a source case in about half the batches
    plain = _loader(keys, domains, 4, 0.5, oversample_foreground_percent=0.33)
    rows = _forced_per_domain(plain, domains)
    assert {slots for _, _, slots in rows} == {(3,)}
    assert np.mean([s for s, _, _ in rows]) == pytest.approx(0.5, abs=0.08)
    # probabilistic oversampling is per case already: left as nnU-Net has it
    probabilistic = _loader(keys, domains, 4, 0.5, oversample_foreground_percent=0.33, per_domain_oversampling=True,
                            probabilistic_oversampling=True)
    assert not probabilistic.per_domain_oversampling
    assert probabilistic.get_do_oversample.__func__ is nnUNetDataLoader._probabilistic_oversampling
    # a loader of one domain (a validation fold) keeps nnU-Net's slots
    ssa = [k for k in keys if domains[k] == "SSA"]
    single = _loader(ssa, domains, 4, 0.5, oversample_foreground_percent=0.33, per_domain_oversampling=True)
    assert not single.balanced and {s for _, _, s in _forced_per_domain(single, domains, 20)} == {(3,)}


def test_per_domain_oversampling_leaves_the_default_draws_unchanged():
    keys = [f"BraTS-GLI-{i:05d}-000" for i in range(8)] + [f"BraTS-SSA-{i:05d}-000" for i in range(4)]
    domains = read_domains({}, keys)
    draws = []
    for per_domain in (False, True):
        np.random.seed(3)
        loader = _loader(keys, domains, 4, 0.5, oversample_foreground_percent=0.33, per_domain_oversampling=per_domain)
        draws.append([sorted(loader.get_indices()) for _ in range(50)])
    assert draws[0] == draws[1]  # the same cases; only the foreground slots move


def test_poly_warmup_per_group():
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [p1], "lr": 1e-2}, {"params": [p2], "lr": 1e-4}], lr=1e-2)
    scheduler = PolyWarmupLR(optimizer, max_steps=50, exponent=0.9, warmup_steps=5)
    lrs = []
    for step in range(50):
        scheduler.step(step)
        lrs.append([g["lr"] for g in optimizer.param_groups])
    lrs = np.array(lrs)
    assert np.allclose(lrs[:, 0] / lrs[:, 1], 100.0)
    assert np.all(np.diff(lrs[:6, 0]) > 0) and np.all(np.diff(lrs[5:, 0]) < 0)
    assert lrs[5, 0] == pytest.approx(1e-2)
    assert poly_warmup_factor(10, 10, 0.75) == 0.0
    assert poly_warmup_factor(5, 10, 0.75) == pytest.approx(0.5 ** 0.75)


def test_domains_from_json_prefix_and_target():
    assert domain_of("BraTS-PED-00001-000") == "PED" and domain_of("case_001") is None
    domains = read_domains({"domains": {"case_001": "SSA"}}, ["case_001", "BraTS-GLI-00001-000"])
    assert domains == {"case_001": "SSA", "BraTS-GLI-00001-000": "GLI"}
    assert target_domain_of({"target_domain": "GLI"}, domains) == "GLI"
    assert target_domain_of({}, {"a": "GLI", "b": "GLI", "c": "SSA"}) == "SSA"
    with pytest.raises(ValueError):
        target_domain_of({}, {"a": None})


def test_pretrained_weights_from_argv_does_not_confuse_plans_flag():
    argv = ["231", "3d_fullres", "0", "-p", "nnUNetPlans", "-pretrained_weights", "/x/checkpoint_final.pth"]
    assert pretrained_weights_from_argv(argv) == "/x/checkpoint_final.pth"
    assert pretrained_weights_from_argv(["231", "3d_fullres", "0", "-p", "nnUNetPlans"]) is None


def test_encoder_hook_works_under_torch_compile():
    """nnU-Net compiles the network on GPU; the DANN feature hook must survive dynamo tracing."""
    torch._dynamo.reset()
    net = tiny_unet()
    captured = {}
    net.encoder.register_forward_hook(lambda m, i, o: captured.__setitem__("f", list(o)))
    compiled = torch.compile(net, backend="aot_eager")
    out = compiled(torch.randn(2, 2, 8, 8, 8))
    assert out.shape == (2, 3, 8, 8, 8)
    head = DomainClassifier([16])
    head.loss(head([grad_reverse(captured["f"][-1], 1.0)]), torch.tensor([0, 1])).backward()
    assert unwrap(compiled) is net
    assert net.encoder.stages[-1][0].convs[0].conv.weight.grad.abs().sum() > 0


def test_host_values_copies_loss_and_tensor_extras_and_keeps_the_rest():
    loss = torch.tensor(0.25, requires_grad=True) * 2
    out = host_values(loss, {"domain_acc": torch.tensor(0.75), "grl_lambda": 0.3, "seg_loss": torch.tensor([1.5])})
    assert set(out) == {"loss", "domain_acc", "grl_lambda", "seg_loss"}
    assert isinstance(out["loss"], np.floating) and out["loss"] == pytest.approx(0.5)
    assert out["domain_acc"] == pytest.approx(0.75) and out["seg_loss"] == pytest.approx(1.5)
    assert out["grl_lambda"] == 0.3
