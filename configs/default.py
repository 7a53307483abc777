"""The embedded default: sLCT on scikit-learn's handwritten digits, on a CPU.

A real dataset that a package ships (1,797 8x8 scans at their native
resolution, grey), through the same pipeline as the paper runs: the images are written
once as TFRecord shards in <workdir>/latents (an identity autoencoder in place
of the SD VAE), then a small UNet trains with every technique of the paper on
(Cauchy loss, scaling-c, early diffusion loss, exact OT coupling, NsLN).

Command:  python -m lct_jax.main --config configs/default.py --workdir workdir/default
Hardware: 2 CPU cores. Wall time and result: see README ("The default run").
Variant `:smoke` runs 20 steps (used by the tests). The CPU-scale study of
docs/study/ uses the variants `ilct` (every technique off: Pseudo-Huber with
iCT's c, no OT, no diffusion loss, GroupNorm; same UNet and budget),
`no_ot`, `no_diffusion`, `huber`, `fixed_c` and `group_norm` (one technique
of sLCT off each), and `ldm`: the LDM-8† baseline of Table 1 (the same UNet,
data and budget trained as an EDM latent diffusion model, spec §16.5; sampled
with Euler, 250 steps = 250 NFE; `--config.sampling.sampler=heun
--config.sampling.ode_steps=n` for Heun at 2n - 1 NFE). Variant `dit`: the same run with a
small DiT in place of the UNet (patch 2 on the 8x8 digits: 16 tokens; lct_jax/models/dit.py);
`dit_cond`: that DiT class-conditional on the digits' 10 labels (label dropout 0.1 to the null
class; grids per class; sample i is of class i mod 10). Variant `meanflow`: MeanFlow (Geng et al.
2025; lct_jax/meanflow.py) trained from scratch with the same UNet (taking two times), data and
budget, as configs/variants.py:apply_meanflow with the digits run's own EMAs; sampled in 1 and 2
steps (`dit_cond,meanflow`: the class-conditional DiT, guidance off unless meanflow.omega/kappa).
"""
from configs import base, variants


STUDY_VARIANTS = ('ilct', 'no_ot', 'no_diffusion', 'huber', 'fixed_c', 'group_norm')
# name -> one line: what `--mode=variants` lists and get_config accepts.
VARIANTS = {
    'smoke': '20 steps at batch 16 (the tests\' run)',
    'ilct': 'the iLCT baseline: Pseudo-Huber with iCT\'s fixed c, no OT, no diffusion loss, GroupNorm',
    'no_ot': 'sLCT without the OT coupling (independent noise)',
    'no_diffusion': 'sLCT without the early-timestep diffusion loss',
    'huber': 'sLCT with Pseudo-Huber in place of Cauchy',
    'fixed_c': 'sLCT with iCT\'s fixed c0 in place of the scaling-c schedule',
    'group_norm': 'sLCT with GroupNorm in place of Non-scaling LayerNorm',
    'ldm': 'the LDM-8† baseline: the same UNet trained as an EDM diffusion model, Euler 250 NFE',
    'dit': 'a small DiT (4 blocks, width 128, patch 2) in place of the UNet',
    'dit_cond': 'that DiT class-conditional on the 10 digits (label dropout 0.1, grids per class)',
    'meanflow': 'MeanFlow (Geng et al. 2025) from scratch: the same UNet taking two times, 1 and 2 steps',
    'sct': 'sCT (Lu & Song 2025) from scratch: TrigFlow, the same UNet with a logvar head, 1 and 2 steps',
    'imf': 'improved MeanFlow (Geng et al. 2025b) from scratch: the two-time UNet with a v-head, 1 and 2 steps',
}
# sCT's tangent warm-up on the 2,500-step digits: 10% of the run (FastGen's 10,000 are 2.5% of ~400k)
DIGITS_TANGENT_WARMUP = 250
# A small DiT for the 8x8x1 digits: 16 tokens of 2x2 patches.
DIGITS_DIT = dict(patch_size=2, hidden_size=128, depth=4, num_heads=4, mlp_ratio=4.0)


def get_config(variant: str = ''):
    c = base.get_config()
    c.batch_size = 64
    c.total_steps = 2500
    c.log_every = 50
    c.checkpoint_every = 500
    c.sample_every = 500
    c.model.update(img_resolution=8, in_channels=1, out_channels=1, model_channels=32,
                   channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,))
    c.consistency.update(start_scales=10, end_scales=160)
    # c0 = 0.00054 * sqrt(d) for d = 8 * 8 * 1 pixels (iCT's rule, as 0.03456 for 4x32x32).
    c.consistency.c0 = 0.00054 * 8.0
    c.optimizer.lr = 2e-4
    c.ema_decays = (0.99, 0.999)  # a 2,500-step run: longer EMAs still remember the initial noise
    c.train.keep_period = 0
    c.data.update(source='digits', resolution=8, expected_count=1797, examples_per_shard=512,
                  normalize='scalar', encode_batch_size=256)
    c.autoencoder.kind = 'identity'
    c.sampling.update(num_grid=64, ema='ema_0.99', num_samples=1024, batch_size=256, image_format='png')
    c.evaluation.update(features='digits_mlp', pr_features='digits_mlp', paper_fid_1step=0.0,
                        paper_fid_2step=0.0, paper_recall_1step=0.0, paper_recall_2step=0.0, dataset='digits')
    for name in [v for v in variant.split(',') if v]:
        if name not in VARIANTS:
            raise variants.unknown_variant_error(name, VARIANTS)
        if name in ('dit', 'dit_cond'):
            c.model.kind = 'dit'
            c.model.dit.update(DIGITS_DIT)
            c.evaluation.method = f'{variants.METHOD_NAMES.get(c.objective, "sLCT")}:{name}'
        if name == 'dit_cond':   # class-conditional on the digits' 10 classes (label dropout 0.1)
            c.model.dit.num_classes = 10
            c.data.class_labels = True
        elif name == 'ilct':
            c.evaluation.method = 'iLCT'
        elif name == 'ldm':
            # As configs/variants.py:apply_ldm, with the digits run's own EMA (0.99: 2,500 steps).
            c.objective = 'ldm'
            c.coupling.method = 'none'
            c.model.update(block_norm='group-norm', out_norm='group-norm')
            c.sampling.update(sampler='euler', ode_steps=250)
            c.evaluation.method = 'LDM-8†'
        elif name in ('meanflow', 'sct', 'imf'):
            # As configs/variants.py:apply_<name>, with the digits run's own EMAs (2,500 steps).
            {'meanflow': variants.apply_meanflow, 'sct': variants.apply_sct, 'imf': variants.apply_imf}[name](c)
            c.ema_decays = (0.99, 0.999)
            c.sampling.ema = 'ema_0.99'
            if name == 'sct':
                c.sct.tangent_warmup_steps = DIGITS_TANGENT_WARMUP
        elif name != 'smoke':
            c.evaluation.method = f'sLCT:{name}'
        if name in ('ilct', 'no_ot'):
            c.coupling.method = 'none'
        if name in ('ilct', 'no_diffusion'):
            c.consistency.diffusion_weight = 0.0
        if name in ('ilct', 'huber'):
            c.consistency.loss_norm = 'huber'
        if name in ('ilct', 'fixed_c'):
            c.consistency.c_schedule = 'fixed'
        if name in ('ilct', 'group_norm'):
            c.model.update(block_norm='group-norm', out_norm='group-norm')
    c.evaluation.run_name = 'default' + (':' + variant if variant else '')
    if 'smoke' in variant.split(','):
        c.total_steps = 20
        c.log_every = 5
        c.checkpoint_every = 10
        c.sample_every = 20
        c.batch_size = 16
        c.sampling.num_grid = 16
    c.lock()
    return c
