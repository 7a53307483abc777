"""`--mode=analyze`: the paper's statistical look at the latents (spec §19, Fig. 1), written to
<workdir>/analysis/ (summary.json, boxplot.png) and printed:

- the training latents as training sees them (normalised, with the tail dial data.tail_power);
- the source pixels, scaled to the same std (when the config's image source is at hand);
- for a consistency run, the temporal differences (TD) f_theta(x + sigma_i z) - f_theta(x +
  sigma_{i+1} z) at N = 21 (the paper's Fig. 1 shows N = 21): with the run's raw weights from its
  newest checkpoint whose step trains at N = 21, else (no such checkpoint) with the untrained
  network, which summary.json says.

Reads the run's record like sample and evaluate (so a run's tail level is analysed as trained).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import writer
from lct_jax.builders import build_model, build_objective, make_normalizer
from lct_jax.data.coupling import couple_rows
from lct_jax.data.latents import LatentDataset, latent_dir_of
from lct_jax.data.sources import make_source
from lct_jax.evaluation.analysis import draw_boxplots, tukey_summary
from lct_jax.modes.recorded import run_config
from lct_jax.objectives.slct import SLCT, pair_outputs
from lct_jax.train.checkpoints import load_numpy

TD_SCALES = 21        # the paper's Fig. 1
TD_EXAMPLES = 512     # rows of the TD batch (x, its OT-paired noise, one drawn interval each)


def td_checkpoint(workdir: str, objective: SLCT) -> tuple[str | None, int | None]:
    """(step dir, step) of the newest checkpoint whose step trains at N = TD_SCALES, or (None, None)."""
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    steps = sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) if os.path.isdir(ckpt_dir) else []
    at_n = [s for s in steps if int(objective.num_scales(s)) == TD_SCALES]
    return (os.path.join(ckpt_dir, str(at_n[-1])), at_n[-1]) if at_n else (None, None)


def temporal_differences(config, workdir: str, latents: np.ndarray) -> tuple[np.ndarray, dict]:
    """(TD values, what they are) for a consistency run: student - target of `pair_outputs` at a
    step where N = 21, on the run's raw weights (or the untrained network), the noise paired to the
    rows as the run pairs it (coupling.method)."""
    objective = build_objective(config)
    model = build_model(config)
    path, step = td_checkpoint(workdir, objective)
    if path is not None:
        params, source = load_numpy(path)['params'], f'checkpoint {step} (raw weights)'
    else:
        # jitted, as training makes its step-0 state (train/loop.py): the same weights, and one
        # compiled program instead of one per layer (eagerly, 11 s of compiling on a CPU)
        shape = (1, *latents.shape[1:])
        params = jax.jit(model.init)(jax.random.key(config.seed), jnp.zeros(shape), jnp.zeros((1,)))['params']
        # the first step of the N = 21 stage, for the schedule; the weights are the untrained ones
        step = next(s for s in range(config.total_steps + 1) if int(objective.num_scales(s)) == TD_SCALES)
        source = 'the untrained network (no checkpoint of this run trains at N = 21)'
    key_noise, key_pairs = jax.random.split(jax.random.key(config.seed + 1))
    x = jnp.asarray(latents)
    z = jax.random.normal(key_noise, x.shape, jnp.float32)
    z, _ = couple_rows(x, z, config.coupling.method, config.coupling.sinkhorn_epsilon)
    student, target, *_ = jax.jit(lambda p, x_, z_: pair_outputs(p, model.apply, x_, z_, key_pairs, step, objective,
                                                                  train=False))(params, x, z)
    return np.asarray(student - target), {'weights': source, 'step': step, 'num_scales': TD_SCALES,
                                           'rows': int(x.shape[0]), 'coupling': config.coupling.method}


def analyze_dataset(config, workdir: str, max_examples: int = 2048) -> dict:
    d = latent_dir_of(config, workdir)
    ds = LatentDataset(d)
    n = min(len(ds), max_examples)
    idx = np.linspace(0, len(ds) - 1, n).astype(int)
    lat = make_normalizer(config, workdir).normalize(ds.read_batch(idx))
    sets = {'latents': lat}
    try:
        src = make_source(config.data)
        pix = src.images(idx).astype(np.float64) / 127.5 - 1.0
        sets['pixels'] = (pix - pix.mean()) / pix.std() * lat.std()
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f'analyze: pixels unavailable ({e}); latents only')
    summary = {name: tukey_summary(v) for name, v in sets.items()}
    summary['tail_power'] = float(config.data.get('tail_power', 0.0))
    if config.objective == 'slct':
        td, about = temporal_differences(config, workdir, lat[:TD_EXAMPLES].astype(np.float32))
        sets[f'TD (N={TD_SCALES})'] = td
        summary['temporal_differences'] = {**tukey_summary(td), **about}
    out = os.path.join(workdir, 'analysis')
    os.makedirs(out, exist_ok=True)
    writer.write_json(os.path.join(out, 'summary.json'), summary)
    draw_boxplots(sets, os.path.join(out, 'boxplot.png'))
    print(json.dumps(summary, indent=1))
    return {'summary': summary, 'sets': sets}


def run(config, workdir: str, flags) -> None:
    analyze_dataset(run_config(config, workdir, flags.overrides), workdir)
