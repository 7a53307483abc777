"""The weights `--mode=sample` and `--mode=evaluate` use: one of our checkpoints (an EMA or the raw
params), or an authors' PyTorch .pt file, checked against the config's network before any
sampler is compiled."""
from __future__ import annotations

import os

import jax.numpy as jnp

from lct_jax.builders import build_model
from lct_jax.models.convert import (
    model_params_from_torch,
    param_shapes,
    state_dict_arrays,
)
from lct_jax.names import check_component
from lct_jax.train.checkpoints import (
    CheckpointMismatchError,
    flat_shapes,
    latest_step_dir,
    load_numpy,
    shape_mismatches,
)
from lct_jax.untrusted import UnreadableFileError, torch_load


def load_params(config, workdir, checkpoint: str = '', ema: str | None = None):
    """(params, description) from our checkpoints or an authors' PyTorch .pt file.

    ema: 'ema_<decay>' or 'params' (raw weights); default config.sampling.ema.
    """
    ema = ema or config.sampling.ema
    # it names a file and a directory of samples: one plain name (docs/untrusted_files.md)
    check_component(ema, 'sampling.ema')
    if checkpoint.endswith(('.pt', '.pth')):
        # Untrusted: unpickled with weights_only=True and the authors' plain types only (lct_jax/untrusted.py).
        ckpt = torch_load(checkpoint, "an authors' checkpoint")
        if not isinstance(ckpt, dict):
            raise UnreadableFileError(f'{checkpoint}: expected an authors\' checkpoint (a dict with model, '
                                      f'ema, target, opt, args), found a {type(ckpt).__name__}')
        key = 'model' if ema == 'params' else ema
        if key not in ckpt:
            raise KeyError(f'{checkpoint} has no {key!r}; it holds {sorted(map(str, ckpt))}')
        return (model_params_from_torch(state_dict_arrays(ckpt[key], checkpoint, f'its {key!r}'), build_model(config)),
                f'{os.path.basename(checkpoint)}:{key}')
    checkpoint = checkpoint or latest_step_dir(workdir)
    tree = load_numpy(checkpoint)
    if ema == 'params':
        params = tree['params']
    elif ema in tree['ema']:
        params = tree['ema'][ema]
    else:
        raise KeyError(f'{checkpoint} has no EMA {ema!r}; it has {sorted(tree["ema"])} and params')
    check_params_fit(params, config, f'the checkpoint at {checkpoint} ({ema})',
                     hint=f'sample and evaluate start from the run\'s recorded config ({workdir}/config.json); '
                          'command-line --config.* flags go on top of it: drop those that change the model')
    return params, f'step {int(tree["step"])}:{ema}'


def check_params_fit(params, config, what: str, hint: str = '') -> None:
    """One error naming the mismatched keys and shapes (instead of Flax's ScopeParamShapeError from
    deep inside the sampler) if `params` are not the params of the config's model."""
    m = config.model
    wanted = param_shapes(build_model(config), jnp.zeros((1, m.img_resolution, m.img_resolution, m.in_channels)),
                          jnp.zeros((1,)))
    problems = shape_mismatches(flat_shapes(params), {'/'.join(k): v for k, v in wanted.items()})
    if problems:
        raise CheckpointMismatchError(f'{what} does not fit the config\'s model:\n{problems}'
                                      + (f'\n{hint}' if hint else ''))
