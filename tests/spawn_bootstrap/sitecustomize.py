"""Test-only start-up hook: spawned workers of nnU-Net's console scripts skip re-running the script.

``multiprocessing`` with the ``spawn`` start method re-runs the parent's main script in every
worker (as ``__mp_main__``). For ``nnUNetv2_train`` that re-imports the whole training stack,
about 4 s of CPU per worker on the CI machine, although the workers nnU-Net starts (export of
predictions, metrics) only need the functions they are sent, which live in ``nnunetv2``
modules. The test suite puts this folder on ``PYTHONPATH`` (``tests/conftest.py``), so its
workers skip that re-run for scripts named ``nnUNetv2_*``; everything else about the
commands is stock. Removing the folder from ``PYTHONPATH`` (``stock_spawn_env`` in
``tests/conftest.py``) restores the stock bootstrap; ``tests/test_spawn_bootstrap.py`` tests
this hook, and ``tests/integration/test_trainers_cli.py`` runs a validation both ways.

A ``sitecustomize`` that this one shadows on ``sys.path`` is still loaded, first.
"""

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_shadowed() -> None:
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _skip_nnunet_script_rerun() -> None:
    import multiprocessing.spawn as spawn

    original = spawn._fixup_main_from_path

    def fixup_main_from_path(main_path):
        if os.path.basename(main_path).startswith("nnUNetv2_"):
            return
        original(main_path)

    spawn._fixup_main_from_path = fixup_main_from_path


_load_shadowed()
_skip_nnunet_script_rerun()
