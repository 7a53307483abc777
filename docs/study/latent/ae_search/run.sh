#!/usr/bin/env bash
# One autoencoder setting of the outlier search: train, encode the digits, measure the latents.
# usage (from the repository root): docs/study/latent/ae_search/run.sh NAME [--config.autoencoder_training.* ...]
#   docs/study/latent/ae_search/run.sh kl0 --config.autoencoder_training.kl_weight=0.0
#   docs/study/latent/ae_search/run.sh long2400 --config.autoencoder_training.steps=2400 \
#       --config.autoencoder_training.log_every=200 --config.autoencoder_training.checkpoint_every=400
# then: python docs/study/latent/latent_stats.py workdir/ae_search/NAME/latents --out .../latent_stats.json
set -e
name=$1; shift
W=${WORKROOT:-workdir/ae_search}/$name
S=(--config.autoencoder.weights=$W/ae/vae --config.data.latent_dir=$W/latents)
python -m lct_jax.main --config configs/digits_latent.py --workdir $W/ae --mode=train_autoencoder "$@"
python -m lct_jax.main --config configs/digits_latent.py --workdir $W/ae --mode=encode "${S[@]}" "$@"
python -m lct_jax.main --config configs/digits_latent.py --workdir $W/ae --mode=analyze "${S[@]}" "$@"
