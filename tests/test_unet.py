"""The Flax UNet against an independent PyTorch DhariwalUNet, its norms and its size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.models.convert import WeightsError, unet_params_from_torch
from lct_jax.models.norms import NORM_TYPES, Norm
from lct_jax.models.unet import UNet, count_params

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
