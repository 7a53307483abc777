"""The latent-space study: sLCT, iLCT and the one-technique ablations in the latent space of a
small KL autoencoder trained on the digits (configs/digits_latent.py: 32x32x1 -> 8x8x4, the
SD-VAE's factor-4 geometry at small scale), 3 seeds each; the same seeds and variants as the
pixel study (docs/study/pixel/study_pixel.py), plus `fixed_c`, and two baselines from other
families on the same latents, UNet and budget: MeanFlow (`meanflow`) and the LDM-8† diffusion
model (`ldm`).

    python -m lct_jax.study status docs/study/latent/study_latent.py   # what is done / running / missing
    python -m lct_jax.study run    docs/study/latent/study_latent.py   # prepare, train + evaluate, report
    python -m lct_jax.study report docs/study/latent/study_latent.py   # aggregate whatever has finished
    python -m lct_jax.study launch docs/study/latent/study_latent.py --target=slurm

Inputs, committed and pinned: every run reads the autoencoder in docs/study/latent/inputs/vae and
the 1,797 digits encoded with it in docs/study/latent/inputs/latents (read only). The study pins
both by sha256 (PINS below; lct_jax/study/pins.py): the runner refuses to start or resume a run on
other inputs, and the report leaves out any run that recorded other ones. Why committed rather
than remade by a `prepare` step: the same config and seed retrained on another machine gave another
autoencoder (docs/study/README.md, "Why the inputs are committed"). They were made by (W a scratch dir)

    python -m lct_jax.main --config=configs/digits_latent.py:ae_long --workdir=$W --mode=train_autoencoder
    python -m lct_jax.main --config=configs/digits_latent.py:ae_long --workdir=$W --mode=encode \
        --config.autoencoder.weights=$W/vae --config.data.latent_dir=$W/latents
    python -m lct_jax.main --config=configs/digits_latent.py:ae_long --workdir=$W --mode=analyze \
        --config.autoencoder.weights=$W/vae --config.data.latent_dir=$W/latents

then `cp -r $W/vae $W/latents docs/study/latent/inputs/`; the analysis is in docs/study/latent/analysis/.

Every run: 2,500 steps at batch 64 on the per-element-normalised latents (MeanFlow: one pooled mean and
std, to std 1, as its authors scale the SD latents by one number), checkpoints 500, ...,
2500 each evaluated with 1-step and 2-step sampling (LDM-8†: Euler, 250 NFE; 1,024 samples, EMA 0.99),
decoded to 32x32 and measured by the
Fréchet distance in the digits-MLP feature space (an MLP trained on the 32x32-upscaled real
digits) against the decoded training latents (the autoencoder's reconstructions: the best
the generator can reach through this decoder).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pixel'))
sys.dont_write_bytecode = True  # no __pycache__ in docs/
from study_pixel import SEEDS, STEPS, VARIANTS as PIXEL_VARIANTS  # noqa: E402  the same variants and seeds

# ... and one more, latent only: sLCT with iLCT's fixed c = c0 (0.00864 at d = 256) instead of the fitted
# c(N), the direct test of the lead in docs/study/README.md (sLCT stops improving once c(N) < c0)
VARIANTS = {**PIXEL_VARIANTS, 'fixed_c': 'fixed_c',
            # ... and MeanFlow (Geng et al. 2025; configs/variants.py:apply_meanflow) trained from scratch on the
            # same latents, UNet (taking two times) and budget, sampled in 1 and 2 steps from the same noise
            'meanflow': 'meanflow',
            # ... and the LDM-8† baseline (configs/default.py:ldm: the same UNet as an EDM latent diffusion
            # model, Euler 250 NFE), the diffusion row MeanFlow and sLCT are set beside
            'ldm': 'ldm',
            # ... and the 2025 state of the art of few-step training from scratch (issue 32): sCT
            # (continuous-time consistency in TrigFlow, variants.apply_sct) and improved MeanFlow
            # (variants.apply_imf), on the same latents, UNet and budget
            'sct': 'sct', 'imf': 'imf'}

# the autoencoder's setting (a configs/digits_latent.py variant; '' = its default, 400 steps at KL weight
# 1e-6): ae_long, 2,400 steps, whose normalised latents have the heaviest tails measured (docs/study/README.md)
AUTOENCODER = 'ae_long'
CONFIG = 'configs/digits_latent.py' + (f':{AUTOENCODER}' if AUTOENCODER else '')
INPUTS = '{root}/docs/study/latent/inputs'
SHARED = [f'--config.autoencoder.weights={INPUTS}/vae', f'--config.data.latent_dir={INPUTS}/latents']
PINS = {  # `python -m lct_jax.study pins docs/study/latent/study_latent.py` checks them
    f'{INPUTS}/vae': 'c587b83cb9d40efb51b8f7ba6a2c497fd6fc6c18813dc87be937967320ef5124',
    f'{INPUTS}/latents': 'edeb3fcaa6027961bb276e689439ba87cf7df341e74f14752ebbfaa29171e9e4',
}

STUDY = dict(
    name='latent',
    config=CONFIG,
    variants=VARIANTS,
    seeds=SEEDS,
    baseline='sLCT',
    overrides=['--config.train.keep_period=500'] + SHARED,
    eval_steps=STEPS,
    pins=PINS,
    notes='8x8x4 latents of a small KL autoencoder on the 32x32 digits; FD on decoded samples',
)
