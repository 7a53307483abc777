"""Where a train step's time goes: the step's device program against the network's own work.

Sections: `matmul` (this backend's f32 matmul peak, the MFU denominator), `default` (digits
config) and `reduced_paper` (the paper UNet at 32 channels, batch 8).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax
from common import (
    StepRunner,
    analytic_forward_flops,
    host_pairing_seconds,
    matmul_peak,
    paired_batch,
    random_batch,
    timeit,
    timeit_side_by_side,
)

from configs import celebahq256, default
from lct_jax import hlo
from lct_jax.objectives.slct import slct_loss
from lct_jax.train import loop
from lct_jax.train.state import make_optimizer


def reduced_paper_config(batch):
    c = celebahq256.get_config()
    with c.unlocked():
        c.model.model_channels = 32     # the paper's UNet, fewer channels: same depth and attention
        c.batch_size = batch
    return c


def step_breakdown(config, mesh):
    """Full step vs the network's own work, optimizer+EMA, and XLA's FLOP count."""
    model, obj, state, step = loop.build_training(config, mesh)
    optimizer = make_optimizer(loop._opt_cfg(config))
    m = config.model
    shape = (config.batch_size, m.img_resolution, m.img_resolution, m.in_channels)
    batch = random_batch(shape, mesh)
    t0 = time.perf_counter()
    programs = {name: lowered.compile() for name, lowered in step.lower(state, batch).items()}
    compile_s = time.perf_counter() - t0
    xla_flops = sum(float(c.cost_analysis().get('flops', float('nan'))) for c in programs.values())
    z = jax.random.normal(jax.random.key(2), shape)

    @jax.jit
    def network_work(params, x, z, step):  # what the step cannot avoid: student fwd+bwd, target fwd
        return jax.value_and_grad(lambda p: slct_loss(p, model.apply, x, z, jax.random.key(3), step, obj)[0])(params)

    # The step donates its state: time the network on a copy of the parameters.
    params = jax.tree_util.tree_map(jnp.copy, state.params)
    run_step = StepRunner(programs, state, paired_batch(config, mesh, batch))
    step_index = jnp.int32(5)
    t = timeit_side_by_side({'step': run_step,
                             'network': lambda: network_work(params, batch, z, step_index)})
    step_s, net_s = t['step'], t['network']
    host_pair_s = host_pairing_seconds(config, mesh, batch)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)

    @jax.jit
    def opt_and_ema(opt_state, params, ema, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        new = optax.apply_updates(params, updates)
        ema = {k: jax.tree_util.tree_map(lambda e, p: 0.9999 * e + 1e-4 * p, v, new) for k, v in ema.items()}
        return opt_state, new, ema

    opt_s = timeit(opt_and_ema, run_step.state.opt_state, params, run_step.state.ema, grads)
    analytic = 4 * analytic_forward_flops(config, config.batch_size)  # fwd + 2x bwd + target fwd
    return {'batch': config.batch_size, 'step_seconds': step_s, 'network_seconds': net_s,
            'overhead_ratio': step_s / net_s, 'optimizer_ema_seconds': opt_s, 'host_pairing_seconds': host_pair_s,
            'data_dependent_while_loops': sum(hlo.count_data_dependent_while_loops(c) for c in programs.values()),
            'compile_seconds': compile_s,
            'xla_flops': xla_flops, 'analytic_network_flops': analytic,
            'xla_over_analytic': xla_flops / analytic, 'achieved_flops_per_s': analytic / step_s}


SECTIONS = {
    'matmul': (lambda r, mesh, q: {'matmul_peak_flops_per_s': matmul_peak()}, False),
    'default': (lambda r, mesh, q: {'default': step_breakdown(default.get_config(), mesh)}, False),
    'reduced_paper': (lambda r, mesh, q: {'reduced_paper': step_breakdown(reduced_paper_config(8), mesh)}, False),
}
