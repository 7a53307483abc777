"""MeanFlow (lct_jax/meanflow.py) against closed forms, with no trained network: the exact mean
flow of a linear field has zero loss, the JVP target is a finite difference along (v, 1, 0), the
adaptive weight and the (t, r) draws are the authors', CFG inside the target; the two-time
backbones reduce to the old ones; the samplers, the optimizer, the configs and one train step."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.objectives import meanflow
from lct_jax.objectives.meanflow import (
    MeanFlowObjective,
    draw_class_drop,
    draw_times,
    meanflow_loss,
)

B, SHAPE = 6, (6, 4, 4, 3)
T = jnp.array([0.9, 0.7, 0.5, 0.8, 0.3, 0.6])
R = jnp.array([0.9, 0.2, 0.0, 0.5, 0.3, 0.1])        # rows 0 and 4: r = t
A = jnp.array([-0.8, 0.3, 0.5])                      # the linear field dz/dt = a z, per channel


def _linear_field_batch():
    """x, and noise e chosen so that the conditional velocity e - x equals the field a z_t."""
    x = jax.random.normal(jax.random.key(0), SHAPE)
    t = T.reshape(-1, 1, 1, 1)
    e = x * (1 + A - A * t) / (1 - A * t)
    return x, e


def _mean_flow_of_linear_field(z, t, h):
    """u(z, t, h) = (z_t - z_r) / h = z (1 - exp(-a h)) / h exactly (a z at h = 0)."""
    h = h.reshape(-1, 1, 1, 1)
    safe = jnp.where(h > 1e-6, h, 1.0)
    return z * jnp.where(h > 1e-6, -jnp.expm1(-A * safe) / safe, A)


def test_the_exact_mean_flow_of_a_linear_field_has_zero_loss():
    x, e = _linear_field_batch()
    loss, terms = meanflow_loss(_mean_flow_of_linear_field, x, e, T, R)
    assert float(loss) < 1e-5 and float(jnp.max(terms['squared_error'])) < 1e-8
    # The identity holds because u depends on h: the instantaneous field a z alone fails off r = t.
    wrong, wt = meanflow_loss(lambda z, t, h: z * A, x, e, T, R)
    assert float(wrong) > 0.1
    assert np.allclose(wt['squared_error'][jnp.array([0, 4])], 0.0, atol=1e-8)     # r = t rows are exact


def test_the_jvp_target_is_a_finite_difference_of_u_along_v_1_0():
    x = jax.random.normal(jax.random.key(1), SHAPE)
    e = jax.random.normal(jax.random.key(2), SHAPE)
    w = jax.random.normal(jax.random.key(3), (3,))

    def u_fn(z, t, h):
        t4, h4 = t.reshape(-1, 1, 1, 1), h.reshape(-1, 1, 1, 1)
        return jnp.tanh(z * w) * (1 + t4 ** 2) + jnp.sin(3 * h4) * z ** 2 + t4 * h4

    _, terms = meanflow_loss(u_fn, x, e, T, R)
    z = (1 - T.reshape(-1, 1, 1, 1)) * x + T.reshape(-1, 1, 1, 1) * e
    v = e - x
    eps = 3e-3
    # u as a function of (z, t, r), moved along (dz, dt, dr) = (v, 1, 0): h = t - r moves by 1 too.
    f = lambda s: u_fn(z + s * v, T + s, (T + s) - R)
    fd = (f(eps) - f(-eps)) / (2 * eps)
    np.testing.assert_allclose(terms['du_dt'], fd, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(terms['u_target'], v - jnp.clip(T - R, 0, 1).reshape(-1, 1, 1, 1) * fd,
                               rtol=2e-3, atol=2e-3)
    # Closed forms: du/dt of u = c h is c (h's tangent is 1), of u = t^2 is 2t, of u = z is v.
    for fn, want in [(lambda z, t, h: 0 * z + 2.5 * h.reshape(-1, 1, 1, 1), 2.5 + 0 * z),
                     (lambda z, t, h: 0 * z + t.reshape(-1, 1, 1, 1) ** 2, 2 * T.reshape(-1, 1, 1, 1) + 0 * z),
                     (lambda z, t, h: z, v)]:
        np.testing.assert_allclose(meanflow_loss(fn, x, e, T, R)[1]['du_dt'], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('norm_p,norm_eps', [(1.0, 0.01), (0.5, 0.01), (1.0, 1.0), (0.0, 0.01)])
def test_the_adaptive_weight_divides_by_a_stop_gradient_err_plus_eps_to_the_p(norm_p, norm_eps):
    """u = theta (a constant): du/dt = 0, so u_tgt = v and err_b = sum (theta - v_b)^2; the weight is
    constant under differentiation, so d loss / d theta = mean_b 2 sum (theta - v_b) / (err_b + eps)^p."""
    x = jax.random.normal(jax.random.key(4), SHAPE)
    e = jax.random.normal(jax.random.key(5), SHAPE)
    v = np.asarray(e - x, np.float64)
    theta = 0.3

    def loss_of(th):
        return meanflow_loss(lambda z, t, h: th + 0 * z, x, e, T, R, norm_p=norm_p, norm_eps=norm_eps)[0]

    err = ((theta - v) ** 2).sum(axis=(1, 2, 3))
    weight = (err + norm_eps) ** norm_p
    np.testing.assert_allclose(float(loss_of(theta)), np.mean(err / weight), rtol=1e-5)
    want_grad = np.mean(2 * (theta - v).sum(axis=(1, 2, 3)) / weight)
    np.testing.assert_allclose(float(jax.grad(loss_of)(theta)), want_grad, rtol=1e-4)


def test_draw_times_logit_normal_ordered_with_the_first_three_quarters_at_r_equal_t():
    t, r = draw_times(jax.random.key(0), 8)
    assert bool(jnp.all(t[:6] == r[:6])) and bool(jnp.all(t[6:] > r[6:]))
    n = 40_000
    t, r = map(np.asarray, draw_times(jax.random.key(1), n))
    assert np.all((0 < r) & (r <= t) & (t < 1))
    assert np.mean(t == r) == int(0.75 * n) / n
    logit = lambda p: np.log(p) - np.log1p(-p)
    pooled = logit(np.concatenate([t[int(0.75 * n):], r[int(0.75 * n):]]))   # max and min of two draws
    assert abs(pooled.mean() + 0.4) < 0.03 and abs(pooled.std() - 1.0) < 0.03
    # the r = t rows keep the max of the two draws: mean -0.4 + 1/sqrt(pi)
    assert abs(logit(t[:int(0.75 * n)]).mean() - (-0.4 + 1 / np.sqrt(np.pi))) < 0.03
    other = draw_times(jax.random.key(1), 10, p_mean=0.0, p_std=0.5, data_proportion=0.5)
    assert int(jnp.sum(other[0] == other[1])) >= 5


def test_class_drop_is_a_binomial_count_of_first_rows():
    drop = np.asarray(draw_class_drop(jax.random.key(0), 10_000, 0.1))
    k = int(drop.sum())
    assert 800 < k < 1200 and drop[:k].all() and not drop[k:].any()
    assert not np.asarray(draw_class_drop(jax.random.key(0), 64, 0.0)).any()
    d = meanflow.draw(jax.random.key(3), SHAPE, class_dropout_prob=0.5)
    assert d.noise.shape == SHAPE and d.t.shape == d.r.shape == d.drop.shape == (B,)


def _label_u_fn(z, t, h, y):
    """u = the label as a number: no dependence on z, t, h, so du/dt = 0 and u_tgt = v_g."""
    return jnp.broadcast_to(y.astype(jnp.float32).reshape(-1, 1, 1, 1), z.shape)


@pytest.mark.parametrize('omega,kappa', [(2.0, 0.0), (1.0, 0.5), (0.6, 0.3)])
def test_guidance_inside_the_target_and_class_dropout(omega, kappa):
    """v_g = omega v + (1 - omega - kappa) v_uncond + kappa v_cond for t in [t_start, t_end], else v;
    dropped rows see the null class and the unguided v."""
    x = jax.random.normal(jax.random.key(6), SHAPE)
    e = jax.random.normal(jax.random.key(7), SHAPE)
    v = e - x
    labels, null = jnp.array([1, 2, 3, 4, 5, 6]), 10
    drop = jnp.array([True, False, False, False, False, False])
    _, terms = meanflow_loss(_label_u_fn, x, e, T, R, labels=labels, drop=drop, null_class=null,
                             omega=omega, kappa=kappa, t_start=0.4, t_end=0.85)
    inside = ((T >= 0.4) & (T <= 0.85)).reshape(-1, 1, 1, 1)
    guided = omega * v + (1 - omega - kappa) * null + kappa * labels.reshape(-1, 1, 1, 1)
    want = jnp.where(drop.reshape(-1, 1, 1, 1), v, jnp.where(inside, guided, v))
    np.testing.assert_allclose(terms['u_target'], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms['u'][:, 0, 0, 0], jnp.where(drop, null, labels))
    with pytest.raises(ValueError, match='labels'):
        meanflow_loss(lambda z, t, h: z, x, e, T, R, omega=2.0)


def test_the_objective_validates_and_runs_its_network_in_float32():
    from lct_jax.models.unet import UNet
    with pytest.raises(ValueError, match='class-conditional'):
        MeanFlowObjective(kappa=0.5)
    with pytest.raises(ValueError, match='null class'):
        MeanFlowObjective(omega=2.0, num_classes=10, class_dropout_prob=0.0)
    with pytest.raises(ValueError, match='two_step_times'):
        MeanFlowObjective(two_step_times=(1.0, 0.0, 0.5))
    apply = MeanFlowObjective().network_apply(UNet(dtype=jnp.bfloat16))
    assert apply.__self__.dtype == jnp.float32


# ----------------------------------------------------------------------------- two-time backbones

TINY_UNET = dict(img_resolution=8, in_channels=1, out_channels=1, model_channels=32, channel_mult=(1, 2),
                 num_blocks=1, attn_resolutions=())
TINY_DIT = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=10)


def _shapes(params):
    return jax.tree_util.tree_map(lambda a: a.shape, params)


@pytest.mark.parametrize('kind', ['unet', 'dit'])
def test_two_time_backbones_reduce_to_the_old_parameter_trees(kind):
    from lct_jax.models.dit import DiT
    from lct_jax.models.unet import UNet
    from tests.random_params import perturbed_params
    cls, kw = (UNet, TINY_UNET) if kind == 'unet' else (DiT, TINY_DIT)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    t = jnp.array([0.3, 0.9])
    init = lambda m: jax.jit(m.init)(jax.random.key(0), x, t)['params']
    old, off = init(cls(**kw)), init(cls(**kw, two_times=False))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), old, off))
    on = jax.eval_shape(cls(**kw, two_times=True).init, jax.random.key(0), x, t)['params']
    if kind == 'unet':   # the h embedding is concatenated into map_layer0: its kernel has twice the rows
        assert set(on) == set(old) and on['map_layer0']['kernel'].shape == (64, 128)
        rest = {k: v for k, v in on.items() if k != 'map_layer0'}
        assert _shapes(rest) == _shapes({k: v for k, v in old.items() if k != 'map_layer0'})
    else:                # a second timestep embedder, summed into the conditioning
        assert set(on) - set(old) == {'h_embedder'} and _shapes(on['h_embedder']) == _shapes(old['t_embedder'])
        assert _shapes({k: v for k, v in on.items() if k != 'h_embedder'}) == _shapes(old)
    model = cls(**kw, two_times=True)
    params = perturbed_params(model, (2, 8, 8, 1))
    apply = jax.jit(lambda x_, t_, h_: model.apply({'params': params}, x_, t_, h=h_))
    h0 = apply(x, t, jnp.zeros(2))
    np.testing.assert_allclose(jax.jit(lambda: model.apply({'params': params}, x, t))(), h0, atol=1e-5)  # h None = 0
    assert float(jnp.max(jnp.abs(apply(x, t, jnp.array([0.2, 0.5])) - h0))) > 1e-4
    with pytest.raises(ValueError, match='single-time'):
        jax.eval_shape(lambda: cls(**kw).apply({'params': old}, x, t, h=t))


def test_dit_keeps_labels_when_the_objective_dropped_them():
    from lct_jax.models.dit import DiT
    from tests.random_params import perturbed_params
    model = DiT(**TINY_DIT, two_times=True, class_dropout_prob=0.99)
    params = perturbed_params(model, (2, 8, 8, 1))
    x, t, y = jnp.ones((2, 8, 8, 1)), jnp.array([0.3, 0.9]), jnp.array([1, 2])
    rngs = {'dropout': jax.random.key(0)}
    kept = model.apply({'params': params}, x, t, labels=y, train=True, drop_labels=False, rngs=rngs)
    np.testing.assert_allclose(kept, model.apply({'params': params}, x, t, labels=y), atol=1e-6)
    dropped = model.apply({'params': params}, x, t, labels=y, train=True, rngs=rngs)   # p = 0.99: nulled
    np.testing.assert_allclose(dropped, model.apply({'params': params}, x, t, labels=jnp.array([10, 10])),
                               atol=1e-6)


# ----------------------------------------------------------------------------- samplers

def _fake_apply(u_fn):
    return lambda variables, z, t, h=None: u_fn(z, t, h)


def test_meanflow_samplers_are_exact_for_an_exact_mean_flow_and_start_from_the_shared_noise():
    from lct_jax import sampling
    from lct_jax.sampling import meanflow as meanflow_sampling
    from lct_jax.sampling import spec as sampler_spec
    noise = jax.random.normal(jax.random.key(0), SHAPE)
    for times in [(1.0, 0.0), (1.0, 0.5, 0.0), (1.0, 0.8, 0.3, 0.0)]:
        z0 = meanflow_sampling.meanflow_sample(_fake_apply(_mean_flow_of_linear_field), {}, noise, times)
        np.testing.assert_allclose(z0, noise * jnp.exp(-A), rtol=1e-5, atol=1e-6)   # z_0 = z_1 e^{-a}
    obj = MeanFlowObjective()
    specs = meanflow_sampling.configured(None, obj)
    assert [(s.label, s.method, s.sigmas, s.nfe) for s in specs] == [
        ('1-step', 'meanflow', (1.0, 0.0), 1), ('2-step', 'meanflow', (1.0, 0.5, 0.0), 2)]
    # u = 0 returns the starting noise: sample i's z_i, the one every sampler of lct_jax.sampling uses.
    zero = sampling.make_spec_sampler(specs[0], _fake_apply(lambda z, t, h: 0 * z), obj, (4, 4, 3), seed=7)
    got = zero({}, jnp.array([0, 5]))
    keys = sampler_spec.sample_keys(7, jnp.array([0, 5]))
    want = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (4, 4, 3)))(keys)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match='fall from 1.0'):
        meanflow_sampling.meanflow_spec('x', (1.0, 1.0, 0.0))


# ----------------------------------------------------------------------------- optimizer, configs, the step

def test_adamw_is_optax_adamw_and_radam_stays_the_default():
    import ml_collections
    import optax

    from lct_jax.train.state import make_optimizer
    cfg = ml_collections.ConfigDict(dict(kind='adamw', lr=1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                                         warmup_steps=0, decay='constant', grad_clip=0.0, total_steps=10))
    params = {'w': jnp.array([1.0, -2.0, 3.0])}
    grads = {'w': jnp.array([0.5, 0.1, -0.3])}
    ours, ref = make_optimizer(cfg), optax.adamw(1e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1)
    s1, s2 = ours.init(params), ref.init(params)
    for _ in range(3):
        u1, s1 = ours.update(grads, s1, params)
        u2, s2 = ref.update(grads, s2, params)
        np.testing.assert_allclose(u1['w'], u2['w'], rtol=1e-6)
    radam = cfg.copy_and_resolve_references()
    with radam.unlocked():
        radam.kind = 'radam'
    old = radam.copy_and_resolve_references()
    with old.unlocked():
        del old['kind']                      # a config recorded before the key existed: RAdam
    a, b = make_optimizer(radam), make_optimizer(old)
    np.testing.assert_array_equal(a.update(grads, a.init(params), params)[0]['w'],
                                  b.update(grads, b.init(params), params)[0]['w'])
    assert not np.allclose(a.update(grads, a.init(params), params)[0]['w'], u1['w'])
    with cfg.unlocked():
        cfg.kind = 'sgd'
    with pytest.raises(ValueError, match='optimizer.kind'):
        make_optimizer(cfg)


def test_meanflow_configs():
    from configs import celebahq256, default, digits_latent, imagenet256
    from lct_jax import builders
    for c in (default.get_config('meanflow'), digits_latent.get_config('meanflow'),
              celebahq256.get_config('meanflow')):
        assert (c.objective, c.coupling.method, c.model.two_times, c.sampling.sampler) == \
            ('meanflow', 'none', True, 'meanflow')
        assert (c.optimizer.kind, c.optimizer.b2, c.optimizer.weight_decay) == ('adamw', 0.95, 0.0)
        assert (c.data.normalize, c.consistency.sigma_data) == ('scalar', 1.0)
        assert c.evaluation.method == 'MeanFlow' and isinstance(builders.build_objective(c), MeanFlowObjective)
    assert default.get_config('meanflow').ema_decays == (0.99, 0.999)
    assert celebahq256.get_config('meanflow').ema_decays == (0.9999,)
    mf = imagenet256.get_config('mf_b2')
    assert (mf.batch_size, mf.total_steps, mf.model.dit.patch_size, mf.model.dit.hidden_size) == (256, 1_200_960, 2, 768)
    assert (mf.meanflow.omega, mf.meanflow.kappa, mf.evaluation.paper_fid_1step) == (1.0, 0.5, 6.17)
    assert mf.evaluation.method == 'MeanFlow:mf_b2' and mf.evaluation.run_name == 'imagenet256:mf_b2'
    obj = builders.build_objective(mf)
    assert (obj.num_classes, obj.class_dropout_prob, obj.kappa) == (1000, 0.1, 0.5)
    assert imagenet256.get_config('mf_b4').model.dit.patch_size == 4
    assert imagenet256.get_config('mf_b4').evaluation.paper_fid_1step == 11.4
    from lct_jax import (
        sampling,  # the results table puts the published number beside ours
    )
    from lct_jax.evaluation.paper_table1 import paper_numbers
    one, two = sampling.configured_samplers(mf.sampling, obj)
    assert (one.method, paper_numbers(mf.evaluation, one.method, one.label, one.nfe),
            paper_numbers(mf.evaluation, two.method, two.label, two.nfe)) == \
        ('meanflow', (6.17, None), (None, None))
    c = default.get_config('meanflow')
    with c.unlocked():
        c.model.two_times = False
    with pytest.raises(ValueError, match='two_times'):
        builders.build_objective(c)


def _tiny(config_arg, **model):
    from configs import default
    c = default.get_config(config_arg)
    with c.unlocked():
        c.batch_size = 8
        if c.model.kind == 'dit':
            c.model.dit.update(hidden_size=16, depth=1, num_heads=2)
        else:
            c.model.update(model_channels=16, channel_mult=(1, 4), num_blocks=1, attn_resolutions=())
        c.model.update(model)
    return c


@pytest.mark.parametrize('arg', ['meanflow,smoke', 'dit_cond,meanflow,smoke'])
def test_one_compiled_train_step_of_meanflow(arg):
    """The same step as sLCT's trains MeanFlow: finite loss, one trace, 3/4 of the rows at r = t;
    the class-conditional DiT with guidance (omega 2) and the labels through the objective."""
    from lct_jax import parallel
    from lct_jax.objectives.base import Batch
    from lct_jax.train import loop
    c = _tiny(arg, dtype='bfloat16')
    if 'dit_cond' in arg:
        with c.unlocked():
            c.meanflow.omega = 2.0
    mesh = parallel.make_mesh()
    _, _, state, step_fn = loop.build_training(c, mesh)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    z = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
    parts = (x, z, jnp.ones((8,)))
    batch = Batch(*parts, jnp.arange(8) % 10 if 'dit_cond' in arg else None)
    for _ in range(2):
        state, metrics = step_fn(state, batch)
    assert np.isfinite(float(metrics['loss'])) and float(metrics['r_equals_t']) == 0.75
    assert int(state.step) == 2 and int(metrics['skipped_total']) == 0 and step_fn.trace_count() == 1


# slow (5 min 24 s here beside two study runs): the whole main job on the digits' smoke run. The full
# `configs/default.py:meanflow` run (2,500 steps) is timed by hand: 6 min 56 s, FD 0.85 / 0.34 (report).
@pytest.mark.slow
def test_main_trains_samples_and_evaluates_meanflow(tmp_path):
    """python -m lct_jax.main --config configs/default.py:meanflow,smoke trains (1- and 2-step grids), then
    --mode=sample and --mode=evaluate (their functions, in-process) write images and a results row per sampler."""
    from configs import default
    from lct_jax.modes import evaluate as evaluate_mode
    from lct_jax.modes import sample as sample_mode
    from tests import runs
    w = str(tmp_path / 'meanflow')
    runs.run(runs.command(w, config='configs/default.py:meanflow,smoke', devices=2), str(tmp_path / 'train.log'))
    log = open(tmp_path / 'train.log').read()
    assert 'done: step 20' in log and 'compiled train step 1 time(s)' in log
    metrics = [json.loads(line) for line in open(os.path.join(w, 'metrics.jsonl'))]
    assert all(np.isfinite(m['loss']) for m in metrics)
    for label in ('1step', '2step'):
        assert os.path.getsize(os.path.join(w, 'samples', f'step_0000020_{label}.png')) > 0
    c = default.get_config('meanflow,smoke')
    with c.unlocked():
        c.sampling.update(num_samples=24, batch_size=24)
    sample_mode.sample(c, w)
    evaluate_mode.evaluate(c, w)
    assert len(glob.glob(os.path.join(w, 'samples', '*_1step', '*.png'))) == 24
    rows = json.load(open(os.path.join(w, 'results.json')))
    assert [(r['sampler'], r['nfe'], r['method']) for r in rows] == [('1-step', 1, 'MeanFlow'),
                                                                     ('2-step', 2, 'MeanFlow')]
    assert all(np.isfinite(r['fid']) for r in rows)
