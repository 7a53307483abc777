"""The Flax UNet against an independent PyTorch DhariwalUNet, its norms and its size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.models.convert import WeightsError, unet_params_from_torch
from lct_jax.models.norms import NORM_TYPES, Norm
from lct_jax.models.unet import UNet, count_params
from tests import jaxprs

torch = pytest.importorskip('torch')
from tests.reference.torch_unet import DhariwalUNet  # noqa: E402

SMALL = dict(img_resolution=16, in_channels=4, out_channels=4, model_channels=64, channel_mult=(1, 2),
             num_blocks=1, attn_resolutions=(8,))
PAPER = dict(img_resolution=32, in_channels=4, out_channels=4, model_channels=128,
             channel_mult=(1, 2, 3, 4), num_blocks=4, attn_resolutions=(16, 8))


def _compare(cfg, norm, batch=2, seed=0):
    torch.manual_seed(seed)
    ref = DhariwalUNet(**cfg, block_norm=norm, out_norm=norm).eval()
    model = UNet(**cfg, block_norm=norm, out_norm=norm)
    params = unet_params_from_torch(ref.state_dict(), model)
    rng = np.random.default_rng(seed)
    r, c = cfg['img_resolution'], cfg['in_channels']
    x = rng.standard_normal((batch, c, r, r)).astype(np.float32)
    labels = (250 * np.log(rng.uniform(0.002, 80, batch))).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x), torch.from_numpy(labels)).numpy()
    got = np.asarray(jax.jit(model.apply)({'params': params}, jnp.asarray(x.transpose(0, 2, 3, 1)),
                                          jnp.asarray(labels))).transpose(0, 3, 1, 2)
    return np.abs(got - want).max() / np.abs(want).max()


@pytest.mark.parametrize('norm', NORM_TYPES)
def test_small_unet_equals_pytorch_for_every_norm(norm):
    assert _compare(SMALL, norm) <= 1e-4


@pytest.mark.parametrize('norm', ['group-norm', 'non-scaling-layer-norm'])
def test_paper_unet_equals_pytorch(norm):
    assert _compare(PAPER, norm, batch=1) <= 1e-4


@pytest.mark.parametrize('norm, count', [('group-norm', 151_325_956), ('non-scaling-layer-norm', 158_355_972)])
def test_paper_parameter_counts(norm, count):
    model = UNet(**PAPER, block_norm=norm, out_norm=norm)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,))))
    assert count_params(shapes['params']) == count


def test_nsln_zero_mean_unit_variance_per_sample_and_no_scale():
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 16)) * 5 + 2
    norm = Norm('non-scaling-layer-norm')
    variables = norm.init(jax.random.key(1), x)
    assert set(variables['params']) == {'bias'}
    assert variables['params']['bias'].shape == (8, 8, 16)
    y = norm.apply(variables, x)
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 2, 3)), 1, atol=1e-3)


def test_dropout_only_in_train_mode():
    model = UNet(**SMALL, dropout=0.5)
    x = jnp.ones((2, 16, 16, 4))
    params = jax.jit(model.init)(jax.random.key(0), x, jnp.zeros((2,)))['params']
    # Zero-initialised output convs hide dropout; perturb every param.
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    apply = jax.jit(model.apply, static_argnames='train')
    a = apply({'params': params}, x, jnp.zeros((2,)))
    b = apply({'params': params}, x, jnp.zeros((2,)))
    c = apply({'params': params}, x, jnp.zeros((2,)), train=True, rngs={'dropout': jax.random.key(3)})
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1e-3


def test_wrong_input_shape_names_expected():
    model = UNet(**SMALL)
    with pytest.raises(ValueError, match=r'\(batch, 16, 16, 4\)'):
        model.init(jax.random.key(0), jnp.zeros((1, 4, 16, 16)), jnp.zeros((1,)))


def test_strict_conversion_lists_every_problem():
    torch.manual_seed(0)
    ref = DhariwalUNet(**SMALL, block_norm='non-scaling-layer-norm', out_norm='non-scaling-layer-norm')
    sd = {('module.' + k): v for k, v in ref.state_dict().items()}  # DDP prefix is accepted
    model = UNet(**SMALL)
    unet_params_from_torch(sd, model)
    sd.pop('module.map_layer0.weight')
    sd['module.extra.weight'] = torch.zeros(3)
    sd['module.out_conv.bias'] = torch.zeros(7)
    sd['module.enc.16x16_block0.norm0.weight'] = torch.full((64, 16, 16), 2.0)
    with pytest.raises(WeightsError) as e:
        unet_params_from_torch(sd, model)
    msg = str(e.value)
    for part in ('missing keys (1): map_layer0.weight', 'unexpected keys (1): extra.weight',
                 'out_conv.bias: file (7,)', 'enc.16x16_block0.norm0.weight: a frozen scale must be all ones'):
        assert part in msg


def _perturbed_params(model, x, seed=0):
    params = jax.jit(model.init)(jax.random.key(seed), x, jnp.zeros((x.shape[0],)))['params']
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


TINY = dict(img_resolution=8, in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2),
            num_blocks=1, attn_resolutions=(4,))


def test_bfloat16_compute_keeps_float32_statistics_softmax_and_time_embedding():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    labels = jnp.array([-300.0, 500.0])
    params = _perturbed_params(UNet(**TINY), x)
    f32 = jax.jit(UNet(**TINY).apply)({'params': params}, x, labels)
    bf16_model = UNet(**TINY, dtype=jnp.bfloat16)
    bf16 = jax.jit(bf16_model.apply)({'params': params}, x, labels)
    assert bf16.dtype == jnp.float32
    err = float(jnp.abs(bf16 - f32).max() / jnp.abs(f32).max())
    assert 1e-4 < err < 5e-2, err          # bf16 really used, and close to float32
    eqns = list(jaxprs.equations(jax.make_jaxpr(bf16_model.apply)({'params': params}, x, labels).jaxpr))
    convs = [e for e in eqns if e.primitive.name == 'conv_general_dilated']
    assert convs and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
    for name in ('reduce_sum', 'exp', 'cos', 'sin', 'rsqrt', 'sqrt'):  # norms, softmax, time embedding
        found = [e for e in eqns if e.primitive.name == name]
        assert all(v.aval.dtype == jnp.float32 for e in found for v in e.invars), name
    assert any(e.primitive.name == 'reduce_sum' for e in eqns) and any(e.primitive.name == 'exp' for e in eqns)


def test_remat_gives_the_same_gradients_and_rematerialises():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    labels = jnp.array([-300.0, 500.0])
    params = _perturbed_params(UNet(**TINY), x)

    def grads(model):
        loss = lambda p: jnp.sum(model.apply({'params': p}, x, labels) ** 2)
        return jax.jit(jax.grad(loss))(params), jax.make_jaxpr(jax.grad(loss))(params).jaxpr

    plain, plain_jaxpr = grads(UNet(**TINY))
    remat, remat_jaxpr = grads(UNet(**TINY, remat=True))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max()),
                           remat, plain)
    # The backward recomputes the blocks' forward: more convolutions in the gradient's program.
    assert jaxprs.count(remat_jaxpr, 'conv_general_dilated') > jaxprs.count(plain_jaxpr, 'conv_general_dilated')
