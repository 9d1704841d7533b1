"""The ``-tr`` trainers. Names are public and permanent: they are written into checkpoints.

============================================  =====================================================
``-tr`` name                                  idea
============================================  =====================================================
nnUNetTrainerSourceOnly                       nnU-Net's training + the plugin's checks: the paper's
                                              GLI-only baseline and the pre-training stage
nnUNetTrainerMixedDomain                      combined dataset, half of every batch from the target
nnUNetTrainerMixedDomainUniform               combined dataset, cases drawn uniformly (the paper's
                                              "combined dataset training")
nnUNetTrainerFineTune                         fine-tune all layers from ``-pretrained_weights``
nnUNetTrainerFineTuneFrozenDecoder            ... with the decoder frozen
nnUNetTrainerFineTuneFrozenEncoder            ... with the encoder frozen
nnUNetTrainerDANN                             domain classifier behind gradient reversal
nnUNetTrainerDANNNoGRL                        the same without gradient reversal (ablation)
``<any of the above>_PaperRecipe``            the paper's recipe: Adam, lr 6e-5, poly 0.75, batch 1
============================================  =====================================================
"""

from __future__ import annotations

from nnunet_transfer.training.mixins import (DomainAdversarialMixin, DomainAwareMixin, FineTuneMixin, FreezeMixin,
                                             PaperRecipeMixin, TransferTrainerBase)


class nnUNetTrainerSourceOnly(TransferTrainerBase):
    """Plain nnU-Net training (strict folds, schedule overrides): baseline and pre-training."""


class nnUNetTrainerMixedDomain(DomainAwareMixin, TransferTrainerBase):
    """Combined-domain training with ``target_share`` (0.5) of every batch from the target domain."""

    target_share = 0.5


class nnUNetTrainerMixedDomainUniform(nnUNetTrainerMixedDomain):
    """Combined-domain training drawing cases uniformly, whatever their domain."""

    target_share = None


class nnUNetTrainerFineTune(FineTuneMixin, TransferTrainerBase):
    """Fine-tune every layer of a pre-trained model (``-pretrained_weights``)."""


class nnUNetTrainerFineTuneFrozenDecoder(FreezeMixin, nnUNetTrainerFineTune):
    """Fine-tune with the decoder frozen."""

    frozen_part = "decoder"


class nnUNetTrainerFineTuneFrozenEncoder(FreezeMixin, nnUNetTrainerFineTune):
    """Fine-tune with the encoder frozen."""

    frozen_part = "encoder"


class nnUNetTrainerDANN(DomainAdversarialMixin, TransferTrainerBase):
    """Domain-adversarial training (Ganin et al., 2016) on domain-balanced batches."""

    reverse_gradients = True


class nnUNetTrainerDANNNoGRL(nnUNetTrainerDANN):
    """DANN's model and losses without gradient reversal."""

    reverse_gradients = False


class nnUNetTrainerSourceOnly_PaperRecipe(PaperRecipeMixin, nnUNetTrainerSourceOnly):
    """Baseline / pre-training with the paper's recipe."""


class nnUNetTrainerMixedDomain_PaperRecipe(PaperRecipeMixin, nnUNetTrainerMixedDomain):
    """Mixed-domain training with the paper's recipe."""


class nnUNetTrainerMixedDomainUniform_PaperRecipe(PaperRecipeMixin, nnUNetTrainerMixedDomainUniform):
    """The paper's combined dataset training, with its recipe."""


class nnUNetTrainerFineTune_PaperRecipe(PaperRecipeMixin, nnUNetTrainerFineTune):
    """Fine-tuning with the paper's recipe (its lr 6e-5 replaces the fine-tuning lr)."""


class nnUNetTrainerFineTuneFrozenDecoder_PaperRecipe(PaperRecipeMixin, nnUNetTrainerFineTuneFrozenDecoder):
    """Frozen-decoder fine-tuning with the paper's recipe."""


class nnUNetTrainerFineTuneFrozenEncoder_PaperRecipe(PaperRecipeMixin, nnUNetTrainerFineTuneFrozenEncoder):
    """Frozen-encoder fine-tuning with the paper's recipe."""


class nnUNetTrainerDANN_PaperRecipe(PaperRecipeMixin, nnUNetTrainerDANN):
    """DANN with the paper's recipe."""


class nnUNetTrainerDANNNoGRL_PaperRecipe(PaperRecipeMixin, nnUNetTrainerDANNNoGRL):
    """DANN without gradient reversal, with the paper's recipe."""


__all__ = [name for name in dir() if name.startswith("nnUNetTrainer")]
