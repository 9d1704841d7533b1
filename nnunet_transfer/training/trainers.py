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
nnUNetTrainerDANNUnsupervised                 DANN with no target label (``labelled_target_cases``
                                              = 0): target cases feed the domain loss only
nnUNetTrainerDANNSemiSupervised               DANN with 10 labelled target training cases (the
                                              rest masked; ``nnUNetTransfer_labelled_target_cases``)
nnUNetTrainerDANNNoGRLUnsupervised            the unsupervised DANN without gradient reversal
nnUNetTrainerMixedDomainUnsupervised          source labels + unlabelled target images, balanced
                                              batches, no domain loss (source-only control)
nnUNetTrainerFineTuneLabelledSubset           fine-tune from ``-pretrained_weights`` on the 10
                                              labelled target training cases only (rest dropped)
``<any of the above>_PaperRecipe``            the paper's recipe: Adam, lr 6e-5, poly 0.75, batch 1
============================================  =====================================================
"""

from __future__ import annotations

from nnunet_transfer.training.mixins import (DomainAdversarialMixin, DomainAwareMixin, FineTuneMixin, FreezeMixin,
                                             PaperRecipeMixin, TargetLabelsMixin, TransferTrainerBase)


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


class nnUNetTrainerDANNUnsupervised(TargetLabelsMixin, nnUNetTrainerDANN):
    """DANN with no target label: target cases train the domain classifier only (no checkpoint_best)."""

    labelled_target_cases = 0
    batch_per_domain = True


class nnUNetTrainerDANNSemiSupervised(TargetLabelsMixin, nnUNetTrainerDANN):
    """DANN with ``labelled_target_cases`` (10) labelled target training cases; the others' labels masked."""

    labelled_target_cases = 10
    batch_per_domain = True


class nnUNetTrainerDANNNoGRLUnsupervised(TargetLabelsMixin, nnUNetTrainerDANNNoGRL):
    """The unsupervised DANN without gradient reversal (ablation)."""

    labelled_target_cases = 0
    batch_per_domain = True


class nnUNetTrainerMixedDomainUnsupervised(TargetLabelsMixin, nnUNetTrainerMixedDomain):
    """Source labels and unlabelled target images in balanced batches, no domain loss: the control of
    the unsupervised DANN (the target images reach the network, their segmentation loss is masked)."""

    labelled_target_cases = 0
    batch_per_domain = True


class nnUNetTrainerFineTuneLabelledSubset(TargetLabelsMixin, nnUNetTrainerFineTune):
    """Fine-tune from ``-pretrained_weights`` on the labelled target training cases only (10; the rest dropped)."""

    labelled_target_cases = 10
    hidden_label_use = "drop"


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


class nnUNetTrainerDANNUnsupervised_PaperRecipe(PaperRecipeMixin, nnUNetTrainerDANNUnsupervised):
    """Unsupervised DANN with the paper's recipe."""


class nnUNetTrainerDANNSemiSupervised_PaperRecipe(PaperRecipeMixin, nnUNetTrainerDANNSemiSupervised):
    """Semi-supervised DANN with the paper's recipe."""


class nnUNetTrainerDANNNoGRLUnsupervised_PaperRecipe(PaperRecipeMixin, nnUNetTrainerDANNNoGRLUnsupervised):
    """Unsupervised DANN without gradient reversal, with the paper's recipe."""


class nnUNetTrainerMixedDomainUnsupervised_PaperRecipe(PaperRecipeMixin, nnUNetTrainerMixedDomainUnsupervised):
    """The unsupervised mixed-domain control with the paper's recipe."""


class nnUNetTrainerFineTuneLabelledSubset_PaperRecipe(PaperRecipeMixin, nnUNetTrainerFineTuneLabelledSubset):
    """Fine-tuning on the labelled target subset with the paper's recipe."""


__all__ = [name for name in dir() if name.startswith("nnUNetTrainer")]
