"""Robust metrics and loss terms against the closed forms of spec §6 and §8."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.objectives import robust, slct


def test_metrics_closed_forms():
    m, c = jnp.float32(0.3), jnp.float32(0.05)
    assert float(robust.cauchy(m, c)) == pytest.approx(np.log(1 + 0.3 / (2 * 0.05**2)), rel=1e-6)
    assert float(robust.pseudo_huber(m, c)) == pytest.approx(np.sqrt(0.3 + 0.05**2) - 0.05, rel=1e-6)
    assert float(robust.geman_mcclure(m, c)) == pytest.approx(2 * 0.3 / (0.3 + 4 * 0.05**2), rel=1e-6)
    assert float(robust.l2(m, c)) == pytest.approx(0.3)


def test_metrics_act_on_per_sample_mean_not_norm():
    r = jnp.full((2, 4, 4, 3), 0.1)  # every element 0.1 -> m = 0.01, not the sum 0.48
    out = robust.per_sample_loss(r, 0.03456, 'cauchy')
    np.testing.assert_allclose(out, np.log1p(0.01 / (2 * 0.03456**2)), rtol=1e-5)
    np.testing.assert_allclose(robust.per_sample_loss(r, 1.0, 'l2'), [0.01, 0.01], rtol=1e-5)
    np.testing.assert_allclose(robust.per_sample_loss(r, 1.0, 'l1'), [0.1, 0.1], rtol=1e-5)


def test_elementwise_variants_average_after_the_metric():
    r = jnp.array([[0.0, 1.0]])
    c = 0.5
    want = (robust.cauchy(0.0, c) + robust.cauchy(1.0, c)) / 2
    np.testing.assert_allclose(robust.per_sample_loss(r, c, 'cauchy_new'), [want], rtol=1e-6)
    assert float(robust.per_sample_loss(r, c, 'cauchy')[0]) != pytest.approx(float(want))
    with pytest.raises(ValueError, match='valid'):
        robust.per_sample_loss(r, c, 'cauchyy')


def test_influence_of_an_outlier_is_ordered_gm_cauchy_huber_l2():
    c = 0.03456
    m_typ, m_out = 0.5 * c**2, 1e4 * c**2
    ratios = {}
    for name, f in robust.METRICS.items():
        d = jax.grad(f)
        ratios[name] = float(d(m_out, c) / d(m_typ, c))
    assert ratios['gm'] < ratios['cauchy'] < ratios['huber'] < ratios['l2'] == pytest.approx(1.0)
    # Closed-form derivatives.
    assert float(jax.grad(robust.cauchy)(m_out, c)) == pytest.approx(1 / (m_out + 2 * c**2), rel=1e-4)
    assert float(jax.grad(robust.pseudo_huber)(m_out, c)) == pytest.approx(
        1 / (2 * np.sqrt(m_out + c**2)), rel=1e-4)
    assert float(jax.grad(robust.geman_mcclure)(m_out, c)) == pytest.approx(
        8 * c**2 / (m_out + 4 * c**2) ** 2, rel=1e-3)


def test_cauchy_gradient_wrt_output_vanishes_for_huge_residuals():
    c = 0.03456
    norms = []
    for scale in (1.0, 10.0, 100.0, 1000.0):
        pred = jnp.full((1, 8, 8, 4), scale)
        g = jax.grad(lambda p: robust.per_sample_loss(p - 0.0, c, 'cauchy').sum())(pred)
        norms.append(float(jnp.linalg.norm(g)))
        d = 256
        assert norms[-1] == pytest.approx(2 * np.sqrt(scale**2 / d) / (scale**2 + 2 * c**2), rel=1e-3)
    assert norms == sorted(norms, reverse=True)


def test_consistency_loss_is_weighted_mean():
    s = jnp.ones((2, 2, 2, 1)) * jnp.array([0.0, 0.2]).reshape(2, 1, 1, 1)
    t = jnp.zeros_like(s)
    w = jnp.array([3.0, 5.0])
    loss = slct.consistency_loss(s, t, w, 1.0, 'l2')
    assert float(loss) == pytest.approx((3 * 0 + 5 * 0.04) / 2, rel=1e-5)


def test_early_diffusion_mask_threshold():
    idx = jnp.arange(10)
    np.testing.assert_array_equal(slct.early_diffusion_mask(idx, 11), idx >= 8)
    np.testing.assert_array_equal(slct.early_diffusion_mask(jnp.arange(640), 641),
                                  jnp.arange(640) >= 480)
    np.testing.assert_array_equal(slct.early_diffusion_mask(idx, 11, 0.4), idx >= 4)


def test_diffusion_loss_mean_over_selected_samples_and_empty_case():
    clean = jnp.zeros((3, 2, 2, 1))
    student = jnp.ones_like(clean) * jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1)
    sigma = jnp.array([0.5, 0.1, 1.0])
    mask = jnp.array([False, True, True])
    got = slct.diffusion_loss(student, clean, sigma, mask)
    want = ((1 / 0.01 + 4) * 4 + (1 / 1.0 + 4) * 9) / 2
    assert float(got) == pytest.approx(want, rel=1e-5)
    empty = slct.diffusion_loss(student, clean, sigma, jnp.zeros(3, bool))
    assert float(empty) == 0.0 and np.isfinite(float(empty))
    g = jax.grad(lambda s: slct.diffusion_loss(s, clean, sigma, jnp.zeros(3, bool)))(student)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).sum()) == 0.0
