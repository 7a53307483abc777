"""The pixel-space study: sLCT, iLCT and the one-technique ablations on the 8x8 digits
(configs/default.py), 3 seeds each, the same seeds and variants as the latent study
(docs/study/latent/study_latent.py) so that the two sit side by side.

    python -m lct_jax.study status docs/study/pixel/study_pixel.py     # what is done / running / missing
    python -m lct_jax.study run    docs/study/pixel/study_pixel.py     # train + evaluate what is missing, report
    python -m lct_jax.study report docs/study/pixel/study_pixel.py     # aggregate whatever has finished
    python -m lct_jax.study launch docs/study/pixel/study_pixel.py --target=slurm   # one array task per run

Runs live in workdir/study/pixel/runs/<variant>/seed_<s> (--workroot to move them); the
report (results.json, results.md, curves.png) is written beside this file.
Every run: 2,500 steps at batch 64, checkpoints 500, 1000, ..., 2500 kept and each evaluated
with 1-step and 2-step sampling (1,024 samples, EMA 0.99): Fréchet distance in the digits-MLP
feature space (evaluation.features='digits_mlp', 8x8 input) against the 1,797 real digits.
"""
SEEDS = [0, 1, 2]
STEPS = [500, 1000, 1500, 2000, 2500]

# name -> configs/default.py's own variant argument (or a dict with --config.* overrides)
VARIANTS = {
    'sLCT': '',                    # Cauchy + scaling-c + early diffusion loss + exact OT + NsLN
    'iLCT': 'ilct',                # every technique off
    'huber': 'huber',              # Cauchy -> Pseudo-Huber
    'no_ot': 'no_ot',              # exact OT pairing off
    'no_diffusion': 'no_diffusion',  # early-timestep diffusion loss off
    'group_norm': 'group_norm',    # NsLN -> GroupNorm
    # the fitted c(N) moved by c0 / 0.03456 = sqrt(64 / 4096) = 1/8 (objective.py, 'scaling_rescaled')
    'c_rescaled': {'config': '', 'overrides': ['--config.consistency.c_schedule=scaling_rescaled']},
}

STUDY = dict(
    name='pixel',
    config='configs/default.py',
    variants=VARIANTS,
    seeds=SEEDS,
    baseline='sLCT',               # paired differences: variant - sLCT, same seed
    overrides=['--config.train.keep_period=500'],
    eval_steps=STEPS,
    notes='8x8 pixel digits; FD in the digits-MLP features at 8x8',
)
