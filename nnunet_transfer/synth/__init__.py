"""Built-in synthetic BraTS data: brain phantoms with gliomas, GLI-like (3T) or SSA-like (1.5T).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from nnunet_transfer.synth import write_brats_cases
    >>> folders = write_brats_cases(Path(tempfile.mkdtemp()), domain="GLI", n=2, shape=(32, 32, 24))
    >>> [f.name for f in folders]
    ['BraTS-GLI-00000-000', 'BraTS-GLI-00001-000']
"""

from nnunet_transfer.synth.acquisition import DOMAINS, Domain, get_domain
from nnunet_transfer.synth.anatomy import TumourProfile
from nnunet_transfer.synth.cases import (case_id, case_rng, generate_case, recorded_settings, settings, spacing_for,
                                         with_tumours, write_brats_cases)
from nnunet_transfer.synth.contrasts import MODALITIES

__all__ = ["DOMAINS", "Domain", "MODALITIES", "TumourProfile", "case_id", "case_rng", "generate_case",
           "get_domain", "recorded_settings", "settings", "spacing_for", "with_tumours", "write_brats_cases"]
