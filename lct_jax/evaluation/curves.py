"""FID over training steps and over NFE: `--mode=evaluate --checkpoints=all` (or `--checkpoints=10,20`;
`--checkpoint=all` and `--checkpoint=10,20` are the same).

Every checkpoint named (all of <workdir>/checkpoints/<step>, or the listed steps) that has no
row yet in results.json for each configured sampler (same EMA, same number of samples) is
evaluated, one checkpoint after another, its rows appended before the next starts: a run
stopped halfway resumes where it stopped. One Evaluator serves them all (reference statistics
and compiled samplers made once). Then, from every row in results.json:

  fid_over_steps.png   FID against the training step, one line per sampler
  fid_over_nfe.png     FID against the number of network evaluations at the latest step
                       evaluated (the configured samplers: 1-step and 2-step, or Euler / Heun)
"""
from __future__ import annotations

import dataclasses
import os
import re

STEP_OF = re.compile(r'^step (\d+):(.+)$')


def curve_samplers(config) -> list | None:
    """evaluation.curve_samplers as SamplerSpecs ('consistency:<ts>', 'euler:<steps>', 'heun:<steps>'),
    or None (the configured samplers)."""
    from lct_jax import sampling
    from lct_jax.builders import build_objective
    names = tuple(config.evaluation.get('curve_samplers', ()) or ())
    if not names:
        return None
    obj, specs = build_objective(config), []
    for name in names:
        method, _, arg = str(name).partition(':')
        try:
            if method == 'consistency':
                spec = sampling.consistency_spec('', tuple(int(t) for t in arg.split(',')),
                                                 config.sampling.grid_steps, obj)
                # named by its NFE, as the configured ones: (0, 420, 640) is '2-step' (the last index costs nothing)
                specs.append(dataclasses.replace(spec, label=f'{spec.nfe}-step'))
            elif method in sampling.ODE_METHODS:
                specs.append(sampling.ode_spec(method, int(arg), obj))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f'evaluation.curve_samplers: {name!r}; expected consistency:<t0,t1,...>, '
                             f'euler:<steps> or heun:<steps>') from None
    return specs


def wants_curves(checkpoint: str) -> bool:
    return checkpoint == 'all' or ',' in checkpoint


def checkpoint_steps(workdir: str, which: str) -> list[int]:
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    have = sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) if os.path.isdir(ckpt_dir) else []
    if which == 'all':
        return have
    try:
        asked = [int(s) for s in which.split(',') if s.strip()]
    except ValueError:
        raise ValueError(f'--checkpoint={which!r}: expected all, or steps separated by commas (e.g. 10,20)') from None
    missing = [s for s in asked if s not in have]
    if missing:
        raise FileNotFoundError(f'--checkpoint={which}: no checkpoint of step(s) {missing} in {ckpt_dir} '
                                f'(it has {have})')
    return sorted(asked)


def step_of(row: dict) -> int | None:
    m = STEP_OF.match(str(row.get('checkpoint', '')))
    return int(m.group(1)) if m else None


def evaluated(rows: list[dict], ema: str, num: int) -> set[tuple[int, str]]:
    """(step, sampler) pairs results.json already holds for this EMA and sample count."""
    out = set()
    for r in rows:
        m = STEP_OF.match(str(r.get('checkpoint', '')))
        if m and m.group(2) == ema and r.get('num_samples') == num:
            out.add((int(m.group(1)), r.get('sampler')))
    return out


def evaluate_checkpoints(config, workdir: str, which: str, say=print) -> list[dict]:
    """Rows of the checkpoints not yet evaluated (appended to results.json as each finishes), then plots."""
    import jax
    from lct_jax import cli
    from lct_jax.evaluation import results, table1
    from lct_jax.evaluation.evaluator import Evaluator
    steps = checkpoint_steps(workdir, which)
    ema, num = config.sampling.ema, config.sampling.num_samples
    path = os.path.join(workdir, 'results.json')
    old = (table1.evaluation_rows(path)[0] or []) if os.path.exists(path) else []
    done = evaluated(old, ema, num)
    from lct_jax import sampling
    from lct_jax.builders import build_objective
    specs = curve_samplers(config) or sampling.configured_samplers(config.sampling, build_objective(config))
    evaluator, new = None, []
    for step in steps:
        if all((step, s.label) in done for s in specs):
            continue
        if evaluator is None:  # reference statistics and samplers once, for every checkpoint
            evaluator = Evaluator(config, workdir, samplers=specs)
        params, desc = cli.load_params(config, workdir, os.path.join(workdir, 'checkpoints', str(step)))
        rows = [dict(r, step=step) for r in evaluator.rows(params, desc)]
        if jax.process_index() == 0:
            results.append_rows(workdir, rows)
            say(f'evaluated step {step}: ' + ', '.join(f'{r["sampler"]} FID {r["fid"]:.4g}' for r in rows))
        new += rows
    if jax.process_index() == 0:
        every = (table1.evaluation_rows(path)[0] or []) if os.path.exists(path) else []
        written = plot_curves([r for r in every if STEP_OF.match(str(r.get('checkpoint', '')))
                               and STEP_OF.match(r['checkpoint']).group(2) == ema and r.get('num_samples') == num],
                              workdir)
        say(f'curves: {", ".join(written)} ({len(new)} new row(s) in {path})')
    return new


def plot_curves(rows: list[dict], out_dir: str) -> list[str]:
    """fid_over_steps.png and fid_over_nfe.png from evaluation rows (the latest row of each
    (step, sampler) counts); the paths written."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    latest = {}
    for r in rows:
        latest[(step_of(r), r['sampler'])] = r
    samplers = sorted({s for _, s in latest}, key=lambda s: min(r['nfe'] for (_, t), r in latest.items() if t == s))
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in samplers:
        pts = sorted((step, r['fid']) for (step, t), r in latest.items() if t == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=s)
    ax.set_xlabel('training step')
    ax.set_ylabel(f'FID ({rows[0].get("features", "")} features)' if rows else 'FID')
    ax.set_title('FID over training')
    ax.legend()
    fig.tight_layout()
    written.append(os.path.join(out_dir, 'fid_over_steps.png'))
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    last = max((step for step, _ in latest), default=None)
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = sorted((r['nfe'], r['fid'], s) for (step, s), r in latest.items() if step == last)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o')
    for nfe, value, s in pts:
        ax.annotate(s, (nfe, value), textcoords='offset points', xytext=(4, 4), fontsize=8)
    ax.set_xscale('log')
    ax.set_xticks(sorted({p[0] for p in pts}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.minorticks_off()
    ax.set_xlabel('NFE (network evaluations per sample)')
    ax.set_ylabel('FID')
    ax.set_title(f'FID over NFE at step {last}')
    fig.tight_layout()
    written.append(os.path.join(out_dir, 'fid_over_nfe.png'))
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written
