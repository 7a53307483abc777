"""The tail study's numbers and figures, from the study tool's reports and `--mode=analyze`.

    python docs/study/tails/make_figures.py [--analyze RUN ...]

1. levels.json: per level (increasing tail power), `--mode=analyze`'s statistics of the latents
   as training sees them (excess kurtosis, fractions beyond Tukey's inner and outer fences, std,
   largest value) and of the temporal differences (TD) at N = 21, with the run they came from.
   --analyze names one trained sLCT run per level (with its checkpoints: the TD values need the
   weights of a checkpoint that trains at N = 21, step 500 of these runs), in LEVELS order; without
   it the committed levels.json is kept and only step 2 runs.
2. boxplots.png: the latents and the TD values of every level, box and whiskers at Tukey's outer
   fences (3 IQR), outliers in red: the paper's Fig. 1, with the tail level as the variable.
3. paired.json + delta.png: from each level's report (<level>/results.json, written by
   `python -m lct_jax.study report`), the paired differences sLCT - iLCT and sLCT - huber at the
   final step, per sampler, with Student-t 95% intervals over the seeds both have, and Δ against
   the outer-fence fraction of the level.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

from levels import LEVELS  # noqa: E402

from lct_jax.study.aggregate import t_interval  # noqa: E402


def analyze(runs: list[str]) -> dict:
    """levels.json's content from one trained sLCT run per level (--mode=analyze's computation)."""
    import configs.default  # noqa: F401  (the configs package, for the recorded config's base)
    from configs import digits_latent
    from lct_jax.modes.analyze import analyze_dataset
    from lct_jax.modes.recorded import run_config
    from lct_jax.evaluation.analysis import thinned
    out, sets = [], {}
    for (level, power), run in zip(LEVELS.items(), runs):
        config = run_config(digits_latent.get_config('ae_long'), run, {})
        assert abs(float(config.data.tail_power) - power) < 1e-12, (run, config.data.tail_power, power)
        result = analyze_dataset(config, run)
        s = result['summary']
        out.append({'level': level, 'tail_power': power, 'run': os.path.relpath(run, ROOT) if run.startswith(ROOT) else run,
                    'latents': s['latents'], 'temporal_differences': s['temporal_differences']})
        sets[level] = (thinned(result['sets']['latents'], 100_000), thinned(result['sets']['TD (N=21)'], 100_000))
    draw_level_boxplots(sets, os.path.join(HERE, 'boxplots.png'))
    return {'levels': out}


def draw_level_boxplots(sets: dict, path: str) -> str:
    """Two panels, each on its own symlog axis (the TD values are ~10x smaller than the latents, and
    the heaviest level's outliers ~100x larger than its box): box and whiskers at the outer fences
    (3 IQR), outliers in red, one box per level."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from lct_jax import writer
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, which, title, linthresh in ((axes[0], 0, 'latents as training sees them', 1.0),
                                        (axes[1], 1, 'TD values at N = 21 (checkpoint 500)', 0.1)):
        ax.boxplot([v[which] for v in sets.values()], whis=3.0,
                   flierprops=dict(marker='.', markerfacecolor='red', markeredgecolor='red', markersize=2))
        ax.set_xticks(range(1, len(sets) + 1), [f'tail_power {LEVELS[k]:g}' for k in sets], fontsize=8)
        ax.set_yscale('symlog', linthresh=linthresh)
        ax.set_title(title, fontsize=9)
    fig.suptitle('Per tail level: whiskers at the outer fences (3 IQR), outliers in red (symlog axes)', fontsize=9)
    fig.tight_layout()
    writer.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def paired(levels_json: dict) -> dict:
    out = {}
    for level in LEVELS:
        path = os.path.join(HERE, level, 'results.json')
        if not os.path.exists(path):
            continue
        report = json.load(open(path))
        step = report['final_step']
        rows = [r for r in report['runs'] if r['step'] == step]
        entry = {'final_step': step, 'seeds': {}, 'differences': {}}
        for sampler in ('1-step', '2-step'):
            fd = {(r['variant'], r['seed']): r['fd'] for r in rows if r['sampler'] == sampler}
            for other in ('iLCT', 'huber'):
                seeds = sorted(s for (v, s) in fd if v == 'sLCT' and ('sLCT', s) in fd and (other, s) in fd)
                d = [fd[('sLCT', s)] - fd[(other, s)] for s in seeds]
                if len(d) >= 2:
                    lo, hi = t_interval(d)
                    entry['differences'][f'sLCT - {other}, {sampler}'] = {
                        'mean': float(np.mean(d)), 't95': [float(lo), float(hi)], 'seeds': seeds, 'values': d,
                        'reading': 'sLCT lower FD' if hi < 0 else 'sLCT higher FD' if lo > 0 else 'no evidence'}
            for v in ('sLCT', 'iLCT', 'huber'):
                vals = [fd[(v, s)] for (vv, s) in sorted(fd) if vv == v]
                if vals:
                    entry['seeds'][f'{v}, {sampler}'] = {'mean': float(np.mean(vals)), 'std': float(np.std(vals, ddof=1))
                                                         if len(vals) > 1 else 0.0, 'n': len(vals)}
        stats = next((x for x in levels_json.get('levels', []) if x['level'] == level), None)
        if stats:
            entry['fraction_beyond_outer_fences'] = stats['latents']['fraction_beyond_outer_fences']
            entry['excess_kurtosis'] = stats['latents']['excess_kurtosis']
        out[level] = entry
    return out


def delta_figure(result: dict, path: str) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from lct_jax import writer
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, sampler in zip(axes, ('1-step', '2-step')):
        for other, colour, shift in (('iLCT', 'tab:blue', 0.97), ('huber', 'tab:orange', 1.03)):
            xs, ms, los, his = [], [], [], []
            for level, e in result.items():
                d = e['differences'].get(f'sLCT - {other}, {sampler}')
                if d is None or 'fraction_beyond_outer_fences' not in e:
                    continue
                xs.append(100 * e['fraction_beyond_outer_fences'] * shift)
                ms.append(d['mean'])
                los.append(d['mean'] - d['t95'][0])
                his.append(d['t95'][1] - d['mean'])
            ax.errorbar(xs, ms, yerr=[los, his], marker='o', capsize=4, color=colour, label=f'sLCT - {other}')
        ax.axhline(0.0, color='grey', lw=0.8)
        ax.set_xscale('log')
        ax.set_xlabel('latent elements beyond the outer fences (%)')
        ax.set_title(f'{sampler} sampling, final step')
    axes[0].set_ylabel('paired Δ FD (sLCT − baseline), Student-t 95%')
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    writer.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--analyze', nargs='*', default=None, help='one trained sLCT run per level, in LEVELS order')
    a = p.parse_args()
    from lct_jax import writer
    levels_path = os.path.join(HERE, 'levels.json')
    if a.analyze:
        if len(a.analyze) != len(LEVELS):
            raise SystemExit(f'--analyze needs {len(LEVELS)} runs ({", ".join(LEVELS)}), got {len(a.analyze)}')
        writer.write_json(levels_path, analyze(a.analyze))
    levels_json = json.load(open(levels_path)) if os.path.exists(levels_path) else {}
    result = paired(levels_json)
    writer.write_json(os.path.join(HERE, 'paired.json'), result)
    for level, e in result.items():
        print(level, json.dumps({k: (round(v['mean'], 2), [round(x, 2) for x in v['t95']], v['reading'])
                                 for k, v in e['differences'].items()}))
    if all('fraction_beyond_outer_fences' in e for e in result.values()):
        delta_figure(result, os.path.join(HERE, 'delta.png'))
    else:
        print('no delta.png: levels.json lacks a level (run with --analyze)')


if __name__ == '__main__':
    main()
