"""FID over training steps and over NFE: which checkpoints `--mode=evaluate --checkpoints=all` (or
`--checkpoints=10,20`; `--checkpoint=all` and `--checkpoint=10,20` are the same) evaluates, which
it has already, and the plots drawn from every row in results.json (modes/evaluate.py runs them):

  fid_over_steps.png   FID against the training step, one line per sampler
  fid_over_nfe.png     FID against the number of network evaluations at the latest step
                       evaluated (the configured samplers: 1-step and 2-step, or Euler / Heun)
"""
from __future__ import annotations

import os
import re

from lct_jax import writer

STEP_OF = re.compile(r'^step (\d+):(.+)$')


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


def rows_of(rows: list[dict], ema: str, num: int) -> list[dict]:
    """The rows of checkpoint evaluations with this EMA and sample count (what the curves draw)."""
    return [r for r in rows if STEP_OF.match(str(r.get('checkpoint', '')))
            and STEP_OF.match(r['checkpoint']).group(2) == ema and r.get('num_samples') == num]


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
    writer.save_figure(fig, written[-1], dpi=100)
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
    writer.save_figure(fig, written[-1], dpi=100)
    plt.close(fig)
    return written
