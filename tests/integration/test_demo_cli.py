"""A shortened demo end to end: the shipped demo plan, shrunk, through `nnunet-transfer run`.

Synth -> convert -> combine -> fingerprint/plan -> move plans -> preprocess -> splits ->
train (baseline fold all, fine-tuning per fold) -> predict-folds -> evaluate ->
compare, with nnU-Net's real commands on the CPU.
"""

from __future__ import annotations

import json
import tomllib

import pytest

from nnunet_transfer.experiments.plan import shipped_plan
from tests.conftest import cli, nnunet_folders, run_cmd

pytestmark = pytest.mark.integration


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def dump_toml(data: dict, prefix: str = "") -> str:
    """Enough TOML for plan files: scalars and lists first, then nested tables."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}.{key}" if prefix else key
        text += f"\n[{name}]\n" + dump_toml(value, name)
    return text


def small_demo_plan() -> dict:
    plan = tomllib.loads(shipped_plan("demo").read_text())
    plan["name"] = "demo_ci"
    plan["folds"] = 2
    plan["datasets"]["source"].update(n=4, shape=[32, 32, 24])
    plan["datasets"]["target"].update(n=3, shape=[32, 32, 24])
    plan["overrides"]["shrink"].update(max_features=16, n_stages=3, patch_size=[32, 32, 24])
    plan["overrides"]["env"] = {"nnUNetTransfer_num_epochs": 1, "nnUNetTransfer_iterations_per_epoch": 2,
                                "nnUNetTransfer_val_iterations_per_epoch": 1}
    plan["strategies"] = {k: v for k, v in plan["strategies"].items() if k in ("baseline", "finetune")}
    for strategy in plan["strategies"].values():
        strategy.pop("env", None)  # the demo's own schedules: far too long for CI
    return plan


def test_shortened_demo_end_to_end_and_resume(tmp_path):
    env = nnunet_folders(tmp_path / "nnunet")
    plan_file = tmp_path / "demo_ci.toml"
    plan_file.write_text(dump_toml(small_demo_plan()))
    workdir = tmp_path / "work"
    proc = run_cmd(cli("run", str(plan_file), "--workdir", str(workdir), "--quiet"), env, timeout=1200)

    table = (workdir / "comparison" / "table2.md").read_text()
    for label in ("Baseline", "Fine-Tuning"):
        assert label in table
    comparison = json.loads((workdir / "comparison" / "comparison.json").read_text())
    assert (workdir / "comparison" / "comparison.png").stat().st_size > 1000
    assert "Baseline" in json.dumps(comparison)
    # both folds of every strategy were validated on the same SSA cases
    for fold in (0, 1):
        summaries = list(workdir.rglob(f"fold_{fold}/validation/summary*.json")) + \
            list(tmp_path.rglob(f"fold_{fold}/validation/summary*.json"))
        assert summaries
    assert "Baseline" in proc.stdout

    # a rerun finds every step done and runs nothing
    again = run_cmd(cli("run", str(plan_file), "--workdir", str(workdir), "--quiet"), env, timeout=600)
    assert "ran 0 step(s)" in again.stdout
