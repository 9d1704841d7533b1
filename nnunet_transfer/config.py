"""Every environment variable the plugin reads, read in this one module.

nnU-Net's own folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) are
read lazily, at call time, so tests and the runner may set them after import.

The plugin's own knobs, all optional:

``nnUNetTransfer_num_epochs``, ``nnUNetTransfer_iterations_per_epoch``,
``nnUNetTransfer_val_iterations_per_epoch``
    Shorten the training schedule of every ``nnunet_transfer`` trainer (not of stock
    nnU-Net trainers). Meant for smoke tests and the CPU demo; each trainer logs the
    values it applied.

``nnUNetTransfer_save_every``
    Write ``checkpoint_latest.pth`` every N epochs instead of nnU-Net's 50 (short runs that
    must be resumable, kill-and-resume tests).

``nnUNetTransfer_test_time_mirroring``
    ``0`` turns test-time mirroring off in the final validation of every ``nnunet_transfer``
    trainer (8x fewer network passes in 3D; the checkpoint keeps nnU-Net's mirroring axes,
    so ``nnUNetv2_predict`` still mirrors unless told ``--disable_tta``). Default ``1``.

``nnUNetTransfer_labelled_target_cases``
    How many target training cases keep their labels in the trainers that can hide them
    (``nnUNetTrainerDANNSemiSupervised`` and friends, see ``nnunet_transfer.training.labels``):
    an integer >= 0 (``0``: none, the unsupervised regime) or a fraction in (0, 1). Overrides
    the trainer's ``labelled_target_cases``, so that a plan's ``[env]`` table sets it per
    strategy; a resumed run must see the value it started with (or none).

``nnUNetTransfer_initial_lr``
    The initial learning rate of every ``nnunet_transfer`` trainer, over its class default
    (nnU-Net's 1e-2, fine-tuning's 1e-3, the paper recipe's 6e-5): a positive number. Meant
    for a plan's per-strategy ``[env]`` (the CPU demo fine-tunes at nnU-Net's 1e-2). The run
    records it; a resumed run must see the value it started with.

``nnUNetTransfer_seed``
    Seed of every ``nnunet_transfer`` trainer's run (network initialisation and augmentation
    workers, see ``nnunet_transfer.training.seeding``): an integer in [0, 2**32). Overrides the
    trainer's ``seed`` attribute; unset, runs are unseeded as in nnU-Net. A resumed run keeps
    the seed it started with.

Example:
    >>> import os
    >>> os.environ["nnUNet_raw"] = "/data/raw"
    >>> str(nnunet_raw())
    '/data/raw'
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import List, Iterator, Optional, Union

RAW = "nnUNet_raw"
PREPROCESSED = "nnUNet_preprocessed"
RESULTS = "nnUNet_results"
EXT_TRAINER = "nnUNet_extTrainer"
NUM_EPOCHS = "nnUNetTransfer_num_epochs"
ITERATIONS_PER_EPOCH = "nnUNetTransfer_iterations_per_epoch"
VAL_ITERATIONS_PER_EPOCH = "nnUNetTransfer_val_iterations_per_epoch"
SAVE_EVERY = "nnUNetTransfer_save_every"
TEST_TIME_MIRRORING = "nnUNetTransfer_test_time_mirroring"
LABELLED_TARGET_CASES = "nnUNetTransfer_labelled_target_cases"
TRAINING_SEED = "nnUNetTransfer_seed"
INITIAL_LR = "nnUNetTransfer_initial_lr"
# nnU-Net's worker pools (nnUNet_n_proc_DA must never be 0: nnUNetv2_plan_experiment calls
# torch.set_num_threads with it) and the thread counts of the libraries its commands use
N_PROC_DA = "nnUNet_n_proc_DA"
DEF_N_PROC = "nnUNet_def_n_proc"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHON_CPU_COUNT")


class MissingEnvironmentError(RuntimeError):
    """An nnU-Net folder variable is not set."""


def _folder(name: str, required: bool) -> Optional[Path]:
    value = os.environ.get(name)
    if value:
        return Path(value)
    if required:
        raise MissingEnvironmentError(
            f"The environment variable {name} is not set. nnU-Net and nnunet-transfer need it; "
            f"set it (for example `export {name}=/data/nnunet/{name.split('_', 1)[1]}`) or run "
            f"`nnunet-transfer env` to print all exports."
        )
    return None


def use_workdir_folders(workdir: Path, create: bool = False) -> List[str]:
    """Point unset ``nnUNet_raw``/``_preprocessed``/``_results`` at ``WORKDIR/<name>`` (the demo's layout).

    With ``create`` the folders are made; otherwise only existing ones are used. Returns the
    variables set. Variables the user set are left alone.
    """
    chosen = []
    for name in (RAW, PREPROCESSED, RESULTS):
        folder = (Path(workdir) / name).resolve()
        if os.environ.get(name) or not (create or folder.is_dir()):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
        chosen.append(name)
    return chosen


def nnunet_raw(required: bool = True) -> Optional[Path]:
    """The ``nnUNet_raw`` folder."""
    return _folder(RAW, required)


def nnunet_preprocessed(required: bool = True) -> Optional[Path]:
    """The ``nnUNet_preprocessed`` folder."""
    return _folder(PREPROCESSED, required)


def nnunet_results(required: bool = True) -> Optional[Path]:
    """The ``nnUNet_results`` folder."""
    return _folder(RESULTS, required)


def _positive_int(name: str) -> Optional[int]:
    return _env_number(name, int, lambda x: x >= 1, "a positive integer (unset it to use the trainer's default)")


def schedule_overrides() -> dict:
    """Training-length overrides from the environment, as trainer attribute names.

    >>> os.environ[NUM_EPOCHS] = "2"
    >>> schedule_overrides()["num_epochs"]
    2
    >>> del os.environ[NUM_EPOCHS]
    """
    pairs = {
        "num_epochs": _positive_int(NUM_EPOCHS),
        "num_iterations_per_epoch": _positive_int(ITERATIONS_PER_EPOCH),
        "num_val_iterations_per_epoch": _positive_int(VAL_ITERATIONS_PER_EPOCH),
        "save_every": _positive_int(SAVE_EVERY),
    }
    return {key: value for key, value in pairs.items() if value is not None}


def test_time_mirroring() -> bool:
    """Whether the trainers' final validation mirrors (``nnUNetTransfer_test_time_mirroring``, default on).

    >>> os.environ[TEST_TIME_MIRRORING] = "0"
    >>> test_time_mirroring()
    False
    >>> del os.environ[TEST_TIME_MIRRORING]
    """
    value = os.environ.get(TEST_TIME_MIRRORING, "").strip().lower()
    if value in ("", "1", "true", "t", "yes", "on"):
        return True
    if value in ("0", "false", "f", "no", "off"):
        return False
    raise ValueError(f"{TEST_TIME_MIRRORING}={value!r} must be 0 or 1 (unset it to mirror, nnU-Net's default).")


def labelled_target_cases() -> Optional[Union[int, float]]:
    """``nnUNetTransfer_labelled_target_cases``: an int >= 0, a float in (0, 1), or None when unset.

    >>> os.environ[LABELLED_TARGET_CASES] = "0.25"
    >>> labelled_target_cases()
    0.25
    >>> os.environ[LABELLED_TARGET_CASES] = "3"
    >>> labelled_target_cases()
    3
    >>> del os.environ[LABELLED_TARGET_CASES]
    """
    return _env_number(LABELLED_TARGET_CASES, _int_or_float,
                       lambda x: x >= 0 if isinstance(x, int) else 0.0 < x < 1.0,
                       "a number of target training cases (an integer >= 0, 0 for none) or a fraction in (0, 1), "
                       "e.g. 10 or 0.25 (unset it to use the trainer's default)")


def _int_or_float(value: str) -> Union[int, float]:
    try:
        return int(value)
    except ValueError:
        return float(value)


def _env_number(name: str, parse, valid, expected: str):
    """The value of ``name`` parsed by ``parse`` (None when unset); an error saying ``expected`` if invalid."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = parse(value)
    except ValueError:
        number = None
    if number is None or not valid(number):
        raise ValueError(f"{name}={value!r} must be {expected}.")
    return number


def initial_lr() -> Optional[float]:
    """``nnUNetTransfer_initial_lr``: a positive float, or None when unset.

    >>> os.environ[INITIAL_LR] = "1e-2"
    >>> initial_lr()
    0.01
    >>> del os.environ[INITIAL_LR]
    """
    return _env_number(INITIAL_LR, float, lambda x: 0.0 < x < float("inf"),
                       "a positive number, e.g. 1e-2 (unset it to use the trainer's default)")


def training_seed() -> Optional[int]:
    """``nnUNetTransfer_seed``: an int in [0, 2**32), or None when unset.

    >>> os.environ[TRAINING_SEED] = "7"
    >>> training_seed()
    7
    >>> del os.environ[TRAINING_SEED]
    """
    return _env_number(TRAINING_SEED, int, lambda x: 0 <= x < 2 ** 32,
                       "an integer in [0, 2**32), e.g. 0 (unset it for nnU-Net's unseeded runs)")


def cpu_threads() -> Optional[int]:
    """``OMP_NUM_THREADS`` as a positive int, or None when unset.

    nnU-Net's CPU training sets torch's threads to every core whatever ``OMP_NUM_THREADS``
    says; the plugin's trainers set them back to this (``run --jobs`` shares cores this way).
    """
    return _positive_int("OMP_NUM_THREADS")


def user_set(name: str) -> bool:
    """Whether the user set ``name`` (non-empty) in the environment; the runner then leaves it alone.

    >>> os.environ[N_PROC_DA] = "3"
    >>> user_set(N_PROC_DA)
    True
    >>> del os.environ[N_PROC_DA]
    """
    return bool(os.environ.get(name, "").strip())


def trainer_path() -> Path:
    """The folder to put on ``nnUNet_extTrainer``: it holds one shim module only."""
    return Path(__file__).resolve().parent / "nnunet_ext"


def ext_trainer_search_path() -> str:
    """``nnUNet_extTrainer`` with this plugin's folder first and the user's own folders kept."""
    own = str(trainer_path())
    existing = [p for p in os.environ.get(EXT_TRAINER, "").split(os.pathsep) if p and p != own]
    return os.pathsep.join([own, *existing])


@contextmanager
def plugin_trainers_on_path() -> Iterator[str]:
    """Set ``nnUNet_extTrainer`` to :func:`ext_trainer_search_path` for in-process nnU-Net calls, then restore it.

    nnU-Net reads the variable when it looks a trainer class up (loading a checkpoint for
    prediction), so the plugin's trainers are found even when the user never exported it.

    >>> with plugin_trainers_on_path() as value:
    ...     os.environ[EXT_TRAINER] == value
    True
    """
    before = os.environ.get(EXT_TRAINER)
    value = ext_trainer_search_path()
    os.environ[EXT_TRAINER] = value
    try:
        yield value
    finally:
        if before is None:
            os.environ.pop(EXT_TRAINER, None)
        else:
            os.environ[EXT_TRAINER] = before
