"""The pieces the transfer trainers are composed of, one idea per module.

- :mod:`.base`: ``TransferTrainerBase`` (nnU-Net's trainer with hooks and the plugin's checks);
- :mod:`.mixed_domain`: ``DomainAwareMixin`` (domains, domain-balanced batches);
- :mod:`.adversarial`: ``DomainAdversarialMixin`` (DANN);
- :mod:`.finetune`: ``FineTuneMixin``, ``FreezeMixin``;
- :mod:`.recipe`: ``PaperRecipeMixin``;
- :mod:`.labels`: ``TargetLabelsMixin`` (which target training labels the run may use).

Mixins go left of the base: ``class nnUNetTrainerDANN(DomainAdversarialMixin, TransferTrainerBase)``.
"""

from nnunet_transfer.training.adversarial import DomainAdversarialMixin
from nnunet_transfer.training.base import CHECKPOINT_KEY, TransferTrainerBase, host_values
from nnunet_transfer.training.finetune import FineTuneMixin, FreezeMixin, pretrained_weights_from_argv
from nnunet_transfer.training.labels import LabelHidingDataset, TargetLabelsMixin
from nnunet_transfer.training.mixed_domain import DomainAwareMixin
from nnunet_transfer.training.recipe import PaperRecipeMixin

__all__ = ["CHECKPOINT_KEY", "DomainAdversarialMixin", "DomainAwareMixin", "FineTuneMixin", "FreezeMixin",
           "LabelHidingDataset", "PaperRecipeMixin", "TargetLabelsMixin", "TransferTrainerBase", "host_values",
           "pretrained_weights_from_argv"]
