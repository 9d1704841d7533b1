"""The experiment plans shipped with nnunet-transfer (``nnunet-transfer run NAME``).

In a checkout this is the top-level ``plans/`` folder; installed, it is ``nnunet_transfer.plans``.

Example:
    >>> from nnunet_transfer.experiments import shipped_plan
    >>> shipped_plan("demo").name
    'demo.toml'
"""
