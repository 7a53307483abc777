"""sLCT in the latent space of a small KL autoencoder trained on the digits: the paper's regime at CPU scale.

The SD-VAE's geometry, small: the 1,797 digits upscaled to 32x32 (bicubic),
a KL autoencoder with two down-samplings (32x32x1 -> 8x8x4, factor 4 per side,
4 latent channels), trained with reconstruction L1 + a small KL weight (no GAN,
no LPIPS; lct_jax/autoencoder_training.py), then sLCT on its per-element
normalised latents (spec §2.3) with the embedded default's UNet and budget.

Commands ($W: one folder; the autoencoder and its latents can be shared by many runs):
  python -m lct_jax.main --config configs/digits_latent.py --workdir $W/ae --mode=train_autoencoder
  python -m lct_jax.main --config configs/digits_latent.py --workdir $W/ae --mode=encode \
      --config.autoencoder.weights=$W/ae/vae --config.data.latent_dir=$W/latents
  python -m lct_jax.main --config configs/digits_latent.py --workdir $W/ae --mode=analyze \
      --config.autoencoder.weights=$W/ae/vae --config.data.latent_dir=$W/latents    # latents vs pixels
  python -m lct_jax.main --config configs/digits_latent.py --workdir $W/slct \
      --config.autoencoder.weights=$W/ae/vae --config.data.latent_dir=$W/latents
Hardware: 2 CPU cores. The autoencoder (400 steps at batch 32) took 7 min 17 s here (2 cores shared
with other jobs, load ~5), reaching 37.4 dB PSNR (MSE 12.7 on the 0-255 scale) over the 1,797 digits;
encode 34 s, analyze ~30 s. docs/study/README.md has the measurements (latents vs pixels: kurtosis,
outlier fractions) and the study (docs/study/latent/study_latent.py).

Variants: those of configs/default.py (ilct, no_ot, no_diffusion, huber, fixed_c, group_norm, ldm,
meanflow, smoke) plus `kl_sd` (the autoencoder's KL weight at SD's 1e-6, the default here) and `kl_1e-3`,
`kl_1e-4` (stronger KL pulls: more Gaussian latents), `ae_long` (2,400 autoencoder steps: the heaviest
latent tails measured, the latent study's setting) and `ae_smoke` (a few autoencoder steps).
"""
import ml_collections

from configs import default, variants

LATENT = dict(img_resolution=8, in_channels=4, out_channels=4)
# d = 8 * 8 * 4 = 256 latent elements: iCT's c0 = 0.00054 * sqrt(d) = 0.00864 (spec §6-7).
C0_ICT_256 = 0.00054 * 16.0
KL_WEIGHTS = {'kl_sd': 1e-6, 'kl_1e-4': 1e-4, 'kl_1e-3': 1e-3}
# ae_long: the autoencoder trained 6x longer (2,400 steps, 43 epochs): the setting whose normalised latents
# have the heaviest tails measured here (excess kurtosis 1.98 vs 0.44; docs/study/README.md)
AE_LONG = dict(steps=2400, log_every=200, checkpoint_every=400)
# name -> one line: what `--mode=variants` lists and get_config accepts (default.py's and these).
VARIANTS = {
    **default.VARIANTS,
    'kl_sd': "the autoencoder's KL weight at SD's 1e-6 (the default here)",
    'kl_1e-4': 'autoencoder KL weight 1e-4 (a stronger pull: more Gaussian latents)',
    'kl_1e-3': 'autoencoder KL weight 1e-3',
    'ae_long': '2,400 autoencoder steps: the heaviest latent tails measured (the latent study)',
    'ae_smoke': 'a few autoencoder steps (the tests)',
}


def get_config(variant: str = ''):
    names = [v for v in variant.split(',') if v]
    for name in names:
        if name not in VARIANTS:
            raise variants.unknown_variant_error(name, VARIANTS)
    own = [n for n in names if n in KL_WEIGHTS or n in ('ae_smoke', 'ae_long')]
    c = default.get_config(','.join(n for n in names if n not in own))
    c.unlock()
    c.model.update(LATENT)
    # MeanFlow keeps its one pooled scale (configs/variants.py:apply_meanflow); sLCT's is per element.
    c.data.update(resolution=32, normalize='scalar' if c.objective in ('meanflow', 'imf') else 'per_element')
    c.autoencoder.update(kind='kl', weights='', scale_factor=1.0)   # weights: <ae workdir>/vae (see above)
    c.consistency.c0 = C0_ICT_256
    c.evaluation.run_name = 'digits_latent' + (':' + variant if variant else '')
    c.autoencoder_training = ml_collections.ConfigDict(dict(
        # narrow, to fit a shared 2-core CPU: (32, 64, 64) at batch 64 ran at ~10 s/step here under load
        latent_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
        reconstruction='l1', kl_weight=1e-6,     # SD's weight on the KL (LDM autoencoder, rec summed per image)
        steps=400, batch_size=32, lr=1e-3, seed=0, log_every=50, checkpoint_every=100,
    ))
    for name in own:
        if name in KL_WEIGHTS:
            c.autoencoder_training.kl_weight = KL_WEIGHTS[name]
        elif name == 'ae_long':
            c.autoencoder_training.update(AE_LONG)
        else:
            c.autoencoder_training.update(steps=4, batch_size=8, log_every=2, checkpoint_every=2)
    c.lock()
    return c
