"""Closed-form values of the schedules from shared/spec/method.md §3-§7."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.objectives import edm, slct


def test_sigma_grid_n11_matches_spec():
    spec = [80, 45.31, 24.41, 12.38, 5.839, 2.515, 0.9654, 0.3183, 0.0851, 0.0167, 0.002]
    np.testing.assert_allclose(edm.karras_sigmas(11), spec, rtol=2e-3)


def test_sigma_at_traced_n_equals_grid():
    f = jax.jit(lambda i, n: edm.karras_sigma(i, n))
    np.testing.assert_allclose(f(jnp.arange(41), 41), edm.karras_sigmas(41), rtol=1e-6)


def test_boundary_scalings_and_noise_conditioning():
    c_skip, c_out, c_in = edm.boundary_scalings(jnp.float32(0.002))
    assert float(c_skip) == pytest.approx(1.0) and float(c_out) == pytest.approx(0.0, abs=1e-9)
    sig = 3.0
    c_skip, c_out, c_in = edm.boundary_scalings(jnp.float32(sig))
    assert float(c_skip) == pytest.approx(0.25 / ((sig - 0.002) ** 2 + 0.25), rel=1e-6)
    assert float(c_out) == pytest.approx((sig - 0.002) * 0.5 / np.sqrt(sig**2 + 0.25), rel=1e-6)
    assert float(c_in) == pytest.approx(1 / np.sqrt(sig**2 + 0.25), rel=1e-6)
    assert float(edm.noise_conditioning(jnp.float32(80.0))) == pytest.approx(250 * np.log(80), rel=1e-6)


def test_curriculum_stage_boundaries_for_294000_steps():
    assert slct.stage_length(294_000) == 42_000
    steps = np.array([0, 41_999, 42_000, 83_999, 84_000, 126_000, 168_000, 210_000, 251_999,
                      252_000, 293_999, 294_000])
    want = [11, 11, 21, 21, 41, 81, 161, 321, 321, 641, 641, 641]
    np.testing.assert_array_equal(jax.jit(lambda k: slct.num_scales(k, 294_000))(steps), want)


def test_curriculum_floors_like_the_authors_for_uneven_ratio():
    # s1/s0 = 100/10 -> log2(10) + 1 = 4.32 stages worth of steps, floored.
    assert slct.stage_length(1000, 10, 100) == int(1000 / (np.log2(10) + 1))
    assert int(slct.num_scales(10**6, 1000, 10, 100)) == 101


@pytest.mark.parametrize('n, mass', [(11, 0.244), (21, 0.366), (81, 0.366), (641, 0.366)])
def test_interval_probs_sum_to_one_and_early_mass(n, mass):
    p = np.asarray(slct.interval_probs(edm.karras_sigmas(n)))
    assert len(p) == n - 1
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    assert p[int(np.floor(0.75 * n)):].sum() == pytest.approx(mass, abs=1.5e-3)


def test_padded_logits_equal_probs_for_traced_n():
    logits = jax.jit(lambda n: slct.interval_logits(n, 641))(21)
    p = np.asarray(slct.interval_probs(edm.karras_sigmas(21)))
    np.testing.assert_allclose(np.exp(logits[:20]) / np.exp(logits[:20]).sum(), p, rtol=1e-4)
    assert np.all(np.isneginf(np.asarray(logits[20:])))


def test_sampled_intervals_follow_the_distribution():
    idx = np.asarray(slct.sample_intervals(jax.random.key(0), 11, 641, (200_000,)))
    assert idx.min() >= 0 and idx.max() <= 9
    freq = np.bincount(idx, minlength=10) / idx.size
    np.testing.assert_allclose(freq, slct.interval_probs(edm.karras_sigmas(11)), atol=4e-3)


def test_interval_weights_range():
    w11 = np.asarray(slct.interval_weights(edm.karras_sigmas(11)))
    assert w11[0] == pytest.approx(0.029, abs=1e-3) and w11[-1] == pytest.approx(68, rel=1e-2)
    w641 = np.asarray(slct.interval_weights(edm.karras_sigmas(641)))
    assert w641[0] == pytest.approx(1.47, rel=1e-2) and w641[-1] == pytest.approx(12_686, rel=2e-3)


def test_scaling_c_table():
    table = {11: 0.03456, 21: 0.013635, 41: 0.006144, 81: 0.002769, 161: 0.001248,
             321: 0.000562, 641: 0.000253}
    for n, c in table.items():
        assert float(slct.robust_c(n)) == pytest.approx(c, rel=2e-3), n
    # The fitted formula at N=11 would give 0.030259, which the authors do not use.
    assert float(jnp.exp(-1.15 * jnp.log(10.0) - 0.85)) == pytest.approx(0.030259, rel=1e-4)
    assert slct.ict_c(4 * 32 * 32) == pytest.approx(0.03456)
