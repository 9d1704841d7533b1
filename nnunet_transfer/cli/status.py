"""Where a plan's run stands: each step done, pending, running, failed or interrupted, with its log.

    nnunet-transfer status plans/brats_ssa_table2.toml
    nnunet-transfer status demo --workdir demo_work --folds 0 --strategies finetune

Takes the same PLAN, --workdir, --folds and --strategies as `nnunet-transfer run`. A step is
done when the files it leaves exist; running while a runner works on it
(WORKDIR/logs/<step>.running holds the runner's pid and host); interrupted when that runner
is gone or was stopped with Ctrl-C; failed when its last run (WORKDIR/run_log.jsonl) ended
with a non-zero status. The last line estimates the time left from the durations of earlier
runs in the work dir (run one job at a time).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnunet_transfer.cli.run import add_selection

    add_selection(parser)


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.experiments import build_steps, load_plan
    from nnunet_transfer.experiments.runner import DurationEstimator, estimate_left, format_seconds, \
        read_run_log, step_states
    from nnunet_transfer.experiments.steps import Layout

    from nnunet_transfer import config

    plan = load_plan(args.plan)
    workdir = args.workdir if args.workdir is not None else Path("runs") / plan.name
    config.use_workdir_folders(workdir)  # a demo's work dir holds its nnU-Net folders
    layout = Layout.from_env(plan, workdir)
    steps = build_steps(plan, workdir, folds=args.folds, strategies=args.strategies, layout=layout)
    states = step_states(steps, layout.workdir)
    width = max((len(s.name) for s in states), default=4)
    infos = [state.detail or (format_seconds(state.seconds) if state.state == "done" and state.seconds is not None
                              else "") for state in states]
    info_width = min(40, max((len(i) for i in infos), default=0))
    for number, (state, info) in enumerate(zip(states, infos), 1):
        log = state.log if state.log.is_file() else "-"
        print(f"{number:3d} {state.state:<11} {state.name:<{width}}  {info:<{info_width}}  {log}")
    counts = {}
    for state in states:
        counts[state.state] = counts.get(state.state, 0) + 1
    order = ("done", "running", "failed", "interrupted", "pending")
    summary = ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
    left = [s for s, st in zip(steps, states) if st.state != "done"]
    estimator = DurationEstimator(read_run_log(layout.workdir))
    estimates = {s.name: estimator.estimate(s.name)[0] for s in left}
    if left and all(v is not None for v in estimates.values()):
        summary += f"; about {format_seconds(estimate_left(left, estimates))} of work left"
    print(f"{plan.name} ({layout.workdir}): {len(steps)} steps: {summary or 'none'}")
    return 0
