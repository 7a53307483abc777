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
                        paper_recall_2step=0.0, method=f'sLCT:{name}')


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
                        paper_recall_1step=recall_1step, paper_recall_2step=recall_2step, method='iLCT')


def apply_ldm(c):
    """LDM-8†: the same UNet trained as an EDM-style latent diffusion model, sampled with Euler,
    250 steps = 250 NFE (spec §16.5; Table 1: CelebA-HQ 8.85, LSUN Church 10.81, FFHQ 10.23 FID,
    no recall published).

    As the authors' `train_diff_latent.py` + `scripts/train_diff.sh`: uniform levels on the
    1000-level Karras grid, Cauchy-form loss with c = 3.45 and the EDM weight, plain Gaussian
    noise (no OT pairing), no norm flags (so the UNet's default GroupNorm), one EMA of decay
    0.9999 (their `update_ema` default), and `test_diff_latent.py` sampling with `sampler="euler",
    steps=250` from that EMA. Their script ran CelebA-HQ at 2 GPUs x 128 for 800 epochs; we keep
    Table 1's epochs and batch (1.4K / 128 here, as the dataset config says).
    """
    c.objective = 'ldm'
    c.coupling.method = 'none'
    c.model.update(block_norm='group-norm', out_norm='group-norm')
    c.sampling.update(sampler='euler', ode_steps=250, ema='ema_0.9999')
    # The 1-/2-step fields describe consistency samplers: an LDM row's paper numbers come from
    # lct_jax/evaluation/paper_table1.py, looked up by (dataset, 'LDM-8†', NFE).
    c.evaluation.update(method='LDM-8†', paper_fid_1step=0.0, paper_fid_2step=0.0, paper_recall_1step=0.0,
                        paper_recall_2step=0.0)


def apply_meanflow(c):
    """MeanFlow (Geng et al. 2025, arXiv 2505.13447) trained from scratch on the same latents and
    backbone: lct_jax/meanflow.py, as the authors' `meanflow.py` + configs (Gsunshine/meanflow).

    The network takes two times (model.two_times: t and h = t - r embedded, t in [0, 1]); the
    objective draws (t, r) logit-normal (-0.4, 1.0) with 75% of each batch at r = t, plain Gaussian
    noise (no OT pairing: coupling.method='none'), the adaptive weight p = 1, eps = 0.01; AdamW
    (b2 0.95, no weight decay), one constant EMA 0.9999; sampled in 1 step (1 -> 0) and 2 steps
    (1 -> 0.5 -> 0). No norm flags (the UNet's GroupNorm, as the LDM-8† baseline; the authors' UNet
    and DiT use GroupNorm / LayerNorm). Data scaling as the authors': one scale for all latent
    elements (their 0.18215) to unit variance, the noise's: data.normalize='scalar' with the
    normaliser's target std (consistency.sigma_data) 1.0 instead of sLCT's per-element 0.5. We
    subtract the pooled mean, which they do not (the normaliser has no scale-only mode).
    No guidance unless a class-conditional config turns it on (meanflow.omega / kappa).
    """
    c.objective = 'meanflow'
    c.model.two_times = True
    c.model.update(block_norm='group-norm', out_norm='group-norm')
    c.coupling.method = 'none'
    c.data.normalize = 'scalar'
    c.consistency.sigma_data = 1.0
    c.optimizer.update(kind='adamw', b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0)
    c.ema_decays = (0.9999,)
    c.sampling.update(sampler='meanflow', ema='ema_0.9999')
    backbone = c.evaluation.method.partition(':')[2] if c.model.kind == 'dit' else ''
    c.evaluation.update(method='MeanFlow' + (f':{backbone}' if backbone else ''), paper_fid_1step=0.0,
                        paper_fid_2step=0.0, paper_recall_1step=0.0, paper_recall_2step=0.0)


def apply_sct(c):
    """sCT (Lu & Song, ICLR 2025; objectives/sct.py) trained from scratch on the same latents and
    backbone: the network with a logvar(t) head, sCM's time draw (-1.0, 1.4), tangent normalisation
    (c = 0.1) and warm-up, prior weighting and the adaptive weighting; plain Gaussian noise (no OT);
    RAdam (0.9, 0.99) without weight decay as FastGen's sCM config; the data as sLCT normalises it
    (per element, sigma_data 0.5, TrigFlow's s_d). No norm flags (GroupNorm, as the other
    baselines); sampled in 1 step from t_max and 2 steps through t = 1.1."""
    c.objective = 'sct'
    c.model.logvar_head = True
    c.model.update(block_norm='group-norm', out_norm='group-norm')
    c.coupling.method = 'none'
    c.optimizer.update(kind='radam', b1=0.9, b2=0.99, weight_decay=0.0)
    c.sampling.sampler = 'trigflow'
    backbone = c.evaluation.method.partition(':')[2] if c.model.kind == 'dit' else ''
    c.evaluation.update(method='sCT' + (f':{backbone}' if backbone else ''), paper_fid_1step=0.0,
                        paper_fid_2step=0.0, paper_recall_1step=0.0, paper_recall_2step=0.0)


def apply_imf(c):
    """Improved MeanFlow (arXiv 2512.02012; objectives/imf.py) from scratch on the same latents and
    backbone: MeanFlow's recipe (apply_meanflow: two times, GroupNorm, no OT, AdamW (0.9, 0.95),
    one pooled scale to std 1, EMA 0.9999) plus the v-head, iMF's 50% of rows at r = t and its
    v-loss with the network's own velocity as the JVP tangent. Guidance (class-conditional) is
    turned on by the ImageNet recipe (configs/imagenet256.py:imf_b2)."""
    apply_meanflow(c)
    c.objective = 'imf'
    c.model.v_head = True
    c.sampling.sampler = 'imf'
    backbone = c.evaluation.method.partition(':')[2] if c.model.kind == 'dit' else ''
    c.evaluation.update(method='iMF' + (f':{backbone}' if backbone else ''))


# the results table's method name of each objective's runs (configs/*:evaluation.method)
METHOD_NAMES = {'slct': 'sLCT', 'ldm': 'LDM-8†', 'meanflow': 'MeanFlow', 'sct': 'sCT', 'imf': 'iMF'}


def apply_smoke(c):
    """A few steps on a CPU: the same method settings, a tiny UNet on the packaged digits."""
    c.batch_size = 16
    c.total_steps = 20
    c.log_every = 5
    c.checkpoint_every = 10
    c.sample_every = 20
    c.model.update(img_resolution=8, in_channels=1, out_channels=1, model_channels=32, channel_mult=(1, 2),
                   num_blocks=1, attn_resolutions=(4,))
    c.model.dit.update(SMOKE_DIT)  # a DiT run stays a DiT, shrunk
    c.data.update(source='digits', resolution=8, expected_count=1797, examples_per_shard=512,
                  normalize='scalar', encode_batch_size=256, flips=False)
    c.autoencoder.kind = 'identity'
    c.sampling.update(num_grid=16, num_samples=64, batch_size=64, image_format='png')
    c.evaluation.update(features='digits_mlp', pr_features='digits_mlp')


# 'dit_b2' -> DiT-B/2 etc.: facebookresearch/DiT's sizes S/B/L/XL with patch 2/4/8 (lct_jax/models/dit.py).
DIT_VARIANTS = {f'dit_{size.lower()}{patch}': f'{size}/{patch}' for size in ('S', 'B', 'L', 'XL')
                for patch in (2, 4, 8)}
SMOKE_DIT = dict(patch_size=2, hidden_size=32, depth=2, num_heads=2)


def apply_dit(c, name):
    """The DiT backbone in place of the UNet (post-paper: the authors' later readme reports DiT-B/2
    'with frequency module' at FID 5.7 on CelebA-HQ, spec §16.4; that module is not ported here).
    Everything else keeps the config's recipe; no paper number exists for this exact run."""
    from lct_jax.models.dit import preset
    c.model.kind = 'dit'
    c.model.dit.update(preset(DIT_VARIANTS[name]))
    objective = METHOD_NAMES.get(c.objective, 'sLCT')
    c.evaluation.update(method=f'{objective}:{name}', paper_fid_1step=0.0, paper_fid_2step=0.0,
                        paper_recall_1step=0.0, paper_recall_2step=0.0)


def _describe_changes(changes: dict) -> str:
    return ', '.join(f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}' for k, v in changes.items())


# name -> one line: what `--mode=variants` lists for the paper-run configs, and what get_config accepts.
PAPER_VARIANTS = {
    'ilct': 'the iLCT baseline: Pseudo-Huber with iCT\'s fixed c, no OT, no diffusion loss, GroupNorm',
    'ldm': 'the LDM-8† baseline: the same UNet trained as an EDM latent diffusion model, Euler 250 NFE',
    'smoke': 'shrink any run to 20 CPU steps on the packaged digits (combine: ilct,smoke)',
    **{name: f'ablation: {_describe_changes(changes)} (authors\' CelebA-HQ 1-NFE FID {fid})'
       for name, (changes, fid) in ABLATIONS.items()},
    **{name: f'post-paper: a DiT-{size} backbone in place of the UNet'
       for name, size in DIT_VARIANTS.items()},
    'meanflow': 'MeanFlow (Geng et al. 2025) from scratch on the same latents and network, 1 and 2 steps',
    'sct': 'sCT (Lu & Song, ICLR 2025): continuous-time consistency training in TrigFlow, 1 and 2 steps',
    'imf': 'improved MeanFlow (Geng et al. 2025b): v-head, own-velocity JVP tangent, v-loss; 1 and 2 steps',
}


def unknown_variant_error(name: str, valid, why: str = '') -> ValueError:
    """One sentence for a variant a config does not have (and `why`, if said), with the nearest
    valid name."""
    import difflib
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    return ValueError(f'unknown config variant {name!r}{hint}{why}; valid: {", ".join(valid)} '
                      f'(--mode=variants lists them with what each does)')


def apply_variants(c, arg, ilct_numbers):
    """Apply 'ilct', 'ldm', 'meanflow', an ablation name, a DiT backbone ('dit_b2', ...) and/or 'smoke'
    (comma-separated) to config c."""
    names = [a for a in (arg or '').split(',') if a]
    for name in names:
        if name == 'ilct':
            apply_ilct(c, *ilct_numbers)
        elif name == 'ldm':
            apply_ldm(c)
        elif name == 'meanflow':
            apply_meanflow(c)
        elif name == 'sct':
            apply_sct(c)
        elif name == 'imf':
            apply_imf(c)
        elif name in DIT_VARIANTS:
            apply_dit(c, name)
        elif name in ABLATIONS:
            apply_ablation(c, name)
        elif name != 'smoke':
            raise unknown_variant_error(name, PAPER_VARIANTS)
    if 'smoke' in names:
        apply_smoke(c)
    c.evaluation.run_name = c.evaluation.run_name + (':' + arg if arg else '')
    c.lock()
    return c
