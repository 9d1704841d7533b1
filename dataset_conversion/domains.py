"""Domains (scanner populations) of BraTS cases; the rule lives in :mod:`nnunet_transfer.domains`.

Example:
    >>> domain_of("BraTS-SSA-00012-000")
    'SSA'
"""

from nnunet_transfer.domains import domain_of, read_domains

__all__ = ["domain_of", "read_domains"]
