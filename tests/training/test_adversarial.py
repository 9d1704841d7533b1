"""DANN's options in-process on hand-made plans: decoder stages, the reversal schedule, run state, three domains."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nnunet_transfer.domains import read_domains
from nnunet_transfer.training import trainers as T
from nnunet_transfer.training.checkpoints import CHECKPOINT_KEY
from nnunet_transfer.training.grl import ganin_lambda, grl_schedule_lambda
from nnunet_transfer.training.sampling import DomainBalancedDataLoader
from tests.training.test_blocks import _FakeDataset
from tests.training.test_trainers_inprocess import DATASET_JSON, KEYS, folders, tiny_plans  # noqa: F401 (fixture)

RESIDUAL = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def plans_for(network: str = "plain", features=(4, 8, 16)) -> dict:
    plans = copy.deepcopy(tiny_plans(features))
    if network == "residual":
        arch = plans["configurations"]["3d_fullres"]["architecture"]
        arch["network_class_name"] = RESIDUAL
        arch["arch_kwargs"]["n_blocks_per_stage"] = arch["arch_kwargs"].pop("n_conv_per_stage")
    return plans


def build(cls, keys=KEYS, dataset_json=DATASET_JSON, network: str = "plain", val=None):
    trainer = cls({**plans_for(network), "continue_training": False}, "3d_fullres", 0, dataset_json,
                  torch.device("cpu"))
    val = list(keys[:1]) if val is None else val
    trainer._split = (list(keys), val)
    trainer.check_training_cases(list(keys), val)
    trainer.initialize()
    trainer.network.train()
    trainer._step_in_epoch = 0
    return trainer


def batch(trainer, keys, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 4, (len(keys), 1, 16, 16, 16), generator=generator).float()
    scales = trainer._get_deep_supervision_scales()
    target = seg if scales is None else [torch.nn.functional.interpolate(seg, scale_factor=tuple(s)) for s in scales]
    return {"data": torch.randn(len(keys), 2, 16, 16, 16, generator=generator), "target": target, "keys": list(keys)}


class DecoderDANN(T.nnUNetTrainerDANN):
    domain_feature_levels = (-1,)
    domain_decoder_stages = (0, -1)


@pytest.mark.parametrize("network", ["plain", "residual"])
def test_decoder_stages_reach_the_classifier_in_training_only(folders, network):
    trainer = build(DecoderDANN, network=network)
    assert trainer.head_config["levels"] == [2] and trainer.head_config["decoder_stages"] == [0, 1]
    assert [conv[0].in_channels for conv in trainer.domain_head.convs] == [16, 8, 4]  # bottleneck, stage 0, stage 1
    data = batch(trainer, KEYS)["data"]
    trainer.network(data)
    assert [tuple(f.shape) for f in trainer._features] == [(2, 16, 4, 4, 4), (2, 8, 8, 8, 8), (2, 4, 16, 16, 16)]
    trainer._features = None
    trainer.network.eval()
    with torch.no_grad():
        trainer.network(data)
    assert trainer._features is None  # validation keeps nothing alive
    trainer.network.train()
    out = trainer.train_step(batch(trainer, KEYS))
    assert np.isfinite(out["domain_loss"]) and trainer._features is None
    assert all(p.grad is not None for p in trainer.domain_head.parameters())


def decoder_gradient(cls):
    """Gradient of the domain term alone on the last decoder stage (the segmentation loss set to zero)."""
    torch.manual_seed(0)  # the same weights for every class
    trainer = build(cls)
    trainer.loss = lambda output, target: sum(o.sum() for o in output) * 0.0
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.current_epoch = 2, 10, 1
    b = batch(trainer, KEYS)
    trainer.prepare_batch(b)
    torch.manual_seed(1)  # the same dropout in the classifier
    loss, extras = trainer.compute_loss(trainer.network(b["data"]), b["target"], b)
    loss.backward()
    return {n: p.grad.clone() for n, p in trainer.network.decoder.stages[-1].named_parameters()}, extras


def test_the_reversed_domain_gradient_reaches_the_decoder_stage(folders):
    knobs = {"domain_feature_levels": (), "domain_decoder_stages": (-1,), "domain_loss_weight": 1.0}
    reversed_, extras = decoder_gradient(type("DecoderOnly", (T.nnUNetTrainerDANN,), knobs))
    plain, _ = decoder_gradient(type("DecoderOnlyNoGRL", (T.nnUNetTrainerDANNNoGRL,), knobs))
    lam = extras["grl_lambda"]
    assert lam == pytest.approx(ganin_lambda(0.5)) and any(g.abs().sum() > 0 for g in plain.values())
    for name, grad in plain.items():
        assert torch.allclose(reversed_[name], -lam * grad, atol=1e-7), name


@pytest.mark.parametrize("knobs,match", [
    ({"domain_decoder_stages": (2,)}, r"DecoderOff: domain_decoder_stages = \(2,\): stage 2 is out of range for a "
                                      r"network with 2 such stages \(valid: -2..1\).*encoder stages: 3, decoder "
                                      r"stages: 2"),
    ({"domain_feature_levels": (3,)}, r"domain_feature_levels = \(3,\): stage 3 is out of range"),
    ({"domain_feature_levels": (), "domain_decoder_stages": ()}, "both empty"),
    ({"grl_schedule": "cosine"}, "DecoderOff: grl_schedule 'cosine' is unknown"),
])
def test_bad_knobs_are_refused_before_training(folders, knobs, match):
    DecoderOff = type("DecoderOff", (T.nnUNetTrainerDANN,), knobs)
    with pytest.raises(ValueError, match=match):
        build(DecoderOff)


def test_grl_lambda_follows_the_schedule_knobs(folders):
    class Linear(T.nnUNetTrainerDANN):
        grl_schedule, grl_max, grl_delay, grl_ramp = "linear", 0.5, 0.25, 0.5

    trainer = build(Linear)
    trainer.num_epochs, trainer.num_iterations_per_epoch = 4, 10
    seen = []
    for epoch, step in [(0, 5), (1, 5), (2, 5), (3, 9)]:
        trainer.current_epoch, trainer._step_in_epoch = epoch, step
        seen.append(trainer.grl_lambda())
    assert seen == pytest.approx([0.0, 0.125, 0.375, 0.5])  # p = 0.125, 0.375, 0.625, 0.975
    default = build(T.nnUNetTrainerDANN)
    default.num_epochs, default.num_iterations_per_epoch, default.current_epoch, default._step_in_epoch = 4, 10, 1, 5
    assert default.grl_lambda() == ganin_lambda(15 / 40, 10.0)  # today's schedule, bitwise


class Resumable(T.nnUNetTrainerDANN):
    domain_decoder_stages = (-1,)
    grl_schedule, grl_max, grl_delay, grl_ramp = "linear", 0.7, 0.1, 0.3


def fresh_from(checkpoint_path, cls):
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    trainer = cls({**checkpoint["init_args"]["plans"], "continue_training": True}, "3d_fullres", 0,
                  checkpoint["init_args"]["dataset_json"], torch.device("cpu"))
    trainer._split = (KEYS, KEYS[:1])
    trainer.check_training_cases(KEYS, KEYS[:1])
    trainer.load_checkpoint(str(checkpoint_path))
    return trainer


def test_new_head_keys_round_trip_through_the_run_state(folders, tmp_path):
    trainer = build(Resumable)
    trainer.train_step(batch(trainer, KEYS))
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    head = torch.load(path, weights_only=False)[CHECKPOINT_KEY]["run"]["dann"]["head"]
    assert {k: head[k] for k in ("decoder_stages", "grl_schedule", "grl_max", "grl_delay", "grl_ramp")} == {
        "decoder_stages": [1], "grl_schedule": "linear", "grl_max": 0.7, "grl_delay": 0.1, "grl_ramp": 0.3}

    class DefaultsChanged(Resumable):  # the class defaults moved on; the resumed run keeps its own
        domain_decoder_stages = ()
        grl_schedule, grl_max = "constant", 1.0

    resumed = fresh_from(path, DefaultsChanged)
    assert resumed.head_config == trainer.head_config
    assert len(resumed.domain_head.convs) == 4  # three encoder levels and the decoder stage
    resumed.network.train()
    resumed.train_step(batch(resumed, KEYS))
    resumed.num_epochs, resumed.num_iterations_per_epoch, resumed.current_epoch, resumed._step_in_epoch = 4, 10, 1, 5
    assert resumed.grl_lambda() == grl_schedule_lambda(15 / 40, "linear", 10.0, 0.7, 0.1, 0.3)
    assert resumed.grl_lambda() == pytest.approx(0.7 * (15 / 40 - 0.1) / 0.3)


def test_a_checkpoint_from_before_the_new_keys_resumes_with_todays_behaviour(folders, tmp_path):
    trainer = build(T.nnUNetTrainerDANN)
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    checkpoint = torch.load(path, weights_only=False)
    head = checkpoint[CHECKPOINT_KEY]["run"]["dann"]["head"]
    for key in ("decoder_stages", "grl_schedule", "grl_max", "grl_delay", "grl_ramp", "encoder_gradient_scale"):
        del head[key]  # as an older nnunet-transfer wrote it
    old = tmp_path / "checkpoint_old.pth"
    torch.save(checkpoint, old)
    resumed = fresh_from(old, Resumable)  # today's class asks for decoder stages and a linear schedule
    assert resumed.head_config["decoder_stages"] == [] and resumed.head_config["grl_schedule"] == "ganin"
    assert (resumed.head_config["grl_max"], resumed.head_config["grl_delay"]) == (1.0, 0.0)
    assert len(resumed.domain_head.convs) == 3
    resumed.num_epochs, resumed.num_iterations_per_epoch, resumed.current_epoch, resumed._step_in_epoch = 4, 10, 1, 0
    assert resumed.grl_lambda() == ganin_lambda(0.25, 10.0)
    resumed.network.train()
    assert np.isfinite(resumed.train_step(batch(resumed, KEYS))["domain_loss"])


THREE = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "c2": "C", "c3": "C"}


def test_dann_trains_with_three_domains(folders):
    dataset_json = {**DATASET_JSON, "numTraining": len(THREE), "domains": THREE}
    keys = sorted(THREE)
    trainer = build(T.nnUNetTrainerDANN, keys=keys, dataset_json=dataset_json, val=["a1", "b1", "c1"])
    assert trainer.active_target_domain == "B"  # the rarest, and not the last class
    assert trainer.domain_index == {"A": 0, "B": 1, "C": 2}
    head = trainer.domain_head
    assert head.n_domains == 3 and head.mlp[-1].out_features == 3
    for step, chosen in enumerate((["a1", "b1", "c1"], ["c2", "b1", "a2"])):
        b = batch(trainer, chosen, seed=step)
        out = trainer.train_step(b)
        assert b["domain_labels"].tolist() == [trainer.domain_index[THREE[k]] for k in chosen]
        assert np.isfinite(out["loss"]) and np.isfinite(out["domain_loss"]) and 0.0 <= out["domain_acc"] <= 1.0
    logits = head([torch.randn(3, c, 8, 8, 8) for c in (4, 8, 16)])
    assert logits.shape == (3, 3)
    labels = torch.tensor([0, 1, 2])
    assert torch.allclose(head.loss(logits, labels), torch.nn.functional.cross_entropy(logits, labels))
    assert trainer.run_state()["dann"]["domain_index"] == {"A": 0, "B": 1, "C": 2}

    loader = DomainBalancedDataLoader(_FakeDataset(keys), 4, (8, 8, 8), (8, 8, 8), trainer.label_manager,
                                      case_domains=trainer.case_domains, target_domain=trainer.active_target_domain,
                                      target_share=trainer.target_share)
    np.random.seed(0)
    draws = [loader.get_indices() for _ in range(300)]
    assert all(sum(THREE[k] == "B" for k in d) == 2 for d in draws)  # the target's half of every batch
    others = [THREE[k] for d in draws for k in d if THREE[k] != "B"]
    assert set(others) == {"A", "C"}
    assert others.count("C") / len(others) == pytest.approx(3 / 5, abs=0.05)  # the rest: uniform over their cases
    assert read_domains(dataset_json, keys) == trainer.case_domains


def test_decoder_hooks_work_under_torch_compile(folders):
    """nnU-Net compiles the network on GPU (after the hooks' modules exist, before the first step)."""
    torch._dynamo.reset()
    trainer = build(DecoderDANN)
    trainer.network = torch.compile(trainer.network, backend="aot_eager")
    for step in range(2):
        out = trainer.train_step(batch(trainer, KEYS, seed=step))
        assert np.isfinite(out["domain_loss"]) and trainer._features is None
    trainer.network(batch(trainer, KEYS)["data"])
    assert [tuple(f.shape) for f in trainer._features] == [(2, 16, 4, 4, 4), (2, 8, 8, 8, 8), (2, 4, 16, 16, 16)]
    assert all(p.grad is not None for p in trainer.domain_head.parameters())
