"""Shared test fixtures: isolated nnU-Net folders and a subprocess runner.

Every test runs on the CPU with one worker process; integration tests call the real
nnU-Net and nnunet-transfer console scripts in subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from nnunet_transfer import config

CPU_ENV = {
    "nnUNet_def_n_proc": "1",
    "nnUNet_n_proc_DA": "1",  # 0 breaks nnUNetv2_plan_experiment (torch.set_num_threads(0))
    "nnUNet_compile": "f",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


# Test-only: workers that nnU-Net's console scripts spawn skip re-running the script (about 4 s of
# CPU each); see tests/spawn_bootstrap/sitecustomize.py. Every subprocess a test starts inherits it.
SPAWN_BOOTSTRAP = Path(__file__).resolve().parent / "spawn_bootstrap"
if str(SPAWN_BOOTSTRAP) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SPAWN_BOOTSTRAP), os.environ.get("PYTHONPATH"))
                                               if p)


def stock_spawn_env() -> Dict[str, str]:
    """``PYTHONPATH`` without the test-only spawn bootstrap, for a test of nnU-Net's own start-up."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SPAWN_BOOTSTRAP)]
    return {"PYTHONPATH": os.pathsep.join(parts)}


def nnunet_folders(root: Path) -> Dict[str, str]:
    """nnU-Net folder variables below ``root`` (created), plus the plugin's trainer path."""
    env = {}
    for name, sub in ((config.RAW, "raw"), (config.PREPROCESSED, "preprocessed"), (config.RESULTS, "results")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(root / sub)
    env[config.EXT_TRAINER] = str(config.trainer_path())
    return {**CPU_ENV, **env}


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch) -> Dict[str, str]:
    """Point nnU-Net's folders at a fresh temporary directory for one test."""
    env = nnunet_folders(tmp_path / "nnunet")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_cmd(args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 600,
            cwd: Optional[Path] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a console command with ``env`` added to the current environment.

    On failure the assertion message carries the command's output, so a failing
    integration test says why.
    """
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(args, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def cli(*args: str) -> List[str]:
    """The nnunet-transfer console script, run with this interpreter."""
    return [sys.executable, "-m", "nnunet_transfer.cli", *args]


@pytest.fixture
def demo_with_strategy_env(tmp_path) -> Path:
    """The shipped demo plan with a per-strategy [env] table on fine-tuning (2 epochs of 30 steps)."""
    from nnunet_transfer.experiments import shipped_plan

    text = Path(shipped_plan("demo")).read_text()
    section = text.index("[strategies.finetune]\n")
    line = "env = { nnUNetTransfer_initial_lr = 1e-2 }\n"  # the demo's own env of fine-tuning, extended
    at = text.index(line, section)
    assert at < text.index("[strategies.", section + 1), "the demo's fine-tuning strategy changed shape"
    text = text[:at] + ("env = { nnUNetTransfer_initial_lr = 1e-2, nnUNetTransfer_num_epochs = 2, "
                        "nnUNetTransfer_iterations_per_epoch = 30 }\n") + text[at + len(line):]
    path = tmp_path / "demo_strategy_env.toml"
    path.write_text(text)
    return path
