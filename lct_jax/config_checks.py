"""Every config value checked before anything is written: one table of keys, their types and
allowed ranges, and one function that applies it.

Why one table: a value out of range used to surface wherever it was first used, after the run's
record had been written (`--config.batch_size=0` was a ZeroDivisionError after config.json
existed, so the corrected relaunch was refused as a config change), or never (`optimizer.lr=nan`
trained to the end with every parameter NaN). `lct_jax.main` calls `check` (through
builders.check_config) first, and a failure is one line naming the key, its value and what is
allowed, exit 2, with nothing written. docs/untrusted_files.md prints the table (`table_markdown`).

Choices that belong to a module (the norms, the robust metrics, the objectives, the sampler
families) are that module's constants, so a new one is accepted here without an edit.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

from lct_jax.data.coupling import METHODS as COUPLING_METHODS
from lct_jax.data.coupling import PLACEMENTS
from lct_jax.data.pipeline import NORMALIZE_MODES
from lct_jax.data.tails import MAX_POWER
from lct_jax.evaluation.features import FEATURES
from lct_jax.models.norms import NORM_TYPES
from lct_jax.objectives import OBJECTIVES
from lct_jax.objectives.robust import LOSS_NORMS
from lct_jax.objectives.slct import C_SCHEDULES
from lct_jax.sampling import SAMPLERS


class ConfigValueError(ValueError):
    """A config value of the wrong type or out of its range: names the key and what is allowed."""


class Rule(NamedTuple):
    key: str                       # dotted; '*' in place of a tuple's elements
    allowed: str                   # the range, as the error message and the docs say it
    ok: Callable[[object], bool]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int(v):
    return _int(v) and v > 0


def nonnegative_int(v):
    return _int(v) and v >= 0


def positive(v):
    return _number(v) and v > 0


def nonnegative(v):
    return _number(v) and v >= 0


def finite(v):
    return _number(v)


def unit_open(v):              # (0, 1)
    return _number(v) and 0 < v < 1


def unit_closed(v):            # [0, 1]
    return _number(v) and 0 <= v <= 1


def one_of(choices) -> Callable[[object], bool]:
    return lambda v: v in tuple(choices)


def boolean(v):
    return isinstance(v, bool)


def text(v):
    return isinstance(v, str)


def seed(v):
    return _int(v) and 0 <= v < 2 ** 31


def ints_tuple(v, minimum=0, nonempty=True):
    return isinstance(v, (tuple, list)) and (len(v) > 0 or not nonempty) and all(_int(x) and x >= minimum for x in v)


RULES = (
    Rule('seed', 'an integer in [0, 2^31)', seed),
    Rule('batch_size', 'a positive integer (the global batch; divisible by the devices)', positive_int),
    Rule('total_steps', 'an integer >= 0', nonnegative_int),
    Rule('log_every', 'a positive integer', positive_int),
    Rule('checkpoint_every', 'a positive integer', positive_int),
    Rule('sample_every', 'a positive integer', positive_int),
    Rule('objective', f'one of {tuple(OBJECTIVES)}', one_of(OBJECTIVES)),
    Rule('ema_decays', 'a non-empty list of numbers in (0, 1)',
         lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(unit_open(x) for x in v)),
    # the network
    Rule('model.kind', "one of ('unet', 'dit')", one_of(('unet', 'dit'))),
    Rule('model.img_resolution', 'a positive integer', positive_int),
    Rule('model.in_channels', 'a positive integer', positive_int),
    Rule('model.out_channels', 'a positive integer', positive_int),
    Rule('model.model_channels', 'a positive integer', positive_int),
    Rule('model.channel_mult', 'a non-empty list of positive integers', lambda v: ints_tuple(v, 1)),
    Rule('model.num_blocks', 'a positive integer', positive_int),
    Rule('model.attn_resolutions', 'a list of positive integers', lambda v: ints_tuple(v, 1, nonempty=False)),
    Rule('model.dropout', 'a number in [0, 1)', lambda v: _number(v) and 0 <= v < 1),
    Rule('model.block_norm', f'one of {NORM_TYPES}', one_of(NORM_TYPES)),
    Rule('model.out_norm', f'one of {NORM_TYPES}', one_of(NORM_TYPES)),
    Rule('model.dtype', "one of ('float32', 'bfloat16')", one_of(('float32', 'bfloat16'))),
    Rule('model.remat', 'true or false', boolean),
    Rule('model.two_times', 'true or false', boolean),
    Rule('model.logvar_head', 'true or false', boolean),
    Rule('model.v_head', 'true or false', boolean),
    Rule('model.dit.guidance_inputs', 'true or false', boolean),
    Rule('model.dit.patch_size', 'a positive integer', positive_int),
    Rule('model.dit.hidden_size', 'a positive integer', positive_int),
    Rule('model.dit.depth', 'a positive integer', positive_int),
    Rule('model.dit.num_heads', 'a positive integer', positive_int),
    Rule('model.dit.mlp_ratio', 'a positive number', positive),
    Rule('model.dit.num_classes', 'an integer >= 0 (0: unconditional)', nonnegative_int),
    Rule('model.dit.class_dropout_prob', 'a number in [0, 1)', lambda v: _number(v) and 0 <= v < 1),
    # sLCT / iCT
    Rule('consistency.start_scales', 'a positive integer', positive_int),
    Rule('consistency.end_scales', 'a positive integer', positive_int),
    Rule('consistency.sigma_min', 'a positive number', positive),
    Rule('consistency.sigma_max', 'a positive number', positive),
    Rule('consistency.rho', 'a positive number', positive),
    Rule('consistency.sigma_data', 'a positive number', positive),
    Rule('consistency.p_mean', 'a finite number', finite),
    Rule('consistency.p_std', 'a positive number', positive),
    Rule('consistency.loss_norm', f'one of {LOSS_NORMS}', one_of(LOSS_NORMS)),
    Rule('consistency.c_schedule', f'one of {C_SCHEDULES}', one_of(C_SCHEDULES)),
    Rule('consistency.c0', 'a positive number', positive),
    Rule('consistency.weight_schedule', "one of ('ict', 'uniform')", one_of(('ict', 'uniform'))),
    Rule('consistency.diffusion_weight', 'a number >= 0 (0: off)', nonnegative),
    Rule('consistency.diffusion_threshold', 'a number in [0, 1]', unit_closed),
    # the baselines
    Rule('meanflow.p_mean', 'a finite number', finite),
    Rule('meanflow.p_std', 'a positive number', positive),
    Rule('meanflow.data_proportion', 'a number in [0, 1]', unit_closed),
    Rule('meanflow.norm_p', 'a number >= 0', nonnegative),
    Rule('meanflow.norm_eps', 'a positive number', positive),
    Rule('meanflow.omega', 'a finite number', finite),
    Rule('meanflow.kappa', 'a finite number', finite),
    Rule('meanflow.t_start', 'a number in [0, 1]', unit_closed),
    Rule('meanflow.t_end', 'a number in [0, 1]', unit_closed),
    Rule('sct.p_mean', 'a finite number', finite),
    Rule('sct.p_std', 'a positive number', positive),
    Rule('sct.tangent_warmup_steps', 'an integer >= 0 (0: no warm-up)', nonnegative_int),
    Rule('sct.tangent_norm_c', 'a positive number', positive),
    Rule('sct.tangent_norm', "one of ('rms', 'l2')", one_of(('rms', 'l2'))),
    Rule('sct.prior_weighting', 'true or false', boolean),
    Rule('sct.jvp', "one of ('autodiff', 'finite_difference')", one_of(('autodiff', 'finite_difference'))),
    Rule('sct.finite_difference_eps', 'a number in (0, 1)', unit_open),
    Rule('sct.time_scale', 'a positive number', positive),
    Rule('sct.two_step_t', 'a number in (0, pi/2)', lambda v: _number(v) and 0 < v < math.pi / 2),
    Rule('imf.p_mean', 'a finite number', finite),
    Rule('imf.p_std', 'a positive number', positive),
    Rule('imf.data_proportion', 'a number in [0, 1]', unit_closed),
    Rule('imf.norm_p', 'a number >= 0', nonnegative),
    Rule('imf.norm_eps', 'a positive number', positive),
    Rule('imf.guidance', 'true or false', boolean),
    Rule('imf.cfg_beta', 'a positive number', positive),
    Rule('imf.cfg_s_max', 'a positive number', positive),
    Rule('imf.sample_omega', 'a number >= 1', lambda v: _number(v) and v >= 1),
    Rule('imf.sample_t_min', 'a number in [0, 1]', unit_closed),
    Rule('imf.sample_t_max', 'a number in [0, 1]', unit_closed),
    Rule('ldm.num_levels', 'an integer >= 2', lambda v: _int(v) and v >= 2),
    Rule('ldm.c', 'a positive number', positive),
    # pairing, optimisation, the mesh, the loop
    Rule('coupling.method', f'one of {COUPLING_METHODS}', one_of(COUPLING_METHODS)),
    Rule('coupling.sinkhorn_epsilon', 'a positive number', positive),
    Rule('coupling.placement', f'one of {PLACEMENTS}', one_of(PLACEMENTS)),
    Rule('coupling.host_threads', 'an integer >= 0 (0: one per local device)', nonnegative_int),
    Rule('optimizer.kind', "one of ('radam', 'adamw')", one_of(('radam', 'adamw'))),
    Rule('optimizer.lr', 'a positive finite number', positive),
    Rule('optimizer.b1', 'a number in [0, 1)', lambda v: _number(v) and 0 <= v < 1),
    Rule('optimizer.b2', 'a number in [0, 1)', lambda v: _number(v) and 0 <= v < 1),
    Rule('optimizer.eps', 'a positive number', positive),
    Rule('optimizer.weight_decay', 'a number >= 0', nonnegative),
    Rule('optimizer.warmup_steps', 'an integer >= 0', nonnegative_int),
    Rule('optimizer.decay', "one of ('constant', 'cosine')", one_of(('constant', 'cosine'))),
    Rule('optimizer.grad_clip', 'a number >= 0 (0: off)', nonnegative),
    Rule('mesh.fsdp', 'true or false', boolean),
    Rule('mesh.fsdp_min_size', 'an integer >= 0', nonnegative_int),
    Rule('train.max_skips_in_a_row', 'a positive integer', positive_int),
    Rule('train.keep_checkpoints', 'a positive integer', positive_int),
    Rule('train.keep_period', 'an integer >= 0 (0: none kept beyond the last few)', nonnegative_int),
    Rule('train.prefetch', 'a positive integer', positive_int),
    Rule('train.reader_processes', 'an integer >= 0', nonnegative_int),
    Rule('train.restore_fallback', 'true or false', boolean),
    # data
    Rule('data.source', "one of ('digits', 'image_dir', 'tfds')", one_of(('digits', 'image_dir', 'tfds'))),
    Rule('data.resolution', 'a positive integer', positive_int),
    Rule('data.flips', 'true or false', boolean),
    Rule('data.class_labels', 'true or false', boolean),
    Rule('data.examples_per_shard', 'a positive integer', positive_int),
    Rule('data.expected_count', 'an integer >= 0 (0: whatever the manifest says)', nonnegative_int),
    Rule('data.normalize', f'one of {NORMALIZE_MODES}', one_of(NORMALIZE_MODES)),
    Rule('data.tail_power', f'a number in [0, {MAX_POWER:g}] (0: as encoded)', lambda v: _number(v) and 0 <= v <= MAX_POWER),
    Rule('data.encode_batch_size', 'a positive integer', positive_int),
    Rule('autoencoder.kind', "one of ('kl', 'identity')", one_of(('kl', 'identity'))),
    Rule('autoencoder.scale_factor', 'a positive number', positive),
    # sampling and evaluation
    Rule('sampling.num_grid', 'a positive integer', positive_int),
    Rule('sampling.grid_steps', 'an integer >= 2', lambda v: _int(v) and v >= 2),
    Rule('sampling.ts', 'a non-empty, increasing list of integers >= 0',
         lambda v: ints_tuple(v) and all(a < b for a, b in zip(v, v[1:]))),
    Rule('sampling.seed', 'an integer in [0, 2^31)', seed),
    Rule('sampling.sampler', f'one of {SAMPLERS}', one_of(SAMPLERS)),
    Rule('sampling.ode_steps', 'a positive integer', positive_int),
    Rule('sampling.num_samples', 'a positive integer', positive_int),
    Rule('sampling.batch_size', 'a positive integer', positive_int),
    Rule('sampling.image_format', "one of ('jpeg', 'png')", one_of(('jpeg', 'png'))),
    Rule('sampling.device_batch', 'an integer >= 0 (0: sampling.batch_size over the devices)', nonnegative_int),
    Rule('sampling.class_grids', 'an integer >= 0', nonnegative_int),
    Rule('evaluation.features', f'one of {FEATURES}', one_of(FEATURES)),
    Rule('evaluation.pr_features', f'one of {FEATURES}', one_of(FEATURES)),
    Rule('evaluation.vgg16_input', "one of ('torchvision', 'caffe')", one_of(('torchvision', 'caffe'))),
    Rule('evaluation.recall_k', 'a positive integer', positive_int),
    Rule('evaluation.pr_max_real', 'an integer >= 0 (0: every real image)', nonnegative_int),
    Rule('evaluation.every', 'an integer >= 0 (0: off)', nonnegative_int),
    Rule('evaluation.num_samples', 'an integer >= 0 (0: sampling.num_samples)', nonnegative_int),
    Rule('evaluation.paper_fid_1step', 'a number >= 0 (0: none)', nonnegative),
    Rule('evaluation.paper_fid_2step', 'a number >= 0 (0: none)', nonnegative),
    Rule('evaluation.paper_recall_1step', 'a number in [0, 1] (0: none)', unit_closed),
    Rule('evaluation.paper_recall_2step', 'a number in [0, 1] (0: none)', unit_closed),
    Rule('evaluation.run_name', 'a string', text),
    Rule('evaluation.dataset', 'a string', text),
    Rule('evaluation.method', 'a string', text),
    # the small KL autoencoder (configs/digits_latent.py)
    Rule('autoencoder_training.steps', 'an integer >= 0', nonnegative_int),
    Rule('autoencoder_training.batch_size', 'a positive integer', positive_int),
    Rule('autoencoder_training.lr', 'a positive finite number', positive),
    Rule('autoencoder_training.kl_weight', 'a number >= 0', nonnegative),
    Rule('autoencoder_training.log_every', 'a positive integer', positive_int),
    Rule('autoencoder_training.checkpoint_every', 'a positive integer', positive_int),
    Rule('autoencoder_training.latent_channels', 'a positive integer', positive_int),
)


def _lookup(config, key: str):
    node = config
    for part in key.split('.'):
        if not hasattr(node, 'keys') or part not in node:
            return _ABSENT
        node = node[part]
    return node


_ABSENT = object()


def _show(value) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= 60 else text_[:60] + '...'


def check(config, device_count: int | None = None) -> None:
    """ConfigValueError for the first value out of range (a key the config lacks is skipped: the
    paper configs have no autoencoder_training section). With `device_count`, the global batch
    must divide over the devices."""
    for rule in RULES:
        value = _lookup(config, rule.key)
        if value is _ABSENT:
            continue
        if not rule.ok(value):
            raise ConfigValueError(f'config value {rule.key}={_show(value)} is out of range: expected {rule.allowed}')
    relations = [
        (config.consistency.end_scales >= config.consistency.start_scales,
         f'consistency.end_scales={config.consistency.end_scales} must be >= consistency.start_scales='
         f'{config.consistency.start_scales}'),
        (config.consistency.sigma_max > config.consistency.sigma_min,
         f'consistency.sigma_max={config.consistency.sigma_max} must be > consistency.sigma_min='
         f'{config.consistency.sigma_min}'),
        (max(config.sampling.ts) < config.sampling.grid_steps,
         f'sampling.ts={tuple(config.sampling.ts)} must index the {config.sampling.grid_steps}-point grid '
         '(sampling.grid_steps)'),
        (config.meanflow.t_start <= config.meanflow.t_end,
         f'meanflow.t_start={config.meanflow.t_start} must be <= meanflow.t_end={config.meanflow.t_end}'),
        (config.sampling.ema == 'params' or config.sampling.ema in {f'ema_{d:g}' for d in config.ema_decays},
         f"sampling.ema={config.sampling.ema!r} is not an EMA this run keeps: expected 'params' or one of "
         f"{sorted(f'ema_{d:g}' for d in config.ema_decays)} (ema_decays)"),
    ]
    if device_count:
        relations.append((config.batch_size % device_count == 0,
                          f'batch_size={config.batch_size} must be divisible by the {device_count} devices'))
    for ok, message in relations:
        if not ok:
            raise ConfigValueError(f'config value {message}')


def table_markdown() -> str:
    """The rules as a markdown table (docs/untrusted_files.md prints it: `python -m lct_jax.config_checks`)."""
    lines = ['| key | allowed |', '|---|---|']
    lines += [f'| `{r.key}` | {r.allowed} |' for r in RULES]
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    print(table_markdown(), end='')
