"""Minibatch OT coupling: optimal, a permutation, per device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from lct_jax import parallel
from lct_jax.data import coupling


def _cost_matrix(x, z):
    x, z = x.reshape(len(x), -1), z.reshape(len(z), -1)
    return ((x[:, None, :] - z[None, :, :]) ** 2).sum(-1)


def _data(n, seed=0, shape=(4, 8, 8)):
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((n, *shape))).astype(np.float32), rng.standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize('n', [8, 64])
def test_exact_matching_equals_scipy_optimum(n):
    x, z = _data(n)
    perm = np.asarray(jax.jit(coupling.exact_permutation)(x, z))
    assert sorted(perm.tolist()) == list(range(n))
    C = _cost_matrix(x, z)
    r, c = linear_sum_assignment(C)
    assert C[np.arange(n), perm].sum() == pytest.approx(C[r, c].sum(), rel=1e-5)


def test_sinkhorn_rounding_gives_a_good_permutation():
    x, z = _data(64, seed=1)
    perm = np.asarray(jax.jit(coupling.sinkhorn_permutation)(x, z))
    assert sorted(perm.tolist()) == list(range(64))
    C = _cost_matrix(x, z)
    r, c = linear_sum_assignment(C)
    opt, ident, got = C[r, c].sum(), np.trace(C), C[np.arange(64), perm].sum()
    assert opt <= got < ident
    assert (got - opt) < 0.2 * (ident - opt)


def test_round_plan_to_permutation_handles_a_diffuse_plan():
    plan = jnp.full((5, 5), 0.04).at[0, 3].set(0.1).at[2, 3].set(0.09)
    perm = np.asarray(coupling.round_plan_to_permutation(plan))
    assert sorted(perm.tolist()) == list(range(5)) and perm[0] == 3


def test_couple_reports_cost_ratio_below_one():
    x, z = _data(32, seed=2)
    paired, ratio = coupling.couple(jnp.asarray(x), jnp.asarray(z), 'exact')
    C = _cost_matrix(x, z)
    assert float(ratio) == pytest.approx(C[linear_sum_assignment(C)].sum() / np.trace(C), rel=1e-4)
    assert float(ratio) < 1.0
    same, one = coupling.couple(jnp.asarray(x), jnp.asarray(z), 'none')
    assert same is not None and float(one) == 1.0


def test_pairs_form_within_each_device_batch_only():
    assert jax.device_count() == 4
    mesh = parallel.make_mesh()
    n, per = 32, 8
    x, z = _data(n, seed=3)
    xs = jax.device_put(x, parallel.batch_sharding(mesh))
    zs = jax.device_put(z, parallel.batch_sharding(mesh))
    paired, ratio = jax.jit(lambda a, b: coupling.couple_per_device(a, b, mesh))(xs, zs)
    paired = np.asarray(paired)
    ratios = []
    for d in range(4):
        blk = slice(d * per, (d + 1) * per)
        # every paired noise row of device d is one of device d's own rows
        rows = [int(np.where((z[blk] == p).all(axis=(1, 2, 3)))[0][0]) for p in paired[blk]]
        assert sorted(rows) == list(range(per))
        C = _cost_matrix(x[blk], z[blk])
        r, c = linear_sum_assignment(C)
        assert _cost_matrix(x[blk], paired[blk]).trace() == pytest.approx(C[r, c].sum(), rel=1e-5)
        ratios.append(C[r, c].sum() / np.trace(C))
    assert float(np.mean(ratio)) == pytest.approx(np.mean(ratios), rel=1e-4)
