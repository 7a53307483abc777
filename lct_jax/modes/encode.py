"""`--mode=encode`: the config's images through its autoencoder into latent TFRecord shards
(data.latent_dir, default <workdir>/latents), holding the work directory's lock."""
from __future__ import annotations

import jax

from lct_jax.data.encode import encode_dataset
from lct_jax.data.latents import latent_dir_of
from lct_jax.data.sources import make_source
from lct_jax.models.autoencoder import make_codec
from lct_jax.workdir.session import WriterSession


def encode(config, workdir: str) -> dict:
    latent_dir = latent_dir_of(config, workdir)
    manifest = encode_dataset(make_source(config.data), make_codec(config.autoencoder, config.model.in_channels),
                              latent_dir, seed=config.seed, batch_size=config.data.encode_batch_size,
                              examples_per_shard=config.data.examples_per_shard)
    if jax.process_index() == 0:
        print(f'encoded {manifest["count"]} examples of shape {manifest["shape"]} into {latent_dir}')
    return manifest


def run(config, workdir: str, flags) -> None:
    with WriterSession(workdir, None, stale_after_s=flags.lock_stale_seconds):
        encode(config, workdir)
