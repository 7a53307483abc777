"""The tail study's levels and its study files' one definition (each level's study.py calls `study`).

The tail dial is data.tail_power = p (lct_jax/data/tails.py): each standardised latent element u
becomes u (1 + u^2)^(p/2) / k_p before training, and samples are mapped back exactly before
decoding. Every level is the latent study (docs/study/latent/study_latent.py: the same committed,
pinned autoencoder and latents, UNet, budget, seeds, checkpoints and evaluation) with one setting
changed. Level p0 is "as encoded": that study's sLCT, iLCT and huber runs, reused as they were
(its export, copied into p0/runs/), since their config is this one's to the key.

    python -m lct_jax.study run    docs/study/tails/p1/study.py --parallel 2 --cpus-per-run 1
    python -m lct_jax.study report docs/study/tails/p1/study.py
    python docs/study/tails/make_figures.py     # levels.json, box plots, paired differences, figure

Measured on the pinned latents (per-element standardised, all 1,797 x 256 elements; a Gaussian has
0.0002% beyond the outer fences, Student-t(3) 1.28%):

    p     std    excess kurtosis   beyond inner   beyond outer fences   largest |value|
    0     1.00        1.81            0.75%           0.082%               13.3
    0.5   1.05       28.3             2.86%           0.565%               34.9
    1     1.21      288               6.12%           1.615%               88.1
    2     2.55     6750              13.19%           5.438%              499

(times sigma_data = 0.5 in training units). docs/study/tails/README.md says why this map.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in docs/
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'latent'))
from study_latent import CONFIG, PINS, SEEDS, SHARED, STEPS  # noqa: E402  the latent study's, unchanged

# level name -> data.tail_power
LEVELS = {'p0': 0.0, 'p0.5': 0.5, 'p1': 1.0, 'p2': 2.0}
# sLCT, the iLCT baseline, and the one swap the mechanism is about (Cauchy -> Pseudo-Huber)
VARIANTS = {'sLCT': '', 'iLCT': 'ilct', 'huber': 'huber'}


def study(level: str) -> dict:
    power = LEVELS[level]
    # p0 passes no tail flag at all: its runs are the latent study's, recorded without one
    dial = [f'--config.data.tail_power={power}'] if power else []
    return dict(
        name=f'tails_{level}',
        config=CONFIG,
        variants=VARIANTS,
        seeds=SEEDS,
        baseline='sLCT',
        overrides=['--config.train.keep_period=500'] + SHARED + dial,
        eval_steps=STEPS,
        pins=PINS,
        notes=f'the latent study at tail level {level} (data.tail_power={power}); FD on decoded samples',
    )
