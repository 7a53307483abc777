"""The CPU-scale reproduction study on the embedded digits: sLCT vs iLCT and one-technique ablations.

  python docs/study/study.py [--variants '' ilct no_ot ...] [--out docs/study] [--workroot /tmp/study]

Trains `configs/default.py:<variant>` for each variant with the same budget
(2,500 steps at batch 64; every 500th checkpoint kept), then evaluates every
checkpoint with 1-step and 2-step sampling (1,024 samples, EMA 0.99) by the
Fréchet distance in the feature space of a digits classifier
(`evaluation.features='digits_mlp'`), plus precision / recall (k = 3) in the
same space. Writes results.json, results.md, curves.png and the final grids.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

VARIANTS = ['', 'ilct', 'no_ot', 'no_diffusion', 'huber', 'fixed_c', 'group_norm']
STEPS = (500, 1000, 1500, 2000, 2500)


def train(variant, workdir):
    cmd = [sys.executable, '-m', 'lct_jax.main', f'--config=configs/default.py:{variant}' if variant
           else '--config=configs/default.py', f'--workdir={workdir}', '--config.train.keep_period=500']
    print(' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def evaluate(variant, workdir):
    from configs import default
    from lct_jax import cli
    from lct_jax.evaluation import fid, precision_recall
    from lct_jax.evaluation.features import make_features
    config = default.get_config(variant)
    features = make_features(config)
    real = cli.reference_features(config, workdir, features)
    mu_r, sigma_r = fid.statistics(real)
    normalizer = cli.normalizer_of(config, workdir)
    rows = []
    for step in STEPS:
        params, desc = cli.load_params(config, workdir, os.path.join(workdir, 'checkpoints', str(step)))
        for label, ts in (('1-step', (0,)), ('2-step', tuple(config.sampling.ts))):
            images, _ = cli.generate(config, params, ts, config.sampling.num_samples, normalizer,
                                     show_progress=False)
            feats = features(images)
            p, r = precision_recall.precision_recall(real, feats, 3)
            rows.append({'variant': variant or 'sLCT', 'step': step, 'sampler': label,
                         'fd_digits': fid.frechet_distance(*fid.statistics(feats), mu_r, sigma_r),
                         'precision': p, 'recall': r})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, sampler in zip(axes, ('1-step', '2-step')):
        for v in dict.fromkeys(r['variant'] for r in rows):
            pts = [(r['step'], r['fd_digits']) for r in rows if r['variant'] == v and r['sampler'] == sampler]
            ax.plot(*zip(*pts), marker='o', label=v)
        ax.set_title(f'{sampler} sampling'); ax.set_xlabel('training step'); ax.set_yscale('log')
    axes[0].set_ylabel('Fréchet distance (digits-classifier features)')
    axes[1].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def table(rows):
    last = [r for r in rows if r['step'] == STEPS[-1]]
    lines = ['| variant | sampler | FD (digits features) | precision | recall |', '|---|---|---|---|---|']
    lines += [f"| {r['variant']} | {r['sampler']} | {r['fd_digits']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |"
              for r in last]
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--variants', nargs='*', default=VARIANTS)
    p.add_argument('--out', default=os.path.join(ROOT, 'docs', 'study'))
    p.add_argument('--workroot', default='/tmp/lct_study')
    p.add_argument('--skip-train', action='store_true')
    a = p.parse_args()
    path = os.path.join(a.out, 'results.json')
    rows = json.load(open(path)) if os.path.exists(path) else []
    for v in a.variants:
        wd = os.path.join(a.workroot, v or 'slct')
        if not a.skip_train:
            train(v, wd)
        rows = [r for r in rows if r['variant'] != (v or 'sLCT')] + evaluate(v, wd)
        json.dump(rows, open(path, 'w'), indent=1)
        for label in ('1step', '2step'):
            shutil.copy(os.path.join(wd, 'samples', f'step_{STEPS[-1]:07d}_{label}.png'),
                        os.path.join(a.out, f'grid_{v or "slct"}_{label}.png'))
        plot(rows, os.path.join(a.out, 'curves.png'))
        with open(os.path.join(a.out, 'results.md'), 'w') as f:
            f.write(table(rows))


if __name__ == '__main__':
    main()
