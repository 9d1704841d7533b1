"""Shim for nnU-Net's ``nnUNet_extTrainer`` search path.

nnU-Net imports every module of the folders on ``nnUNet_extTrainer`` under bare names and
removes them from ``sys.modules`` afterwards. This module therefore only re-exports the
trainer classes, which live (and stay imported) in the installed ``nnunet_transfer``
package. Do not add code here.
"""

from nnunet_transfer.training.trainers import *  # noqa: F401,F403
from nnunet_transfer.brainunet.trainers import *  # noqa: F401,F403
