"""The LDM-8† baseline (spec §16.5): its loss, objective, EDM ODE samplers, configs and CLI."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax import parallel, sampling
from lct_jax.models.unet import UNet
from lct_jax.objectives import edm, ldm
from lct_jax.objectives.base import Batch
from lct_jax.objectives.ldm import DiffusionObjective
from lct_jax.objectives.slct import SLCT as Objective
from lct_jax.sampling import consistency as consistency_sampling
from lct_jax.sampling import ode as ode_sampling
from tests import jaxprs, runs
from tests.random_params import perturbed_params

MODEL = UNet(img_resolution=8, in_channels=1, out_channels=1, model_channels=32, channel_mult=(1, 2),
             num_blocks=1, attn_resolutions=(4,), block_norm='group-norm', out_norm='group-norm')


def _params(seed=0):
    return perturbed_params(MODEL, (1, 8, 8, 1), seed)


# ----------------------------------------------------------------------------- the loss

def _spec_loss_float64(denoised, x, sigma, c, sigma_data):
    """Spec §16.5 as the authors write it: [ln(0.5 m + c^2) - 2 ln c] * (1/sigma^2 + 1/sigma_data^2)."""
    d, x, s = (np.asarray(a, np.float64) for a in (denoised, x, sigma))
    m = ((d - x) ** 2).reshape(len(d), -1).mean(1)
    return (np.log(0.5 * m + c**2) - 2 * np.log(c)) * (1 / s**2 + 1 / sigma_data**2)


def test_edm_diffusion_loss_equals_the_spec_formula_and_is_stable():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 8, 4)).astype(np.float32) * 0.5
    # residuals from 1e-3 to 3 per element: m from 1e-6 to 9, the range a diffusion loss sees
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(3.0), (64, 1, 1, 1))).astype(np.float32)
    denoised = x + scale * rng.standard_normal(x.shape).astype(np.float32)
    sigma = edm.karras_sigma(rng.integers(0, 1000, 64), 1000)
    got = np.asarray(ldm.edm_diffusion_loss(jnp.asarray(denoised), jnp.asarray(x), sigma, 3.45, 0.5))
    want = _spec_loss_float64(denoised, x, sigma, 3.45, 0.5)
    assert got.shape == (64,)
    rel = np.abs(got - want) / want
    assert rel.max() < 1e-5, rel.max()
    # The authors' float32 form cancels: ln(0.5m + c^2) and 2 ln c agree to ~7 digits at m ~ 1e-6.
    m = jnp.mean(jnp.square(jnp.asarray(denoised) - x).reshape(64, -1), 1)
    c = jnp.float32(3.45)
    naive = (jnp.log(0.5 * m + c**2) - 2 * jnp.log(c)) * (1 / sigma**2 + 4.0)
    assert (np.abs(np.asarray(naive) - want) / want).max() > 100 * rel.max()
    # a small case by hand: m = 0.01 everywhere, sigma = 1: (1 + 4) * ln(1 + 0.01 / (2 * 3.45^2))
    one = ldm.edm_diffusion_loss(jnp.full((1, 2, 2, 1), 0.1), jnp.zeros((1, 2, 2, 1)), jnp.ones(1), 3.45, 0.5)
    assert float(one[0]) == pytest.approx(5 * np.log1p(0.01 / (2 * 3.45**2)), rel=1e-6)


# ----------------------------------------------------------------------------- the objective

def test_noise_levels_are_uniform_on_the_1000_level_karras_grid():
    obj = DiffusionObjective()
    idx, sigma = jax.jit(lambda k: obj.noise_levels(k, 200_000))(jax.random.key(0))
    idx = np.asarray(idx)
    assert idx.min() == 0 and idx.max() == 999
    counts = np.bincount(idx // 100, minlength=10)      # 20,000 expected per tenth; sd ~134
    assert np.abs(counts - 20_000).max() < 700, counts
    np.testing.assert_allclose(np.asarray(sigma), np.asarray(edm.karras_sigmas(1000))[idx], rtol=1e-5)
    assert float(obj.sigma(0)) == pytest.approx(80.0) and float(obj.sigma(999)) == pytest.approx(0.002, rel=1e-4)


def test_ldm_loss_by_hand_and_one_trace_for_every_step():
    obj = DiffusionObjective()
    params = _params()
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1)) * 0.5
    z = jax.random.normal(jax.random.key(2), x.shape)
    key = jax.random.key(7)
    traces = []

    def loss(p, step):
        traces.append(1)
        return obj.loss(p, MODEL, Batch(x, z, jnp.ones(x.shape[0])), key, step)

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, metrics), grads = f(params, jnp.int32(0))
    (value2, _), _ = f(params, jnp.int32(123_456))        # no curriculum: the step changes nothing
    assert len(traces) == 1 and float(value2) == float(value)

    level_key, _ = jax.random.split(key)
    _, sigma = obj.noise_levels(level_key, 16)

    def by_hand(p):
        # D = c_skip x + c_out F(c_in x, 250 ln sigma) with the sigma_min-shifted boundary scalings
        c_skip, c_out, c_in = edm.boundary_scalings(sigma)
        b = lambda a: a.reshape(-1, 1, 1, 1)
        x_t = x + b(sigma) * z
        d = b(c_skip) * x_t + b(c_out) * MODEL.apply({'params': p}, b(c_in) * x_t, 250 * jnp.log(sigma))
        m = jnp.mean(jnp.square(d - x).reshape(16, -1), 1)
        return jnp.mean((1 / sigma**2 + 4.0) * jnp.log1p(m / (2 * 3.45**2)))

    want, want_grads = jax.jit(jax.value_and_grad(by_hand))(params)
    assert float(value) == pytest.approx(float(want), rel=1e-5)
    assert 'num_scales' not in metrics and 'c' not in metrics   # the LDM declares only its own metrics
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max()),
                           grads, want_grads)
    with pytest.raises(ValueError, match='positive'):
        DiffusionObjective(c=0.0)


def test_build_objective_picks_the_ldm_objective():
    from configs import celebahq256, default
    from lct_jax.builders import build_objective
    assert isinstance(build_objective(celebahq256.get_config()), Objective)
    obj = build_objective(celebahq256.get_config('ldm'))
    assert obj == DiffusionObjective(num_levels=1000, c=3.45)
    c = default.get_config('ldm,smoke')
    with c.unlocked():
        c.objective = 'ddpm'
    with pytest.raises(ValueError, match="valid: \\('slct', 'ldm', 'meanflow', 'sct', 'imf'\\)"):
        build_objective(c)


# ----------------------------------------------------------------------------- the ODE samplers

MU, S = 0.3, 0.5     # a Gaussian toy: data ~ N(MU, S^2 I), so D(x, sigma) is known exactly


def _gauss_denoiser(x, sigma):
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def _exact_ode_solution(x_T, sigma_T):
    """PF-ODE dx/dsigma = (x - D)/sigma = sigma (x - MU)/(S^2 + sigma^2), so
    x(0) = MU + (x_T - MU) S / sqrt(S^2 + sigma_T^2)."""
    return MU + (x_T - MU) * S / np.sqrt(S**2 + sigma_T**2)


def test_euler_and_heun_converge_to_the_closed_form_ode_solution():
    x_T = 80.0 * np.asarray(jax.random.normal(jax.random.key(0), (4, 16)), np.float64)
    exact = _exact_ode_solution(x_T, 80.0)
    err = {}
    for method in ('euler', 'heun'):
        for steps in (20, 40, 80, 250):
            sig = ode_sampling.karras_ode_sigmas(steps)
            out = jax.jit(lambda x, s=sig, m=method: ode_sampling.karras_ode_sample(_gauss_denoiser, x, s, m))(
                jnp.asarray(x_T, jnp.float32))
            err[method, steps] = np.abs(np.asarray(out) - exact).max() / np.abs(exact).max()
    # Measured here: Euler 0.109 / 0.0551 / 0.0277 / 0.0089; Heun 0.0342 / 0.0077 / 0.0018 / 0.00017.
    assert err['euler', 250] < 0.012 and err['heun', 250] < 3e-4
    assert 1.8 < err['euler', 40] / err['euler', 80] < 2.2          # first order
    assert 3.5 < err['heun', 40] / err['heun', 80] < 5.0            # second order
    assert all(err['heun', n] < err['euler', n] for n in (20, 40, 80, 250))


def _spec_sampler_float64(denoise, x, sigmas, method):
    """Spec §16.5 step by step: Euler x <- x + (s' - s)(x - D(x, s))/s; Heun adds EDM's correction except
    on the last step to sigma = 0; no churn. Returns (x, number of denoiser calls)."""
    calls = 0
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - denoise(x, s)) / s
        calls += 1
        x_next = x + (s_next - s) * d
        if method == 'heun' and s_next > 0:
            d2 = (x_next - denoise(x_next, s_next)) / s_next
            calls += 1
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
    return x, calls


def _nonlinear_denoiser(x, sigma, xp=jnp):
    return xp.tanh(0.7 * x) * 0.5 / (1.0 + 0.01 * sigma) + 0.05 * xp.sin(sigma)


def test_samplers_follow_the_spec_formulas_and_count_their_evaluations():
    x_T = 80.0 * np.asarray(jax.random.normal(jax.random.key(3), (3, 10)), np.float64)
    calls = []

    def counted(x, sigma):
        jax.debug.callback(lambda: calls.append(1))
        return _nonlinear_denoiser(x, sigma.reshape(-1, 1))

    for method, steps in (('euler', 7), ('heun', 7), ('heun', 1), ('euler', 40), ('heun', 40)):
        sig = ode_sampling.karras_ode_sigmas(steps)
        want, want_calls = _spec_sampler_float64(lambda x, s: _nonlinear_denoiser(x, s, np), x_T,
                                                 sig.astype(np.float64), method)
        calls.clear()
        got = jax.jit(lambda x: ode_sampling.karras_ode_sample(counted, x, sig, method))(jnp.asarray(x_T, jnp.float32))
        jax.effects_barrier()
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
        assert len(calls) == want_calls == ode_sampling.ode_nfe(steps, method), (method, steps, len(calls))
    assert (ode_sampling.ode_nfe(250, 'euler'), ode_sampling.ode_nfe(40, 'heun')) == (250, 79)


def test_karras_ode_grid_is_the_authors():
    sig = ode_sampling.karras_ode_sigmas(250)
    assert sig.shape == (251,) and sig[-1] == 0.0 and sig[0] == pytest.approx(80.0)
    np.testing.assert_allclose(sig[:-1], edm.karras_sigmas(250), rtol=1e-5)  # theirs: float32 math
    assert np.all(np.diff(sig) < 0)
    # N = 11 grid of spec §4, as a 11-step ODE grid
    np.testing.assert_allclose(ode_sampling.karras_ode_sigmas(11)[:-1],
                               [80, 45.31, 24.41, 12.38, 5.839, 2.515, 0.9654, 0.3183, 0.0851, 0.0167, 0.002],
                               rtol=2e-3)


def test_ode_sampler_is_one_program_with_per_sample_noise():
    obj = DiffusionObjective()
    params = _params()
    idx = np.arange(8, dtype=np.int32)
    # One traced UNet (two for Heun) whatever the number of steps: a loop, not an unrolled program.
    convs = {}
    for method in ('euler', 'heun'):
        for steps in (10, 250):
            sig = ode_sampling.karras_ode_sigmas(steps)
            f = ode_sampling.make_ode_sampler(MODEL.apply, obj, (8, 8, 1), sig, method, 42)
            convs[method, steps] = jaxprs.count(jax.make_jaxpr(f)(params, idx).jaxpr, 'conv_general_dilated')
    assert convs['euler', 10] == convs['euler', 250] > 0
    assert convs['heun', 10] == convs['heun', 250] == 2 * convs['euler', 10]
    # Same seed, same images on 1 and 4 devices, and whatever batch a sample is drawn in.
    sig = ode_sampling.karras_ode_sigmas(12)
    outs = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.make_mesh(devices)
        f = ode_sampling.make_ode_sampler(MODEL.apply, obj, (8, 8, 1), sig, 'heun', 42, mesh)
        outs.append(np.asarray(f(parallel.replicate(params, mesh), parallel.shard_host_array(idx, mesh))))
    # XLA's CPU kernels round differently for other per-device shapes (1 ulp), and 23 network
    # evaluations carry that along (measured: 2e-5 at most); other noise would differ by O(1).
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-4)
    f = ode_sampling.make_ode_sampler(MODEL.apply, obj, (8, 8, 1), sig, 'heun', 42)
    np.testing.assert_allclose(np.asarray(f(params, idx[5:7])), outs[0][5:7], rtol=0, atol=1e-4)
    assert np.abs(outs[0][0] - outs[0][1]).max() > 0.1
    # One Euler step from sigma_max to 0 is D(x_T, 80): the consistency 1-step sample of the same seed,
    # so every sampler starts sample i from the same x_T.
    euler1 = ode_sampling.make_ode_sampler(MODEL.apply, obj, (8, 8, 1), ode_sampling.karras_ode_sigmas(1), 'euler', 42)
    onestep = consistency_sampling.make_sampler(MODEL.apply, obj, (8, 8, 1), (80.0,), 42)
    # x + (0 - 80)(x - D)/80 = D exactly, but in float32 around |x| ~ 80 (ulp 8e-6): 2e-5 measured.
    np.testing.assert_allclose(np.asarray(euler1(params, idx)), np.asarray(onestep(params, idx)),
                               rtol=0, atol=1e-4)


def test_configured_samplers_and_their_nfe():
    from configs import celebahq256, default
    from lct_jax.builders import build_objective
    c = celebahq256.get_config()
    specs = sampling.configured_samplers(c.sampling, build_objective(c))
    assert [(s.label, s.nfe, s.file_label) for s in specs] == [('1-step', 1, '1step'), ('2-step', 2, '2step')]
    ldm = celebahq256.get_config('ldm')
    [spec] = sampling.configured_samplers(ldm.sampling, build_objective(ldm))
    assert (spec.label, spec.method, spec.nfe, len(spec.sigmas)) == ('euler-250', 'euler', 250, 251)
    with ldm.unlocked():
        ldm.sampling.update(sampler='heun', ode_steps=40)
    [spec] = sampling.configured_samplers(ldm.sampling, build_objective(ldm))
    assert (spec.label, spec.nfe) == ('heun-40', 79)
    with ldm.unlocked():
        ldm.sampling.sampler = 'dpm'
    with pytest.raises(ValueError, match='valid'):
        sampling.configured_samplers(ldm.sampling, build_objective(ldm))
    assert default.get_config('ldm').sampling.sampler == 'euler'


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize('name,paper_fid', [('celebahq256', 8.85), ('lsun_church256', 10.81), ('ffhq256', 10.23)])
def test_ldm_variant_of_each_paper_config(name, paper_fid):
    import importlib

    from lct_jax.evaluation import paper_table1
    module = importlib.import_module(f'configs.{name}')
    base, c = module.get_config(), module.get_config('ldm')
    assert (c.objective, c.coupling.method, c.model.block_norm) == ('ldm', 'none', 'group-norm')
    assert (c.ldm.num_levels, c.ldm.c) == (1000, 3.45)
    assert (c.sampling.sampler, c.sampling.ode_steps, c.sampling.ema) == ('euler', 250, 'ema_0.9999')
    assert 'ema_' + str(c.ema_decays[0]) == c.sampling.ema
    assert (c.total_steps, c.batch_size, c.data.expected_count) == (base.total_steps, base.batch_size,
                                                                     base.data.expected_count)
    assert (c.evaluation.dataset, c.evaluation.method) == (name, 'LDM-8†')
    assert paper_table1.lookup(name, 'LDM-8†', 250).fid == paper_fid
    assert paper_table1.lookup(name, 'LDM-8†', 79) is None
    assert base.evaluation.pr_features == 'vgg16'
    s = module.get_config('ldm,smoke')
    assert s.objective == 'ldm' and s.total_steps == 20
    with pytest.raises(AttributeError):
        s.not_a_key = 1


# ----------------------------------------------------------------------------- the CLI, end to end

def _ldm_smoke_config(**overrides):
    from configs import default
    c = default.get_config('ldm,smoke')
    with c.unlocked():
        c.sampling.update(num_samples=24, batch_size=24, **overrides)
    return c


# slow (~50 s): the whole main job; the loss, samplers and one-program checks above stay in the default run
@pytest.mark.slow
def test_main_trains_samples_and_evaluates_the_ldm_baseline(tmp_path):
    """python -m lct_jax.main --config configs/default.py:ldm,smoke trains (grids with Euler 250); then
    --mode=evaluate (here its function, in-process) with Euler (250 steps = 250 NFE) and --mode=sample
    and --mode=evaluate with Heun (10 steps = 19 NFE) write images and the results rows with their NFE.
    (--mode=sample with Euler 250 is the same code with another SamplerSpec: left out to keep this test
    near a minute; README, "The LDM-8† baseline", records that run on the digits.)"""
    from lct_jax.modes import evaluate as evaluate_mode
    from lct_jax.modes import sample as sample_mode
    w = str(tmp_path / 'ldm')
    runs.run(runs.command(w, config='configs/default.py:ldm,smoke', devices=2), str(tmp_path / 'train.log'))
    log = open(tmp_path / 'train.log').read()
    assert 'done: step 20' in log and 'compiled train step 1 time(s)' in log
    metrics = [json.loads(l) for l in open(os.path.join(w, 'metrics.jsonl'))]
    assert all(np.isfinite(m['loss']) for m in metrics)
    assert os.path.getsize(os.path.join(w, 'samples', 'step_0000020_euler250.png')) > 0
    evaluate_mode.evaluate(_ldm_smoke_config(), w)
    heun = _ldm_smoke_config(sampler='heun', ode_steps=10)
    sample_mode.sample(heun, w)
    evaluate_mode.evaluate(heun, w)
    assert len(glob.glob(os.path.join(w, 'samples', 'step_20_ema_0.99_heun10', '*.png'))) == 24
    rows = json.load(open(os.path.join(w, 'results.json')))
    assert [(r['sampler'], r['nfe'], r['method']) for r in rows] == [('euler-250', 250, 'LDM-8†'),
                                                                     ('heun-10', 19, 'LDM-8†')]
    assert all(np.isfinite(r['fid']) and 0 <= r['recall'] <= 1 for r in rows)
    table = open(os.path.join(w, 'results.md')).read()
    assert '| euler-250 | 250 |' in table and '| heun-10 | 19 |' in table
    comparison = open(tmp_path / 'comparison_digits.md').read()
    assert '| LDM-8† | 250 |' in comparison and '| LDM-8† (heun-10) | 19 |' in comparison


@pytest.mark.slow
def test_main_sample_and_evaluate_modes_with_heun(tmp_path):
    """The same through `python -m lct_jax.main --mode=sample|evaluate` in subprocesses (about 3 min here)."""
    w = str(tmp_path / 'ldm')
    cfg = 'configs/default.py:ldm,smoke'
    flags = ['--config.sampling.num_samples=24', '--config.sampling.batch_size=24',
             '--config.sampling.sampler=heun', '--config.sampling.ode_steps=10']
    runs.run(runs.command(w, config=cfg, devices=2), str(tmp_path / 'train.log'))
    runs.run(runs.command(w, '--mode=sample', *flags, config=cfg, devices=2), str(tmp_path / 'sample.log'))
    runs.run(runs.command(w, '--mode=evaluate', *flags, config=cfg, devices=2), str(tmp_path / 'evaluate.log'))
    assert len(glob.glob(os.path.join(w, 'samples', 'step_20_ema_0.99_heun10', '*.png'))) == 24
    [row] = json.load(open(os.path.join(w, 'results.json')))
    assert (row['sampler'], row['nfe']) == ('heun-10', 19) and np.isfinite(row['fid'])
