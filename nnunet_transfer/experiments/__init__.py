"""Experiment plans and their resumable runner (local subprocesses or SLURM scripts).

Example:
    >>> from nnunet_transfer.experiments import load_plan, shipped_plan
    >>> plan = load_plan(shipped_plan("brats_ssa_table2"))
    >>> [s.trainer for s in plan.strategies.values()][:2]
    ['nnUNetTrainerSourceOnly_PaperRecipe', 'nnUNetTrainerMixedDomainUniform_PaperRecipe']
"""

from nnunet_transfer.experiments.plan import (DatasetSpec, Plan, PlanError, PlansFamily, Strategy, load_plan,
                                              parse_plan, selected_strategies, shipped_plan)
from nnunet_transfer.experiments.runner import RunReport, dry_run, run_python_step, run_steps, subprocess_executor
from nnunet_transfer.experiments.slurm import emit_slurm
from nnunet_transfer.experiments.steps import Layout, Step, build_steps

__all__ = ["DatasetSpec", "Layout", "Plan", "PlanError", "PlansFamily", "RunReport", "Step", "Strategy", "build_steps", "dry_run",
           "emit_slurm", "load_plan", "parse_plan", "run_python_step", "run_steps", "selected_strategies",
           "shipped_plan", "subprocess_executor"]
