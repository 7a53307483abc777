"""`--mode=train_autoencoder`: the small KL autoencoder of the latent studies (train/autoencoder.py),
holding the work directory's lock."""
from __future__ import annotations

from lct_jax.train.autoencoder import train_autoencoder
from lct_jax.workdir.session import WriterSession


def run(config, workdir: str, flags) -> None:
    with WriterSession(workdir, None, stale_after_s=flags.lock_stale_seconds):
        train_autoencoder(config, workdir)
