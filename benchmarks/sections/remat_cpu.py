"""Whether this backend's compiler keeps jax.checkpoint's recomputation (`remat_cpu`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def remat_on_cpu():
    """Dots and temp memory of a toy MLP, with and without jax.checkpoint.

    8 blocks of 4 (4096x512 @ 512x512, tanh) layers, gradient with and without jax.checkpoint per
    block: JAX's lowering adds the recomputed dots; the compiled program shows whether XLA kept them.
    """
    def block(w, x):
        for _ in range(4):
            x = jnp.tanh(x @ w)
        return x

    def loss(ws, x, remat):
        for w in ws:
            x = (jax.checkpoint(block) if remat else block)(w, x)
        return jnp.sum(x)

    ws = [jax.ShapeDtypeStruct((512, 512), jnp.float32)] * 8
    x = jax.ShapeDtypeStruct((4096, 512), jnp.float32)
    out = {}
    for remat in (False, True):
        lowered = jax.jit(jax.grad(lambda ws, x, r=remat: loss(ws, x, r))).lower(ws, x)
        compiled = lowered.compile()
        name = 'remat' if remat else 'plain'
        out[f'dots_lowered_{name}'] = lowered.as_text().count('dot_general')
        out[f'dots_compiled_{name}'] = compiled.as_text().count(' dot(')
        out[f'temp_mb_{name}'] = compiled.memory_analysis().temp_size_in_bytes / 1e6
    return out


SECTIONS = {'remat_cpu': (lambda r, mesh, q: {'remat_cpu': remat_on_cpu()}, False)}
