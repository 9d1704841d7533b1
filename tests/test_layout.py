"""The repository layout: nnunet_transfer/, dataset_conversion/ and plans/ at the top level,
installed as one package (``nnunet_transfer``, ``nnunet_transfer.dataset_conversion``,
``nnunet_transfer.plans``), editable and as a wheel."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_cmd

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOTS = {"nnunet_transfer": "nnunet_transfer", "nnunet_transfer.dataset_conversion": "dataset_conversion",
                 "nnunet_transfer.plans": "plans"}


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_top_level_is_the_design_cards():
    for name in ("pyproject.toml", "README.md", "nnunet_transfer", "dataset_conversion", "tests", "plans"):
        assert (ROOT / name).exists() and not (ROOT / name).is_symlink(), name
    assert not (ROOT / "src").exists()
    assert not (ROOT / "nnunet_transfer" / "dataset_conversion").exists()
    assert sorted(p.name for p in (ROOT / "plans").glob("*.toml"))


def test_every_package_folder_is_installed():
    """A package folder missing from pyproject.toml would be absent from the wheel only."""
    conf = _setuptools()
    assert conf["package-dir"] == PACKAGE_ROOTS
    found = set()
    for package, folder in PACKAGE_ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if not any(str(p).startswith((".", "__")) for p in relative):
                found.add(".".join((package, *relative)))
    found -= {"nnunet_transfer.dataset_conversion.dataset_conversion"}
    assert set(conf["packages"]) == found


def test_tests_mirror_the_tree():
    for folder in ("brainunet", "evaluation", "experiments", "inference", "postprocessing", "synth", "training"):
        assert (ROOT / "nnunet_transfer" / folder).is_dir() and (ROOT / "tests" / folder).is_dir(), folder
    assert (ROOT / "tests" / "dataset_conversion").is_dir() and (ROOT / "tests" / "plans").is_dir()


def test_no_generic_top_level_module_outside_a_checkout(tmp_path):
    code = ("import importlib.util, nnunet_transfer.dataset_conversion as dc, nnunet_transfer.plans as pl; "
            "print(importlib.util.find_spec('dataset_conversion') is None, dc.__name__, pl.__name__)")
    out = run_cmd([sys.executable, "-c", code], cwd=tmp_path).stdout.split()
    assert out == ["True", "nnunet_transfer.dataset_conversion", "nnunet_transfer.plans"]


def test_conversion_runs_as_a_script_from_the_checkout():
    out = run_cmd([sys.executable, "dataset_conversion/convert.py", "--help"], cwd=ROOT).stdout
    assert "--clip-percentiles" in out and "--skip-bad" in out
    out = run_cmd([sys.executable, "-m", "dataset_conversion", "splits", "--help"], cwd=ROOT).stdout
    assert "usage:" in out


@pytest.mark.integration
def test_wheel_from_a_clean_checkout_installs_everything(tmp_path, nnunet_env):
    """Build a wheel from the tracked files alone, install it into a fresh venv, use it."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    clean = tmp_path / "checkout"
    for name in files.stdout.splitlines():
        source = ROOT / name
        if source.is_file():
            (clean / name).parent.mkdir(parents=True, exist_ok=True)
            (clean / name).write_bytes(source.read_bytes())
    wheels = tmp_path / "wheels"
    run_cmd([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
             str(clean)])
    (wheel,) = wheels.glob("nnunet_transfer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"nnunet_transfer"}
    for required in ("nnunet_transfer/dataset_conversion/convert.py", "nnunet_transfer/plans/demo.toml",
                     "nnunet_transfer/plans/brats_ssa_table2.toml",
                     "nnunet_transfer/nnunet_ext/nnunet_transfer_trainers.py"):
        assert required in names, required

    # a fresh venv that sees the dependencies (torch, nnunetv2) but gets this package from the wheel
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    run_cmd([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)])
    where = run_cmd([str(python), "-c", "import nnunet_transfer, nnunet_transfer.dataset_conversion as d, "
                     "nnunet_transfer.plans as p; print(nnunet_transfer.__file__, d.__file__, p.__file__)"],
                    cwd=tmp_path).stdout.split()
    assert all(str(env_dir) in w for w in where), where
    console = str(env_dir / "bin" / "nnunet-transfer")
    assert "--workdir" in run_cmd([console, "demo", "--help"], cwd=tmp_path).stdout
    shim = run_cmd([console, "env", "--trainer-path"], cwd=tmp_path).stdout.strip()
    assert shim.startswith(str(env_dir)) and (Path(shim) / "nnunet_transfer_trainers.py").is_file()
    dry = run_cmd([console, "run", "demo", "--dry-run", "--workdir", str(tmp_path / "w")], cwd=tmp_path).stdout
    assert "nnUNetv2_train" in dry
    found = run_cmd([str(python), "-c", "from nnunetv2.utilities.find_objects import "
                     "recursive_find_trainer_class_by_name as f; print(f('nnUNetTrainerDANN').__module__)"],
                    env={"nnUNet_extTrainer": shim}, cwd=tmp_path).stdout.strip()
    assert found.splitlines()[-1] == "nnunet_transfer.training.trainers"
