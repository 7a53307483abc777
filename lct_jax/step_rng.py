"""The randomness of a train step, as pure functions of (seed, step).

Every random draw of step k comes from fold_in(key(seed), k), so a resumed run
is the same run. The noise z of a step is drawn per global batch row, so the
same z comes out whatever the device or host count, and whether the host (in
the input pipeline) or the device (inside the step) draws it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def step_keys(seed: int, step):
    """(noise key, loss key) of a step."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), step))


def step_noise(seed: int, step, rows, shape):
    """Unit Gaussian noise of global batch rows `rows` at `step`: row r from fold_in(noise key, r)."""
    noise_key = step_keys(seed, step)[0]
    return jax.vmap(lambda r: jax.random.normal(jax.random.fold_in(noise_key, r), shape, jnp.float32))(rows)
