"""XLA's memory analysis of the paper's update program at per-device batch 32 / 64 / 128
(`peak_memory_paper`; compiled, not run)."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from configs import celebahq256
from lct_jax import parallel
from lct_jax.builders import build_model, build_objective
from lct_jax.train import loop
from lct_jax.train.state import lr_schedule, make_optimizer
from lct_jax.train.step import make_train_step


def peak_memory(mesh, batches=(32, 64, 128)):
    """Without remat: XLA's CPU compiler removes the recomputation (see `remat_cpu`), so a CPU
    memory analysis of the remat program shows no saving that an accelerator would see."""
    out = {}
    config = celebahq256.get_config()
    for b in batches:
        with config.unlocked():
            config.batch_size = b * mesh.devices.size
        model, obj = build_model(config), build_objective(config)
        opt_cfg = loop._opt_cfg(config)
        optimizer = make_optimizer(opt_cfg)
        abstract = jax.eval_shape(lambda: loop.make_initial_state(config, model, optimizer, mesh))
        abstract = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)), abstract)
        step = make_train_step(model, obj, optimizer, lr_schedule(opt_cfg), loop.step_config(config), mesh)
        batch = jax.ShapeDtypeStruct((config.batch_size, 32, 32, 4), jnp.float32,
                                     sharding=parallel.batch_sharding(mesh))
        t0 = time.perf_counter()
        mem = step.lower(abstract, batch)['update'].compile().memory_analysis()
        total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes \
            - mem.alias_size_in_bytes
        key = f'per_device_batch_{b}'
        out[key] = {'batch': b, 'temp_gb': mem.temp_size_in_bytes / 1e9,
                    'arguments_gb': mem.argument_size_in_bytes / 1e9, 'peak_estimate_gb': total / 1e9,
                    'compile_seconds': time.perf_counter() - t0}
        print(key, out[key], flush=True)
    return out


# compiles the full paper step three times: about 5 minutes on 2 CPU cores
SECTIONS = {'peak_memory_paper': (lambda r, mesh, q: {'peak_memory_paper': peak_memory(mesh)}, True)}
