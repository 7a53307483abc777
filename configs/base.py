"""Every field a run has, with the paper's recipe as defaults (CelebA-HQ 256, sLCT).

Experiment files build on `get_config()` and change what differs. Configs are
locked: an override of a key that does not exist is an error naming it.
Spec references (§) are to shared/spec/method.md.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 128                 # global, over all devices and hosts (Table 1)
    c.total_steps = 294_000            # floor(27,000 / 128) * 1,400 epochs (§4, §13)
    c.log_every = 100
    c.checkpoint_every = 5_000
    c.sample_every = 5_000

    c.model = ml_collections.ConfigDict(dict(
        img_resolution=32, in_channels=4, out_channels=4, model_channels=128,
        channel_mult=(1, 2, 3, 4), num_blocks=4, attn_resolutions=(16, 8), dropout=0.0,
        block_norm='non-scaling-layer-norm', out_norm='non-scaling-layer-norm',
        dtype='float32',               # 'bfloat16' on accelerators: convs/matmuls only (§20)
        remat=False,                   # rematerialise UNet blocks for large batches
    ))
    c.consistency = ml_collections.ConfigDict(dict(
        start_scales=10, end_scales=640,                   # s0, s1 (§4)
        sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_data=0.5,
        p_mean=-1.1, p_std=2.0,                            # lognormal interval sampler (§5)
        loss_norm='cauchy',                                # l2|huber|cauchy|gm|*_new|l1 (§6)
        c_schedule='scaling', c0=0.03456,                  # scaling-c (§7); 'fixed' keeps c0
        weight_schedule='ict',
        diffusion_weight=5.0, diffusion_threshold=0.75,    # early-timestep diffusion loss (§8)
    ))
    c.coupling = ml_collections.ConfigDict(dict(
        method='exact',                # exact | sinkhorn | none (§9); per device
        sinkhorn_epsilon=0.01,
        placement='host',              # host: in the input pipeline, train.prefetch steps ahead
                                       # (the device runs no data-dependent loop); device: on the mesh
        host_threads=0,                # pairing threads per host; 0 = one per local device (<= cores)
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,   # RAdam, coupled L2 (§13)
        warmup_steps=0, decay='constant', grad_clip=0.0,
    ))
    c.ema_decays = (0.9999, 0.99993)   # the paper evaluates 0.99993 (§10)
    c.train = ml_collections.ConfigDict(dict(
        max_skips_in_a_row=100,        # non-finite policy: stop after this many skipped updates
        keep_checkpoints=3,            # the last few ...
        keep_period=50_000,            # ... and every keep_period-th step
        prefetch=4,                    # steps the host prepares ahead: read, noise, OT pairing
        restore_fallback=False,        # if the newest checkpoint is unreadable, resume from an older one
    ))
    c.data = ml_collections.ConfigDict(dict(
        source='image_dir',            # digits | image_dir | tfds (for --mode=encode)
        image_dir='', tfds_name='', tfds_split='train',
        resolution=256, flips=False,
        latent_dir='',                 # '' = <workdir>/latents
        examples_per_shard=2048,
        expected_count=27_000,         # 0 = whatever the manifest says
        normalize='per_element',       # per_element (§2.3) | scalar | none
        encode_batch_size=64,
    ))
    c.autoencoder = ml_collections.ConfigDict(dict(
        kind='kl',                     # kl (SD VAE, weights from a local file) | identity
        weights='',                    # path to sd-vae-ft-ema diffusion_pytorch_model.safetensors
        scale_factor=0.18215,
    ))
    c.sampling = ml_collections.ConfigDict(dict(
        num_grid=64,                   # images in the grids written during training
        ts=(0, 420, 640), grid_steps=641,   # two-step sampler (§14)
        seed=42, ema='ema_0.99993',    # 'params' = the raw weights
        num_samples=50_000, batch_size=256, image_format='jpeg',  # JPEG q75 as the authors (§14)
    ))
    c.evaluation = ml_collections.ConfigDict(dict(
        features='inception',          # inception (the paper's FID) | digits_mlp (the embedded default)
        inception_weights='',          # pt_inception-2015-12-05-6726825d.pth
        run_name='',                   # the results table's name for this run ('' = workdir name)
        reference_stats='',            # pytorch-fid .npz (mu, sigma)
        reference_dir='',              # or a folder of real images
        reference_tfds='',             # or a tfds dataset, 'name:split' (needs TensorFlow)
                                       # (none of these: the decoded training latents)
        recall_k=3,
        paper_fid_1step=7.27, paper_fid_2step=6.93, paper_recall_1step=0.50, paper_recall_2step=0.52,
    ))
    return c
