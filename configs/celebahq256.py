"""sLCT on CelebA-HQ 256 (27,000 training images -> 32x32x4 SD-VAE latents): Table 1(a).

Paper: 1-NFE FID 7.27 / recall 0.50; 2-NFE FID 6.93 / recall 0.52 (EMA 0.99993,
epoch 1400 = 294,000 steps at global batch 128; the authors trained on 1 GPU).
Variants (comma-separated): `ilct` (paper: 37.15 / 16.84 FID), `ldm` (LDM-8†, the same UNet
trained as a latent diffusion model, Euler 250 NFE: paper FID 8.85), every ablation in
configs/variants.py (expected FIDs there), `smoke` (20 CPU steps on digits).

Encode once, train, evaluate:
  python -m lct_jax.main --config configs/celebahq256.py --workdir $W --mode encode \
      --config.data.image_dir=/data/celeba_hq_256/train --config.autoencoder.weights=/weights/sd-vae-ft-ema.safetensors
  python -m lct_jax.main --config configs/celebahq256.py --workdir $W --config.autoencoder.weights=...
  python -m lct_jax.main --config configs/celebahq256.py --workdir $W --mode evaluate \
      --config.autoencoder.weights=... --config.evaluation.inception_weights=/weights/pt_inception-2015-12-05-6726825d.pth \
      --config.evaluation.reference_dir=/data/celeba_256_jpg
Hardware: any number of GPU/TPU devices (the global batch is split over them).
Wall time: not measured by us (no accelerator here); benchmarks/README.md has
per-step costs measured on CPU.
"""
from configs import base, variants

VARIANTS = variants.PAPER_VARIANTS  # what `--mode=variants` lists and get_config accepts


def get_config(arg=''):
    c = base.get_config()
    c.evaluation.update(run_name='celebahq256', dataset='celebahq256')
    return variants.apply_variants(c, arg, ilct_numbers=(37.15, 16.84, 0.12, 0.24))
