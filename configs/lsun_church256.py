"""sLCT on LSUN Church-outdoor 256 (120,000 images + precomputed flips = 240,000 latents): Table 1(b).

Paper: 1-NFE FID 8.87 / recall 0.47; 2-NFE FID 7.71 / recall 0.48, 1.8K epochs at
total batch 256 (= floor(240,000 / 256) * 1,800 = 1,686,600 steps over the flip
set). Which exact run produced these numbers is uncertain (spec §13, §21).
Variants: `ilct` (paper 52.45 / 24.67), `ldm` (LDM-8†, Euler 250 NFE: paper FID 10.81), the
ablations of configs/variants.py, `smoke`.

  python -m lct_jax.main --config configs/lsun_church256.py --workdir $W --mode encode \
      --config.data.image_dir=/data/lsun_church_train --config.autoencoder.weights=...
  python -m lct_jax.main --config configs/lsun_church256.py --workdir $W --config.autoencoder.weights=...
Hardware / wall time: as configs/celebahq256.py.
"""
from configs import base, variants

VARIANTS = variants.PAPER_VARIANTS  # what `--mode=variants` lists and get_config accepts


def get_config(arg=''):
    c = base.get_config()
    c.batch_size = 256
    c.total_steps = (240_000 // 256) * 1800
    c.data.update(flips=True, expected_count=240_000)
    c.evaluation.update(run_name='lsun_church256', dataset='lsun_church256', paper_fid_1step=8.87,
                        paper_fid_2step=7.71, paper_recall_1step=0.47, paper_recall_2step=0.48)
    return variants.apply_variants(c, arg, ilct_numbers=(52.45, 24.67, 0.11, 0.17))
