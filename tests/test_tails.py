"""The tail dial (lct_jax/data/tails.py: u (1 + u^2)^(p/2) / k_p) and the tail statistics (evaluation/analysis.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.data import pipeline, tails
from lct_jax.evaluation.analysis import tukey_summary

LEVELS = (0.25, 0.5, 1.0, 2.0, 4.0)


def test_identity_at_zero_to_the_bit():
    u = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert tails.heavy_tail(u, 0.0) is u and tails.heavy_tail_inverse(u, 0.0) is u
    mean, std = np.full((4,), 0.3), np.full((4,), 2.0)
    lat = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    before = (lat / 0.5 - mean.astype(np.float32)) / std.astype(np.float32) * 0.5
    n = pipeline.Normalizer(mean, std, 0.5)
    np.testing.assert_array_equal(n.normalize(lat), before)
    np.testing.assert_array_equal(n.denormalize(before), before * std.astype(np.float32) / 0.5 + mean.astype(np.float32))


@pytest.mark.parametrize('h', LEVELS)
def test_round_trip_within_1e_6(h):
    u = np.concatenate([np.linspace(-30, 30, 20_001), [0.0, 1e-30, -1e-30, 1e-8],
                        np.random.default_rng(0).standard_t(3, 10_000)])
    back = tails.heavy_tail_inverse(tails.heavy_tail(u, h), h)
    np.testing.assert_allclose(back, u, rtol=1e-6, atol=1e-6)
    w = np.concatenate([np.linspace(-1e4, 1e4, 10_001), [1e30, -1e30]])  # and the other way, over values far beyond any sample
    np.testing.assert_allclose(tails.heavy_tail(tails.heavy_tail_inverse(w, h), h), w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('h', LEVELS)
def test_round_trip_in_float32_under_jit(h):
    """The decoder's inverse runs in jnp inside the evaluation programs, in float32."""
    u = np.linspace(-15, 15, 4001).astype(np.float32)
    fwd = jax.jit(lambda x: tails.heavy_tail(x, h))
    inv = jax.jit(lambda x: tails.heavy_tail_inverse(x, h))
    back = np.asarray(inv(fwd(jnp.asarray(u))))
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back, u, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(np.asarray(fwd(jnp.asarray(u))), tails.heavy_tail(u.astype(np.float64), h),
                               rtol=1e-5)


@pytest.mark.parametrize('h', LEVELS)
def test_strictly_increasing_and_odd(h):
    u = np.linspace(-10, 10, 100_001)
    g = tails.heavy_tail(u, h)
    assert (np.diff(g) > 0).all()
    np.testing.assert_array_equal(g, -tails.heavy_tail(-u, h))
    # heavier beyond |u| = 3 than as encoded: the dial stretches the tails (and, at unit variance,
    # slightly narrows the bulk)
    assert (np.abs(g[np.abs(u) > 3]) > np.abs(u[np.abs(u) > 3])).all()


def test_unit_variance_for_a_gaussian_at_every_level():
    z = np.random.default_rng(0).standard_normal(4_000_000)
    for h in (0.5, 1.0, 2.0):
        assert abs(tails.heavy_tail(z, h).std() - 1.0) < 0.01, h
    assert tails.variance_scale(0.0) == pytest.approx(1.0, rel=1e-12)
    assert tails.variance_scale(1.0) == pytest.approx(2.0, rel=1e-12)    # E[u^2 + u^4] = 1 + 3
    assert tails.variance_scale(2.0) == pytest.approx(np.sqrt(1 + 2 * 3 + 15), rel=1e-12)  # + E[u^6] = 15


def test_growth_is_a_power_not_an_exponential():
    """|g_p(u)| ~ |u|^(1+p) / k_p far out: a 13-sigma latent at p = 1 lands near 85, not at e^85."""
    u = np.array([1e2, 1e3])
    for h in LEVELS:
        slope = np.log(tails.heavy_tail(u[1], h) / tails.heavy_tail(u[0], h)) / np.log(10.0)
        assert slope == pytest.approx(1 + h, abs=1e-3)
    assert tails.heavy_tail(13.3, 1.0) == pytest.approx(13.3 * np.sqrt(1 + 13.3**2) / 2)


@pytest.mark.parametrize('h', [-0.1, 4.5, float('inf'), float('nan')])
def test_out_of_range_refused(h):
    with pytest.raises(ValueError, match='0 <= p <= 4'):
        tails.check_power(h)
    with pytest.raises(ValueError, match='tail_power'):
        pipeline.Normalizer(np.zeros(4), np.ones(4), 1.0, tail_power=h)


def test_normalizer_round_trip_and_heavier_tails():
    rng = np.random.default_rng(0)
    mean, std = rng.standard_normal(16), rng.uniform(0.5, 2.0, 16)
    lat = (mean + std * rng.standard_normal((5000, 16))).astype(np.float32)
    for mode in ('per_element', 'scalar'):
        light = pipeline.Normalizer(mean, std, 1.0, mode=mode).normalize(lat)
        for h in (0.5, 1.0):
            n = pipeline.Normalizer(mean, std, 1.0, mode=mode, tail_power=h)
            x = n.normalize(lat)
            np.testing.assert_allclose(n.denormalize(x), lat, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.asarray(jax.jit(n.denormalize)(x)), lat, rtol=1e-5, atol=1e-5)
            assert tukey_summary(x)['fraction_beyond_outer_fences'] > tukey_summary(light)['fraction_beyond_outer_fences']
    with pytest.raises(ValueError, match='standardised'):
        pipeline.Normalizer(mean, std, 1.0, mode='none', tail_power=0.1)


def test_tukey_summary_on_student_t3_against_known_values():
    """Student-t(3): quartiles +-0.7649, so the outer fences sit at +-5.3544 and the mass beyond them
    is 2 * sf(5.3544) = 0.01276; inner fences +-3.0597, mass beyond 0.05498. Its excess kurtosis is
    infinite: the sample value grows with n and is far above a Gaussian's 0."""
    from scipy.stats import t as student_t
    q3 = student_t.ppf(0.75, 3)
    outer, inner = q3 + 3 * 2 * q3, q3 + 1.5 * 2 * q3
    assert q3 == pytest.approx(0.7649, abs=1e-4) and outer == pytest.approx(5.3544, abs=1e-3)
    expected_outer, expected_inner = 2 * student_t.sf(outer, 3), 2 * student_t.sf(inner, 3)
    assert expected_outer == pytest.approx(0.01276, abs=5e-5)
    x = np.random.default_rng(0).standard_t(3, 2_000_000)
    s = tukey_summary(x)
    assert s['q3'] == pytest.approx(q3, abs=3e-3)
    assert s['fraction_beyond_outer_fences'] == pytest.approx(expected_outer, rel=0.03)
    assert s['fraction_beyond_inner_fences'] == pytest.approx(expected_inner, rel=0.02)
    assert s['excess_kurtosis'] > 10
    g = tukey_summary(np.random.default_rng(0).standard_normal(2_000_000))
    assert abs(g['excess_kurtosis']) < 0.02
    assert g['fraction_beyond_outer_fences'] == pytest.approx(2 * 1.17e-6, abs=3e-6)  # 4.72 sigma


# --- the committed study: its reports and paired differences regenerate ------------------------

STUDY = __import__('os').path.join(__import__('os').path.dirname(__import__('os').path.dirname(
    __import__('os').path.abspath(__file__))), 'docs', 'study')


@pytest.mark.parametrize('level', ['p0.5', 'p1'])
def test_a_levels_report_regenerates_byte_identical_from_its_export(level, tmp_path, monkeypatch):
    """`python -m lct_jax.study report docs/study/tails/<level>/study.py` on a fresh clone (the work
    root defaults to the export beside the study file) rewrites nothing: the committed report is what
    the committed runs give. p0's runs are the latent study's, whose report has its own such test."""
    import os
    import shutil

    from lct_jax.study.__main__ import main
    clone = tmp_path / 'clone' / 'docs' / 'study'
    for study in ('tails', 'latent', 'pixel'):   # a level's study file imports the latent study's setting
        shutil.copytree(os.path.join(STUDY, study), clone / study)
    here = clone / 'tails' / level
    committed = {n: (here / n).read_bytes() for n in ('results.json', 'results.md')}
    monkeypatch.chdir(tmp_path / 'clone')
    assert main(['report', f'docs/study/tails/{level}/study.py']) == 0
    assert {n: (here / n).read_bytes() for n in committed} == committed


def test_the_paired_differences_regenerate_from_the_reports():
    """docs/study/tails/paired.json (the write-up's table and delta.png) is what make_figures.py
    computes from the committed reports and levels.json: every level has sLCT, iLCT and huber at 3
    seeds, and p1 is at least 10x p0's outer-fence fraction (the issue's heaviest-level bar)."""
    import json
    import os
    import sys
    sys.path.insert(0, os.path.join(STUDY, 'tails'))
    try:
        import make_figures
    finally:
        sys.path.pop(0)
    levels = json.load(open(os.path.join(STUDY, 'tails', 'levels.json')))
    result = json.loads(json.dumps(make_figures.paired(levels)))   # floats as the file stores them
    assert result == json.load(open(os.path.join(STUDY, 'tails', 'paired.json')))
    for level in ('p0', 'p0.5', 'p1'):
        for key in ('sLCT - iLCT, 2-step', 'sLCT - huber, 2-step', 'sLCT - iLCT, 1-step'):
            assert result[level]['differences'][key]['seeds'] == [0, 1, 2], (level, key)
    fences = {x['level']: x['latents']['fraction_beyond_outer_fences'] for x in levels['levels']}
    assert list(fences) == ['p0', 'p0.5', 'p1', 'p2'] and fences['p1'] >= 10 * fences['p0']
    assert fences['p1'] > 0.0128      # Student-t(3)'s outer-fence fraction
