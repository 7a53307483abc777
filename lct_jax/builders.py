"""Config -> objects: the model, the objective, the samplers, the normaliser, the evaluator; and
the check that a config can run at all, made before anything is written.

Registries, not if-chains: `models` by model.kind, `objectives.OBJECTIVES` by config.objective,
`sampling.FAMILIES` by the sampler family. Everything here is pure construction: nothing reads
a work directory except what the evaluator's reference needs, and nothing writes.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from lct_jax import config_checks, parallel, sampling
from lct_jax.data.latents import latent_dir_of
from lct_jax.data.pipeline import Normalizer
from lct_jax.evaluation import fid, paper_table1, sharded, stats_file
from lct_jax.evaluation.evaluator import Evaluator, Reference, RowLabels
from lct_jax.evaluation.features import make_features
from lct_jax.evaluation.reference import reference_features, reference_split
from lct_jax.models.autoencoder import make_codec
from lct_jax.models.dit import DiT
from lct_jax.models.unet import UNet
from lct_jax.objectives import OBJECTIVES, Objective
from lct_jax.sampling import consistency as consistency_sampling
from lct_jax.sampling import ode

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


# --- the network --------------------------------------------------------------------------------

def _build_unet(m) -> UNet:
    down = 2 ** (len(m.channel_mult) - 1)
    if m.img_resolution % down:
        raise ValueError(f'model.img_resolution={m.img_resolution} must be divisible by '
                         f'2^(len(channel_mult)-1) = {down}')
    return UNet(img_resolution=m.img_resolution, in_channels=m.in_channels, out_channels=m.out_channels,
                model_channels=m.model_channels, channel_mult=tuple(m.channel_mult),
                num_blocks=m.num_blocks, attn_resolutions=tuple(m.attn_resolutions),
                dropout=m.dropout, block_norm=m.block_norm, out_norm=m.out_norm,
                dtype=_DTYPES[m.dtype], remat=m.remat, **_heads(m))


def _heads(m) -> dict:
    """The switches every backbone has (configs recorded before a key existed: off)."""
    return dict(two_times=bool(m.get('two_times', False)), logvar_head=bool(m.get('logvar_head', False)),
                v_head=bool(m.get('v_head', False)))


def _build_dit(m) -> DiT:
    d = m.dit
    if d.learn_sigma:
        raise ValueError('model.dit.learn_sigma=True: consistency training predicts the sample only '
                         '(the output must have model.in_channels channels)')
    if m.out_channels != m.in_channels:
        raise ValueError(f'model.out_channels={m.out_channels} must equal model.in_channels={m.in_channels} '
                         'for the DiT')
    model = DiT(input_size=m.img_resolution, patch_size=d.patch_size, in_channels=m.in_channels,
                hidden_size=d.hidden_size, depth=d.depth, num_heads=d.num_heads, mlp_ratio=d.mlp_ratio,
                num_classes=d.num_classes, class_dropout_prob=d.class_dropout_prob, learn_sigma=False,
                dtype=_DTYPES[m.dtype], remat=m.remat, guidance_inputs=bool(d.get('guidance_inputs', False)),
                **_heads(m))
    try:
        model.check()
    except ValueError as e:  # name the config's fields: input_size is model.img_resolution here
        raise ValueError(f'model.dit (with model.img_resolution={m.img_resolution}): {e}') from None
    return model


MODELS = {'unet': _build_unet, 'dit': _build_dit}
MODEL_KINDS = tuple(MODELS)


def build_model(config) -> UNet | DiT:
    """config.model.kind: 'unet' (the paper's ADM UNet) or 'dit' (post-paper, fields in model.dit).

    Both take (x NHWC, noise_labels) and return x's shape; the DiT also takes `labels=`.
    """
    m = config.model
    if m.dtype not in _DTYPES:
        raise ValueError(f'model.dtype {m.dtype!r}; valid: {tuple(_DTYPES)}')
    kind = m.get('kind', 'unet')
    if kind not in MODELS:
        raise ValueError(f'model.kind {kind!r}; valid: {MODEL_KINDS}')
    return MODELS[kind](m)


def num_classes_of(config) -> int:
    """Classes a config's model is conditioned on: model.dit.num_classes for a DiT, else 0."""
    m = config.model
    return int(m.dit.num_classes) if m.get('kind', 'unet') == 'dit' else 0


def example_shape(config) -> tuple[int, int, int]:
    m = config.model
    return (m.img_resolution, m.img_resolution, m.in_channels)


# --- the objective and its samplers ------------------------------------------------------------

def build_objective(config) -> Objective:
    """OBJECTIVES[config.objective], built from its config section (objectives/base.py)."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f'objective {config.objective!r}; valid: {tuple(OBJECTIVES)}')
    return OBJECTIVES[config.objective].from_config(config)


def configured_samplers(config, objective: Objective | None = None) -> list[sampling.SamplerSpec]:
    """The rows --mode=sample / evaluate and the training grids draw (config.sampling.sampler)."""
    return sampling.configured_samplers(config.sampling, objective or build_objective(config))


def curve_samplers(config, objective: Objective | None = None) -> list[sampling.SamplerSpec] | None:
    """evaluation.curve_samplers as SamplerSpecs ('consistency:<ts>', 'euler:<steps>', 'heun:<steps>'),
    or None (the configured samplers)."""
    names = tuple(config.evaluation.get('curve_samplers', ()) or ())
    if not names:
        return None
    obj, specs = objective or build_objective(config), []
    for name in names:
        family, _, arg = str(name).partition(':')
        try:
            if family == 'consistency':
                specs.append(consistency_sampling.from_argument(arg, config.sampling, obj))
            elif family in ode.ODE_METHODS:
                specs.append(ode.from_argument(family, arg, obj))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f'evaluation.curve_samplers: {name!r}; expected consistency:<t0,t1,...>, '
                             f'euler:<steps> or heun:<steps>') from None
        sampling.check_supported(family, obj, 'evaluation.curve_samplers')
    return specs


def make_sampler(config, spec, mesh, model=None, objective: Objective | None = None):
    """The jitted (params, sample indices) -> latents of a SamplerSpec, or of the indices `ts` of a
    consistency sampler on the config's grid (e.g. (0,) or (0, 420, 640)), on `mesh`. A
    class-conditional model draws sample i of class i mod num_classes."""
    model, obj = model or build_model(config), objective or build_objective(config)
    if not isinstance(spec, sampling.SamplerSpec):
        spec = consistency_sampling.consistency_spec('consistency', tuple(spec), config.sampling.grid_steps, obj)
    return sampling.make_spec_sampler(spec, model.apply, obj, example_shape(config), config.sampling.seed, mesh,
                                      num_classes_of(config))


def make_normalizer(config, workdir: str) -> Normalizer:
    """The normaliser a run trains with and decodes its samples through."""
    return Normalizer.of_config(config, latent_dir_of(config, workdir))


def check_dataset(config, manifest: dict, latent_dir: str) -> None:
    """Stop before compiling if the encoded data do not fit the config."""
    m = config.model
    want = [m.img_resolution, m.img_resolution, m.in_channels]
    problems = []
    if list(manifest['shape']) != want:
        problems.append(f'latent shape {manifest["shape"]} in {latent_dir}/manifest.json, but the '
                        f'config says (model.img_resolution, model.img_resolution, model.in_channels) = {want}')
    if manifest.get('dtype') != 'float32':
        problems.append(f'dtype {manifest.get("dtype")!r} in the manifest, expected float32')
    if config.data.expected_count and manifest['count'] != config.data.expected_count:
        problems.append(f'{manifest["count"]} examples in the manifest, but data.expected_count='
                        f'{config.data.expected_count}')
    if manifest['count'] < config.batch_size:
        problems.append(f'{manifest["count"]} examples, fewer than batch_size={config.batch_size}')
    classes = num_classes_of(config)
    if classes and not manifest.get('num_classes'):
        problems.append(f'model.dit.num_classes={classes} (class-conditional), but {latent_dir} holds no class '
                        'labels: encode a source with labels (class subfolders of data.image_dir, a tfds '
                        'dataset with a label, the digits) into a fresh data.latent_dir')
    elif classes and manifest['num_classes'] > classes:
        problems.append(f'{manifest["num_classes"]} classes in the manifest, more than model.dit.num_classes='
                        f'{classes}')
    if problems:
        raise ValueError('the encoded dataset does not fit the config:\n  ' + '\n  '.join(problems))


# --- the whole config, before anything is written ---------------------------------------------

def check_config(config, device_count: int | None = None) -> Objective:
    """Every check a config can fail without touching a file: value types and ranges
    (config_checks.py; with `device_count`, the batch over the devices), the network, the objective
    and its samplers, the curves' samplers. A ValueError naming the key; `lct_jax.main` calls it
    first and exits 2, with nothing written."""
    config_checks.check(config, device_count)
    build_model(config)
    objective = build_objective(config)
    configured_samplers(config, objective)
    curve_samplers(config, objective)
    return objective


# --- the evaluator -----------------------------------------------------------------------------

def build_evaluator(config, workdir: str, mesh=None, specs=None, show_progress: bool = True) -> Evaluator:
    """An Evaluator for a run: the feature networks, the real reference (read or computed once),
    the decoder + features on the mesh and each sampler (`specs`, default the configured ones)
    compiled on it."""
    mesh = mesh or parallel.make_mesh()
    ev = config.evaluation
    fid_net = make_features(config)
    same = ev.pr_features == ev.features
    pr_net = fid_net if same else make_features(config, ev.pr_features)
    # Precision / recall need real images; a statistics file alone gives FID only.
    has_real = bool(ev.reference_dir or ev.reference_tfds or not ev.reference_stats)
    wanted = {} if ev.reference_stats else {'fid': fid_net}
    limits = {'fid': None, 'pr': ev.pr_max_real or None}
    if has_real and not (same and 'fid' in wanted):
        wanted['pr'] = pr_net
    real = reference_features(config, workdir, wanted, limits) if wanted else {}
    if ev.reference_stats:
        mu, sigma = stats_file.load_checked(ev.reference_stats, config, fid_net.identity())
    else:
        mu, sigma = fid.statistics(real['fid'])
        if ev.get('save_reference_stats') and jax.process_index() == 0:
            prov = stats_file.provenance(ev.dataset, reference_split(config), config.data.resolution,
                                         len(real['fid']), fid_net.identity())
            written = stats_file.save(ev.save_reference_stats, mu, sigma, prov)
            print(f'reference statistics with their provenance: {written}', flush=True)
    if has_real and 'pr' not in real:
        real['pr'] = real['fid'][:limits['pr']]
    nets = {'fid': fid_net} if same or not has_real else {'fid': fid_net, 'pr': pr_net}
    reference = Reference(mu, sigma, real.get('pr') if has_real else None, 'fid' if same else 'pr')
    codec = make_codec(config.autoencoder, config.model.in_channels)
    featurize = sharded.make_featurizer(codec, make_normalizer(config, workdir), nets, mesh)
    model, objective = build_model(config), build_objective(config)
    specs = specs or configured_samplers(config, objective)
    samplers = {spec.label: make_sampler(config, spec, mesh, model, objective) for spec in specs}
    labels = RowLabels(run=ev.run_name or os.path.basename(os.path.normpath(workdir)), dataset=ev.dataset,
                       method=ev.method, features=ev.features, pr_features=ev.pr_features, recall_k=ev.recall_k)
    return Evaluator(specs, samplers, featurize, reference, functools.partial(paper_table1.paper_numbers, ev),
                     labels, functools.partial(sharded.padded_batch, config.sampling, mesh), mesh, show_progress)
