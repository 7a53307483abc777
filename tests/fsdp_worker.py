"""FSDP checks on their own device count: `python -m tests.fsdp_worker <check> <devices> [workdir]`.

Prints one JSON line (the last line of stdout) for tests/test_fsdp.py to assert on:
  equivalence  sharded vs replicated train steps on the same batches, state bytes per device,
               XLA's memory analysis of both update programs, the collectives in each
  save         two FSDP train steps, checkpointed in workdir as the loop does
`restore` (a checkpoint into any device count's layout) runs in the test process too.
"""
import json
import sys

import jax
import numpy as np

from configs import default
from lct_jax import parallel
from lct_jax.data.pipeline import HostBatch
from lct_jax.train import checkpoints, loop


def config(fsdp: bool, **overrides):
    c = default.get_config('dit,smoke')
    with c.unlocked():
        c.model.dit.update(hidden_size=64, num_heads=2)
        c.mesh.update(fsdp=fsdp, fsdp_min_size=256)
        c.coupling.method = 'none'    # the pairing is per device and tested elsewhere; keep the batches equal
        c.update(overrides)   # top-level keys only
    return c


def per_device_bytes(tree) -> int:
    """Bytes device 0 holds of a pytree of global arrays."""
    dev = jax.devices()[0]
    return sum(s.data.nbytes for leaf in jax.tree_util.tree_leaves(tree)
               for s in leaf.addressable_shards if s.device == dev)


def host(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(jax.device_get(a)), tree)


def equivalence():
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    batches = [(0.5 * rng.standard_normal((16, 8, 8, 1))).astype(np.float32) for _ in range(3)]
    out = {}
    for name, fsdp in (('replicated', False), ('fsdp', True)):
        c = config(fsdp)
        _, _, state, step = loop.build_training(c, mesh)
        pairer = loop.make_host_pairer(c, mesh)
        out[f'{name}_state_bytes_per_device'] = per_device_bytes(state)
        out[f'{name}_sharded_leaves'] = sum(not leaf.sharding.is_fully_replicated
                                            for leaf in jax.tree_util.tree_leaves(state))
        out['leaves'] = len(jax.tree_util.tree_leaves(state))
        first = loop.device_batch(HostBatch.of(batches[0], pairer, 0), mesh)
        compiled = step.update.lower(state, first).compile()
        mem = compiled.memory_analysis()
        out[f'{name}_xla_argument_bytes'] = mem.argument_size_in_bytes
        out[f'{name}_xla_output_bytes'] = mem.output_size_in_bytes
        hlo = compiled.as_text()
        out[f'{name}_collectives'] = {op: hlo.count(f' {op}(') + hlo.count(f' {op}-start(')
                                      for op in ('all-gather', 'reduce-scatter', 'all-reduce')}
        losses = []
        for i, x in enumerate(batches):
            state, m = step(state, loop.device_batch(HostBatch.of(x, pairer, i), mesh))
            losses.append(float(m['loss']))
        pairer.close()
        out[f'{name}_losses'] = losses
        out[f'{name}_state_sharding_after'] = sum(not leaf.sharding.is_fully_replicated
                                                  for leaf in jax.tree_util.tree_leaves(state))
        out[f'{name}_trace_count'] = step.trace_count()
        out[name] = host(state)
    a, b = out.pop('replicated'), out.pop('fsdp')
    diffs = jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-12)), a, b)
    leaves = jax.tree_util.tree_leaves_with_path(diffs)
    out['max_relative_difference'] = max(d for _, d in leaves)
    out['worst_leaf'] = jax.tree_util.keystr(max(leaves, key=lambda kv: kv[1])[0])
    return out


def save(workdir, steps=2):
    """A few FSDP steps, then a checkpoint as the loop writes it (checkpoints.save)."""
    mesh = parallel.make_mesh()
    c = config(True)
    _, _, state, step = loop.build_training(c, mesh)
    pairer = loop.make_host_pairer(c, mesh)
    rng = np.random.default_rng(1)
    for i in range(steps):
        x = (0.5 * rng.standard_normal((16, 8, 8, 1))).astype(np.float32)
        state, m = step(state, loop.device_batch(HostBatch.of(x, pairer, i), mesh))
    pairer.close()
    manager = checkpoints.make_manager(workdir)
    checkpoints.save(manager, steps, state)
    checkpoints.wait(manager)
    checkpoints.close(manager)
    return {'final_step': int(state.step), 'loss': float(m['loss']),
            'sharded_leaves': sum(not leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(state))}


def restore(workdir, mesh):
    _, _, fresh, _ = loop.build_training(config(True), mesh)
    manager = checkpoints.make_manager(workdir)
    state, step = checkpoints.restore_latest(manager, fresh)
    checkpoints.close(manager)
    saved = checkpoints.load_numpy(f'{workdir}/checkpoints/{step}')
    got = host({'params': state.params, 'ema': state.ema})
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(got),
                                                          jax.tree_util.tree_leaves(
                                                              {'params': saved['params'], 'ema': saved['ema']})))
    kernel = state.params['blocks_0']['mlp']['fc1']['kernel']
    return {'step': step, 'restored_step': int(state.step), 'max_abs_difference': diff,
            'kernel_shape': list(kernel.shape), 'kernel_shard_shape': list(kernel.addressable_shards[0].data.shape),
            'sharded_leaves': sum(not leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(state)),
            'state_bytes_per_device': per_device_bytes(state)}


if __name__ == '__main__':
    jax.config.update('jax_num_cpu_devices', int(sys.argv[2]))
    jax.config.update('jax_platforms', 'cpu')
    result = {'equivalence': equivalence, 'save': lambda: save(sys.argv[3]),
              'restore': lambda: restore(sys.argv[3], parallel.make_mesh())}[sys.argv[1]]()
    print(json.dumps(dict(result, devices=len(jax.devices()))))
