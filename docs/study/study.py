"""The CPU-scale reproduction study on the embedded digits: sLCT vs iLCT and one-technique ablations.

  python docs/study/study.py [--variants '' ilct no_ot ...] [--out docs/study] [--workroot /tmp/study]

Trains `configs/default.py:<variant>` for each variant with the same budget
(2,500 steps at batch 64; every 500th checkpoint kept), then evaluates every
checkpoint with 1-step and 2-step sampling (1,024 samples, EMA 0.99) by the
Fréchet distance in the feature space of a digits classifier
(`evaluation.features='digits_mlp'`), plus precision / recall (k = 3) in the
same space. Writes results.json, results.md, curves.png and the final grids.

`--variants ldm` adds the LDM-8† baseline of Table 1 (`configs/default.py:ldm`: the same
UNet, data and budget trained as an EDM latent diffusion model), sampled with the EDM ODE:
Euler 250 steps (250 NFE) at every checkpoint, and Heun at 3 / 5 / 10 / 20 / 40 steps
(5 / 9 / 19 / 39 / 79 NFE) at the last one.
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

VARIANTS = ['', 'ilct', 'no_ot', 'no_diffusion', 'huber', 'fixed_c', 'group_norm']   # + 'ldm' on request
STEPS = (500, 1000, 1500, 2000, 2500)
# The LDM-8† baseline (configs/default.py:ldm) is sampled with the EDM ODE: Euler 250 steps (Table 1's
# 250 NFE) and Heun at a few step counts (2n - 1 NFE each).
LDM_SAMPLERS = (('euler', 250), ('heun', 3), ('heun', 5), ('heun', 10), ('heun', 20), ('heun', 40))
# Every LDM sampler at the last checkpoint (the table); the earlier checkpoints (the curves) with Euler 250
# only: all six at every checkpoint would be 5 x 401 NFE x 1,024 samples, about 20 min of this CPU.
LDM_CURVE_SAMPLER = ('euler', 250)


def train(variant, workdir):
    cmd = [sys.executable, '-m', 'lct_jax.main', f'--config=configs/default.py:{variant}' if variant
           else '--config=configs/default.py', f'--workdir={workdir}', '--config.train.keep_period=500']
    print(' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def evaluate(variant, workdir, steps=STEPS):
    from configs import default
    from lct_jax.modes import run_weights, sample as sample_mode
    from lct_jax.evaluation import reference as reference_mod
    from lct_jax import builders as builders_mod
    from lct_jax import sampling
    from lct_jax.sampling import ode as ode_sampling
    from lct_jax.builders import build_objective
    from lct_jax.evaluation import fid, precision_recall
    from lct_jax.evaluation.features import make_features
    config = default.get_config(variant)
    features = make_features(config)
    real = reference_mod.reference_features(config, workdir, {'fid': features}, {'fid': None})['fid']
    mu_r, sigma_r = fid.statistics(real)
    normalizer = builders_mod.make_normalizer(config, workdir)
    obj = build_objective(config)
    if variant == 'ldm':
        curve = [ode_sampling.ode_spec(*LDM_CURVE_SAMPLER, obj)]
        last = [ode_sampling.ode_spec(m, n, obj) for m, n in LDM_SAMPLERS]
    else:
        curve = last = sampling.configured_samplers(config.sampling, obj)
    rows = []
    for step in steps:
        params, desc = run_weights.load_params(config, workdir, os.path.join(workdir, 'checkpoints', str(step)))
        for spec in (last if step == STEPS[-1] else curve):
            images, _ = sample_mode.generate(config, params, spec, config.sampling.num_samples, normalizer,
                                     show_progress=False)
            feats = features(images)
            p, r = precision_recall.precision_recall(real, feats, 3)
            rows.append({'variant': variant or 'sLCT', 'step': step, 'sampler': spec.label, 'nfe': spec.nfe,
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
            # the LDM baseline appears in both panels as its curve sampler's (Euler 250 NFE)
            want = '{}-{}'.format(*LDM_CURVE_SAMPLER) if v == 'ldm' else sampler
            pts = [(r['step'], r['fd_digits']) for r in rows if r['variant'] == v and r['sampler'] == want]
            if pts:
                ax.plot(*zip(*pts), marker='o', label=f'ldm ({want})' if v == 'ldm' else v)
        ax.set_title(f'{sampler} sampling'); ax.set_xlabel('training step'); ax.set_yscale('log')
    axes[0].set_ylabel('Fréchet distance (digits-classifier features)')
    axes[1].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def table(rows):
    last = [r for r in rows if r['step'] == STEPS[-1]]
    lines = ['| variant | sampler | NFE | FD (digits features) | precision | recall |', '|---|---|---|---|---|---|']
    lines += [f"| {r['variant']} | {r['sampler']} | {r.get('nfe', 1 if r['sampler'] == '1-step' else 2)} "
              f"| {r['fd_digits']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |" for r in last]
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--variants', nargs='*', default=VARIANTS)
    p.add_argument('--out', default=os.path.join(ROOT, 'docs', 'study'))
    p.add_argument('--workroot', default='/tmp/lct_study')
    p.add_argument('--skip-train', action='store_true')
    p.add_argument('--final-only', action='store_true', help='evaluate the last checkpoint only (no curves)')
    a = p.parse_args()
    path = os.path.join(a.out, 'results.json')
    rows = json.load(open(path)) if os.path.exists(path) else []
    for v in a.variants:
        wd = os.path.join(a.workroot, v or 'slct')
        if not a.skip_train:
            train(v, wd)
        new = evaluate(v, wd, STEPS[-1:] if a.final_only else STEPS)
        rows = [r for r in rows if r['variant'] != (v or 'sLCT')] + new
        json.dump(rows, open(path, 'w'), indent=1)
        # the grids training wrote: the ldm config samples them with Euler 250
        for label in (('euler250',) if v == 'ldm' else ('1step', '2step')):
            shutil.copy(os.path.join(wd, 'samples', f'step_{STEPS[-1]:07d}_{label}.png'),
                        os.path.join(a.out, f'grid_{v or "slct"}_{label}.png'))
        plot(rows, os.path.join(a.out, 'curves.png'))
        with open(os.path.join(a.out, 'results.md'), 'w') as f:
            f.write(table(rows))


if __name__ == '__main__':
    main()
