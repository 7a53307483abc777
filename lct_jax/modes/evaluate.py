"""`--mode=evaluate`: FID / precision / recall of a checkpoint with each configured sampler, a row
per sampler appended to <workdir>/results.json (results.md), and the dataset's comparison table
(ours beside the paper's Table 1) rebuilt from every run beside it.

`--checkpoints=all` (or `--checkpoints=500,1000`): the curves. Every checkpoint named that has no
row yet for each sampler (same EMA, same number of samples) is evaluated, one after another, its
rows appended before the next starts (a run stopped halfway resumes where it stopped), with one
Evaluator for all of them; then FID over steps and over NFE is drawn (evaluation/curves.py).
"""
from __future__ import annotations

import json
import os

import jax

from lct_jax.builders import build_evaluator, configured_samplers, curve_samplers
from lct_jax.evaluation import curves, results, table1
from lct_jax.modes.recorded import run_config
from lct_jax.modes.run_weights import load_params


def evaluate(config, workdir, checkpoint=''):
    """The rows of one checkpoint (the newest by default), or of many (curves.wants_curves)."""
    ev = config.evaluation
    if curves.wants_curves(checkpoint):  # --checkpoints=all or a list of steps: FID over steps and NFE
        return evaluate_checkpoints(config, workdir, checkpoint, say=lambda line: print(line, flush=True))
    params, desc = load_params(config, workdir, checkpoint)

    def say(row):
        if jax.process_index() == 0:
            print(json.dumps(row, ensure_ascii=False), flush=True)

    rows = build_evaluator(config, workdir).rows(params, desc, config.sampling.num_samples, say=say)
    if jax.process_index() == 0:
        written = results.append_rows(workdir, rows)
        comparison_dir = ev.comparison_dir or os.path.dirname(os.path.abspath(workdir))
        try:  # the table is a view of finished work: a file it cannot use never fails the evaluation
            comparison = table1.write_comparison(comparison_dir, ev.dataset)
        except (OSError, ValueError) as e:
            comparison = f'not rebuilt ({e})'
        print(f'results: a row per sampler appended to {written} (and results.md); '
              f'every run of {ev.dataset} found beside it, ours beside the paper\'s: {comparison}', flush=True)
    return rows


def evaluate_checkpoints(config, workdir: str, which: str, say=print) -> list[dict]:
    """Rows of the checkpoints not yet evaluated (appended to results.json as each finishes), then plots."""
    steps = curves.checkpoint_steps(workdir, which)
    ema, num = config.sampling.ema, config.sampling.num_samples
    path = os.path.join(workdir, 'results.json')
    old = (table1.evaluation_rows(path)[0] or []) if os.path.exists(path) else []
    done = curves.evaluated(old, ema, num)
    specs = curve_samplers(config) or configured_samplers(config)
    evaluator, new = None, []
    for step in steps:
        if all((step, s.label) in done for s in specs):
            continue
        if evaluator is None:  # reference statistics and samplers once, for every checkpoint
            evaluator = build_evaluator(config, workdir, specs=specs)
        params, desc = load_params(config, workdir, os.path.join(workdir, 'checkpoints', str(step)))
        rows = [dict(r, step=step) for r in evaluator.rows(params, desc, num)]
        if jax.process_index() == 0:
            results.append_rows(workdir, rows)
            say(f'evaluated step {step}: ' + ', '.join(f'{r["sampler"]} FID {r["fid"]:.4g}' for r in rows))
        new += rows
    if jax.process_index() == 0:
        every = (table1.evaluation_rows(path)[0] or []) if os.path.exists(path) else []
        written = curves.plot_curves(curves.rows_of(every, ema, num), workdir)
        say(f'curves: {", ".join(written)} ({len(new)} new row(s) in {path})')
    return new


def run(config, workdir: str, flags) -> None:
    evaluate(run_config(config, workdir, flags.overrides), workdir, flags.checkpoint)
