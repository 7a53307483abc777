"""Every field a run has, with the paper's recipe as defaults (CelebA-HQ 256, sLCT).

Experiment files build on `get_config()` and change what differs. Configs are
locked: an override of a key that does not exist is an error naming it.
Spec references (§) are to shared/spec/method.md.
"""
import ml_collections

from lct_jax.weights import FID_INCEPTION_URL, VGG16_URL


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 128                 # global, over all devices and hosts (Table 1)
    c.total_steps = 294_000            # floor(27,000 / 128) * 1,400 epochs (§4, §13)
    c.log_every = 100
    c.checkpoint_every = 5_000
    c.sample_every = 5_000

    c.model = ml_collections.ConfigDict(dict(
        kind='unet',                   # unet (the paper's ADM UNet, §12.1) | dit (post-paper, §12.3, §16.4)
        img_resolution=32, in_channels=4, out_channels=4, model_channels=128,
        channel_mult=(1, 2, 3, 4), num_blocks=4, attn_resolutions=(16, 8), dropout=0.0,
        block_norm='non-scaling-layer-norm', out_norm='non-scaling-layer-norm',
        dtype='float32',               # 'bfloat16' on accelerators: convs/matmuls only (§20)
        remat=False,                   # rematerialise UNet / DiT blocks for large batches
        two_times=False,               # MeanFlow: the network also takes h = t - r (a second time embedding)
        logvar_head=False,             # sCT: a logvar(t) head for the adaptive weighting
        v_head=False,                  # improved MeanFlow: a second output head for the instantaneous velocity
        # kind='dit' only (lct_jax/models/dit.py); input size and channels are img_resolution and
        # in_channels above. Defaults: DiT-B/2 (configs/variants.py:apply_dit sets the presets).
        dit=ml_collections.ConfigDict(dict(
            patch_size=2, hidden_size=768, depth=12, num_heads=12, mlp_ratio=4.0,
            num_classes=0,             # 0: unconditional (the label table holds the null class only)
            class_dropout_prob=0.1,    # the authors' default; the null class's row exists only if > 0
            learn_sigma=False,         # consistency training predicts the sample only
            guidance_inputs=False,     # improved MeanFlow: the CFG scale and interval as network inputs
        )),
    ))
    c.consistency = ml_collections.ConfigDict(dict(
        start_scales=10, end_scales=640,                   # s0, s1 (§4)
        sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_data=0.5,
        p_mean=-1.1, p_std=2.0,                            # lognormal interval sampler (§5)
        loss_norm='cauchy',                                # l2|huber|cauchy|gm|*_new|l1 (§6)
        c_schedule='scaling', c0=0.03456,                  # scaling-c (§7); 'fixed' keeps c0;
                                                           # 'scaling_rescaled': c(N) * c0 / 0.03456
        weight_schedule='ict',
        diffusion_weight=5.0, diffusion_threshold=0.75,    # early-timestep diffusion loss (§8)
    ))
    c.objective = 'slct'               # slct (the paper) | ldm (the LDM-8† diffusion baseline, §16.5)
                                       # | meanflow | sct | imf (lct_jax/objectives/; configs/variants.py)
    c.meanflow = ml_collections.ConfigDict(dict(   # objective='meanflow' only; the authors' defaults
        p_mean=-0.4, p_std=1.0,        # logit-normal (t, r), ordered t >= r
        data_proportion=0.75,          # the fraction of each batch with r = t
        norm_p=1.0, norm_eps=0.01,     # adaptive weight (err + eps)^p
        omega=1.0, kappa=0.0,          # CFG inside the target (class-conditional only): off at 1, 0
        t_start=0.0, t_end=1.0,        # ... applied for t in [t_start, t_end]
        two_step_times=(1.0, 0.5, 0.0),  # the 2-step sampler's flow times (1-step: 1 -> 0)
    ))
    c.sct = ml_collections.ConfigDict(dict(      # objective='sct' only (objectives/sct.py); sCM's / FastGen's defaults
        p_mean=-1.0, p_std=1.4,        # t = atan(sigma / sigma_data), ln sigma ~ N(p_mean, p_std^2)
        tangent_warmup_steps=10_000, tangent_norm_c=0.1, tangent_norm='rms',
        prior_weighting=True,          # 1 / (sigma_data tan t)
        jvp='autodiff',                # | finite_difference (attention kernels without a JVP rule)
        finite_difference_eps=1e-3,
        time_scale=1.0,                # c_noise(t) = time_scale * t: sCM's identity (1000 trains to noise)
        two_step_t=1.1,                # the 2-step sampler's intermediate time
    ))
    c.imf = ml_collections.ConfigDict(dict(      # objective='imf' only (objectives/imf.py); the authors' defaults
        p_mean=-0.4, p_std=1.0, data_proportion=0.5, norm_p=1.0, norm_eps=0.01,
        guidance=False,                # class-conditional: omega and [t_min, t_max] drawn per row, network inputs
        cfg_beta=1.0, cfg_s_max=7.0,
        sample_omega=1.0, sample_t_min=0.0, sample_t_max=1.0,
        two_step_times=(1.0, 0.5, 0.0),
    ))
    c.ldm = ml_collections.ConfigDict(dict(
        num_levels=1000, c=3.45,       # uniform levels on the 1000-level Karras grid; Cauchy-form c (§16.5)
    ))                                 # (sigma_min/max, rho, sigma_data: the consistency section's)
    c.coupling = ml_collections.ConfigDict(dict(
        method='exact',                # exact | sinkhorn | none (§9); per device
        sinkhorn_epsilon=0.01,
        placement='host',              # host: in the input pipeline, train.prefetch steps ahead
                                       # (the device runs no data-dependent loop); device: on the mesh
        host_threads=0,                # pairing threads per host; 0 = one per local device (<= cores)
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        kind='radam',                  # radam (§13) | adamw (MeanFlow's)
        lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,   # RAdam, coupled L2 (§13)
        warmup_steps=0, decay='constant', grad_clip=0.0,
    ))
    c.ema_decays = (0.9999, 0.99993)   # the paper evaluates 0.99993 (§10)
    c.mesh = ml_collections.ConfigDict(dict(
        fsdp=False,                    # True: params, optimizer moments and EMAs sharded over the devices
                                       # (ZeRO-3 / FSDP on the 'data' axis), gathered per layer by XLA
        fsdp_min_size=2 ** 14,         # leaves with fewer elements stay replicated (biases, norms)
    ))
    c.train = ml_collections.ConfigDict(dict(
        max_skips_in_a_row=100,        # non-finite policy: stop after this many skipped updates
        keep_checkpoints=3,            # the last few ...
        keep_period=50_000,            # ... and every keep_period-th step
        prefetch=4,                    # steps the host prepares ahead: read, noise, OT pairing
        reader_processes=0,            # 0: read in the pipeline's threads (one core, the GIL); N: N reader
                                       # processes (an accelerator host: benchmarks/README.md, host pipeline)
        restore_fallback=False,        # if the newest checkpoint is unreadable, resume from an older one
    ))
    c.data = ml_collections.ConfigDict(dict(
        source='image_dir',            # digits | image_dir | tfds (for --mode=encode)
        image_dir='', tfds_name='', tfds_split='train',
        tfds_data_dir='',              # where tfds_name is prepared ('' = tfds's default, $TFDS_DATA_DIR);
                                       # tfds_name may also be a prepared directory (.../name/1.0.0)
        resolution=256, flips=False,
        class_labels=False,            # --mode=encode stores class labels (class subfolders of image_dir,
                                       # a tfds ClassLabel 'label', the digits' classes): for a class-
                                       # conditional model (model.dit.num_classes > 0)
        latent_dir='',                 # '' = <workdir>/latents
        examples_per_shard=2048,
        expected_count=27_000,         # 0 = whatever the manifest says
        normalize='per_element',       # per_element (§2.3) | scalar | none
        tail_power=0.0,                # the tail dial: u (1 + u^2)^(p/2) / k_p on the standardised latents,
                                       # 0 <= p <= 4 (0 = as encoded; inverted before decoding;
                                       # lct_jax/data/tails.py, docs/study/tails/)
        encode_batch_size=64,
    ))
    c.autoencoder = ml_collections.ConfigDict(dict(
        kind='kl',                     # kl (SD VAE) | identity
        weights='stabilityai/sd-vae-ft-ema',  # a hub id[@revision] (HF cache first), a diffusers folder,
                                       # or a diffusion_pytorch_model.safetensors / .bin file
        scale_factor=0.18215,
    ))
    c.sampling = ml_collections.ConfigDict(dict(
        num_grid=64,                   # images in the grids written during training
        ts=(0, 420, 640), grid_steps=641,   # two-step sampler (§14)
        seed=42, ema='ema_0.99993',    # 'params' = the raw weights
        sampler='consistency',         # consistency (1-step and 2-step rows) | euler | heun (EDM ODE, §16.5)
                                       # | meanflow | trigflow (sCT) | imf: 1-step and 2-step
        ode_steps=250,                 # euler / heun: Karras grid of this many levels + a final 0
        num_samples=50_000, batch_size=256, image_format='jpeg',  # JPEG q75 as the authors (§14)
        device_batch=32,               # --mode=sample / evaluate: rows per device per batch, so the numbers are the
                                       # same on any layout (evaluation/sharded.py); 0 = batch_size over the devices
        class_grids=16,                # class-conditional models: per-class grids of the first classes
    ))
    c.evaluation = ml_collections.ConfigDict(dict(
        features='inception',          # inception (the paper's FID) | digits_mlp (the embedded default)
        inception_weights=FID_INCEPTION_URL,  # a local pt_inception-2015-12-05-6726825d.pth, or this URL
                                       # fetched once into torch hub's cache (checked by its hash)
        run_name='',                   # the results table's name for this run ('' = workdir name)
        reference_stats='',            # a statistics .npz: ours (checked against its provenance), pytorch-fid's
                                       # or ADM's reference batch (mu, sigma; evaluation/stats_file.py)
        save_reference_stats='',       # write the reference statistics computed here, with what they are of
        reference_dir='',              # or a folder of real images
        reference_tfds='',             # or a tfds dataset, 'name:split' (prepared; see data.tfds_*)
                                       # (none of these: the decoded training latents)
        recall_k=3,
        pr_features='vgg16',           # precision/recall features: vgg16 (pr50k3's, §15) | inception | digits_mlp
        vgg16_weights=VGG16_URL,       # torchvision's vgg16-397923af.pth, or nvidia_vgg16.py's .npz
        vgg16_input='torchvision',     # the input normalisation those weights expect: torchvision | caffe (README)
        vgg16_fc2_relu=True,           # features after fc2's ReLU (torchvision's classifier[4]; Keras' 'fc2')
        pr_max_real=200_000,           # real images for precision/recall (pr50k3_full's max_real)
        reference_cache=True,          # keep the decoded training latents' features on disk, keyed by
                                       # latents, decoder and feature network (evaluation/reference_cache.py)
        paper_fid_1step=7.27, paper_fid_2step=6.93, paper_recall_1step=0.50, paper_recall_2step=0.52,
        dataset='celebahq256',         # Table 1's sub-table (celebahq256 | lsun_church256 | ffhq256 | digits)
        method='sLCT',                 # Table 1's row: sLCT | iLCT | LDM-8† (ablations: 'sLCT:<name>')
        comparison_dir='',             # where --mode=evaluate rebuilds comparison_<dataset>.md from every
                                       # <run>/results.json below it ('' = the workdir's parent)
        every=0,                       # FID during training: evaluate the EMA every this many steps
                                       # (0 = off; evaluation/during_training.py)
        num_samples=0,                 # samples per in-training evaluation (0 = sampling.num_samples)
        curve_samplers=(),             # --checkpoint=all|<steps>: the samplers of the curves (FID over NFE), e.g.
                                       # ('consistency:0', 'consistency:0,420,640', 'heun:5', 'euler:250');
                                       # () = the configured ones (evaluation/curves.py)
    ))
    return c
