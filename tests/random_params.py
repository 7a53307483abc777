"""Random network weights for tests: the initialiser's, each leaf then moved by a little noise.

Zero-initialised layers (the UNet's output convs, adaLN-Zero) would otherwise make a
fresh network's output depend on nothing; the noise makes every path matter.
"""
import functools

import jax
import jax.numpy as jnp


@functools.lru_cache(maxsize=None)
def perturbed_params(model, input_shape: tuple, seed: int = 0, scale: float = 0.05):
    """`model.init` on zeros of `input_shape` (NHWC) and a (B,) noise label, plus scale x N(0, 1) per leaf."""
    @jax.jit
    def make():
        params = model.init(jax.random.key(seed), jnp.zeros(input_shape), jnp.zeros(input_shape[:1]))['params']
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
        return jax.tree_util.tree_unflatten(tree, [p + scale * jax.random.normal(k, p.shape)
                                                   for p, k in zip(leaves, keys)])
    return make()
