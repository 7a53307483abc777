"""Baselines, ablations and the CPU smoke shrink, shared by the paper-run configs.

A config file's argument is a comma-separated list of these names, e.g.
`configs/celebahq256.py:ilct,smoke`. The expected FIDs are the authors' logged
CelebA-HQ runs (spec §16.3: 1-NFE, 50k samples, EMA 0.99993, epoch 1400).
"""

C0 = 0.03456

# name -> (what it changes, the authors' logged CelebA-HQ 1-NFE FID)
ABLATIONS = {
    # component build-up
    'no_diffusion_gn': (dict(diffusion_weight=0.0, block_norm='group-norm', out_norm='group-norm'), 8.05),
    'diffusion_gn': (dict(block_norm='group-norm', out_norm='group-norm'), 7.76),
    # robust metric
    'huber': (dict(loss_norm='huber'), 9.97),
    'gm': (dict(loss_norm='gm'), 11.28),
    'l2': (dict(loss_norm='l2'), 50.40),
    # fixed c instead of the scaling-c schedule
    'c_0.01x': (dict(c_schedule='fixed', c0=0.01 * C0), 7.53),
    'c_0.001x': (dict(c_schedule='fixed', c0=0.001 * C0), 7.78),
    'c_0.3x': (dict(c_schedule='fixed', c0=0.3 * C0), 8.71),
    'c_3x': (dict(c_schedule='fixed', c0=3 * C0), 11.35),
    'c_10x_gn_no_ot': (dict(c_schedule='fixed', c0=10 * C0, block_norm='group-norm', out_norm='group-norm',
                            coupling='none'), 34.59),
    # normalisation layers
    'nsln_final_only': (dict(block_norm='group-norm', out_norm='non-scaling-layer-norm'), 7.64),
    'ns_group_norm': (dict(block_norm='non-scaling-group-norm', out_norm='non-scaling-group-norm'), 7.81),
    'group_norm': (dict(block_norm='group-norm', out_norm='group-norm'), 7.76),
    'ln_final_only': (dict(block_norm='group-norm', out_norm='layer-norm'), 7.92),
    'ns_instance_norm': (dict(block_norm='non-scaling-instance-norm', out_norm='non-scaling-instance-norm'), 8.23),
    'rms_norm': (dict(block_norm='rms-norm', out_norm='rms-norm'), 8.96),
    'instance_norm': (dict(block_norm='instance-norm', out_norm='instance-norm'), 8.98),
    'layer_norm': (dict(block_norm='layer-norm', out_norm='layer-norm'), 9.05),
    # diffusion-loss threshold
    'diff_threshold_0.4': (dict(diffusion_threshold=0.4), 7.42),
}


def apply_ablation(c, name):
    changes, fid = ABLATIONS[name]
    for key, value in changes.items():
        if key in ('block_norm', 'out_norm'):
            c.model[key] = value
        elif key == 'coupling':
            c.coupling.method = value
        else:
            c.consistency[key] = value
    c.evaluation.update(paper_fid_1step=fid, paper_fid_2step=0.0, paper_recall_1step=0.0,
                        paper_recall_2step=0.0)


def apply_ilct(c, fid_1step, fid_2step, recall_1step, recall_2step):
    """iLCT: iCT in latent space (Pseudo-Huber with iCT's c, no OT, no diffusion loss, GroupNorm).

    As the authors' logged baseline (spec §16.2): s1 = 1280, two-step ts 0,640,1280
    of a 1281-point grid, EMA 0.9999, and a 2-res-block UNet.
    """
    c.consistency.update(loss_norm='huber', c_schedule='fixed', c0=C0, diffusion_weight=0.0, end_scales=1280)
    c.coupling.method = 'none'
    c.model.update(block_norm='group-norm', out_norm='group-norm', num_blocks=2)
    c.sampling.update(ts=(0, 640, 1280), grid_steps=1281, ema='ema_0.9999')
    c.evaluation.update(paper_fid_1step=fid_1step, paper_fid_2step=fid_2step,
                        paper_recall_1step=recall_1step, paper_recall_2step=recall_2step)


def apply_smoke(c):
    """A few steps on a CPU: the same method settings, a tiny UNet on the packaged digits."""
    c.batch_size = 16
    c.total_steps = 20
    c.log_every = 5
    c.checkpoint_every = 10
    c.sample_every = 20
    c.model.update(img_resolution=8, in_channels=1, out_channels=1, model_channels=32, channel_mult=(1, 2),
                   num_blocks=1, attn_resolutions=(4,))
    c.data.update(source='digits', resolution=8, expected_count=1797, examples_per_shard=512,
                  normalize='scalar', encode_batch_size=256, flips=False)
    c.autoencoder.kind = 'identity'
    c.sampling.update(num_grid=16, num_samples=64, batch_size=64, image_format='png')
    c.evaluation.features = 'digits_mlp'


def apply_variants(c, arg, ilct_numbers):
    """Apply 'ilct', an ablation name and/or 'smoke' (comma-separated) to config c."""
    names = [a for a in (arg or '').split(',') if a]
    valid = ['ilct', 'smoke'] + sorted(ABLATIONS)
    for name in names:
        if name == 'ilct':
            apply_ilct(c, *ilct_numbers)
        elif name in ABLATIONS:
            apply_ablation(c, name)
        elif name != 'smoke':
            raise ValueError(f'unknown config variant {name!r}; valid: {valid}')
    if 'smoke' in names:
        apply_smoke(c)
    c.evaluation.run_name = c.evaluation.run_name + (':' + arg if arg else '')
    c.lock()
    return c
