"""One module per `--mode` of `python -m lct_jax.main`, each with `run(config, workdir, flags)`.

    train              train (or resume) a run: its lock, record, loop       train.py
    encode             images -> latent TFRecord shards                       encode.py
    sample             write samples, grids and an .npz from a checkpoint     sample.py
    evaluate           FID / precision / recall rows; curves over steps       evaluate.py
    analyze            tail statistics of the latents (spec §19)              analyze.py
    train_autoencoder  the small KL autoencoder of the latent studies         train_autoencoder.py

`lct_jax.main` imports the one it runs (MODES below); nothing in the library imports a mode.
"""
from __future__ import annotations

from typing import NamedTuple

MODES = ('train', 'encode', 'sample', 'evaluate', 'analyze', 'train_autoencoder')


class RunFlags(NamedTuple):
    """The command line's settings a mode may use besides the config and the work directory."""
    checkpoint: str = ''              # sample / evaluate: a step dir, an authors' .pt, 'all' or 'a,b,' (curves)
    allow_config_change: bool = False
    overrides: dict = {}              # the --config.* flags given ({dotted key: value})
    lock_stale_seconds: float = 120.0
