"""The Flax DiT against an independent PyTorch DiT (the authors' / facebookresearch's), and its conversion."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.models import dit as dit_lib
from lct_jax.models.convert import WeightsError, dit_params_from_torch
from lct_jax.models.dit import DiT
from lct_jax.models.unet import count_params
from tests import jaxprs

torch = pytest.importorskip('torch')
from tests.reference import torch_dit  # noqa: E402

# Tiny depth and width for speed; two sizes and patch sizes (2 and 4), different head counts,
# channel counts and a non-integer mlp_ratio.
TINY_P2 = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=48, depth=2, num_heads=3)
SMALL_P4 = dict(input_size=16, patch_size=4, in_channels=3, hidden_size=64, depth=3, num_heads=4, mlp_ratio=2.5)


def _pair(cfg, num_classes, learn_sigma=False, dropout=0.1, seed=0):
    ref = torch_dit.randomize_(torch_dit.DiT(**cfg, num_classes=num_classes, learn_sigma=learn_sigma,
                                             class_dropout_prob=dropout), seed).eval()
    model = DiT(**cfg, num_classes=num_classes, learn_sigma=learn_sigma, class_dropout_prob=dropout)
    return ref, model, dit_params_from_torch(ref.state_dict(), model)


def _inputs(cfg, batch, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    r, c = cfg['input_size'], cfg['in_channels']
    x = rng.standard_normal((batch, c, r, r)).astype(np.float32)
    noise_labels = (250 * np.log(rng.uniform(0.002, 80, batch))).astype(np.float32)
    labels = rng.integers(0, num_classes, batch) if num_classes else None
    return x, noise_labels, labels


def _relative_error(cfg, num_classes, with_labels, learn_sigma=False, batch=3):
    ref, model, params = _pair(cfg, num_classes, learn_sigma)
    x, t, labels = _inputs(cfg, batch, num_classes)
    labels = labels if with_labels else None
    with torch.no_grad():
        want = ref(torch.from_numpy(x), torch.from_numpy(t),
                   None if labels is None else torch.from_numpy(labels)).numpy()
    apply = jax.jit(lambda p, x, t, y: model.apply({'params': p}, x, t, labels=y))
    got = np.asarray(apply(params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t),
                           None if labels is None else jnp.asarray(labels))).transpose(0, 3, 1, 2)
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize('cfg', [TINY_P2, SMALL_P4], ids=['p2', 'p4'])
def test_unconditional_dit_equals_pytorch(cfg):
    assert _relative_error(cfg, num_classes=0, with_labels=False) <= 1e-4


@pytest.mark.parametrize('cfg', [TINY_P2, SMALL_P4], ids=['p2', 'p4'])
@pytest.mark.parametrize('with_labels', [True, False], ids=['labels', 'null_class'])
def test_class_conditional_dit_equals_pytorch(cfg, with_labels):
    assert _relative_error(cfg, num_classes=10, with_labels=with_labels) <= 1e-4


def test_learn_sigma_doubles_the_output_channels_and_still_matches():
    assert _relative_error(TINY_P2, num_classes=0, with_labels=False, learn_sigma=True) <= 1e-4


def test_labels_change_the_output_and_none_is_the_null_class():
    _, model, params = _pair(TINY_P2, num_classes=10)
    x, t, _ = _inputs(TINY_P2, 2, 10)
    x = jnp.asarray(x.transpose(0, 2, 3, 1))
    out = lambda y: np.asarray(model.apply({'params': params}, x, jnp.asarray(t), labels=y))  # noqa: E731
    np.testing.assert_array_equal(out(None), out(jnp.array([10, 10])))   # row num_classes = null
    assert np.abs(out(jnp.array([1, 1])) - out(jnp.array([2, 2]))).max() > 1e-3


def test_label_dropout_only_in_training_and_same_key_same_mask():
    model = DiT(**TINY_P2, num_classes=10, class_dropout_prob=0.5)
    _, _, params = _pair(TINY_P2, num_classes=10, dropout=0.5)
    x = jnp.zeros((64, 8, 8, 4))
    t, labels = jnp.zeros((64,)), jnp.full((64,), 3)
    apply = jax.jit(lambda key, train: model.apply({'params': params}, x, t, labels=labels, train=train,
                                                   rngs={'dropout': key}), static_argnums=1)
    evaluation, null = apply(jax.random.key(0), False), model.apply({'params': params}, x, t)
    a, b = apply(jax.random.key(1), True), apply(jax.random.key(1), True)
    np.testing.assert_array_equal(a, b)                       # the student and the target share a mask
    dropped = np.all(np.isclose(a, null), axis=(1, 2, 3))
    kept = np.all(np.isclose(a, evaluation), axis=(1, 2, 3))
    assert np.all(dropped ^ kept) and 16 < dropped.sum() < 48, dropped.sum()


def test_the_consistency_function_calls_it_like_the_unet():
    """objective.consistency_fn's call: apply_fn({'params': p}, x, noise_labels, train=, rngs=)."""
    from lct_jax.objectives.edm import consistency_fn
    from lct_jax.objectives.slct import SLCT as Objective
    _, model, params = _pair(TINY_P2, num_classes=0)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    out = consistency_fn(model.apply, params, x, jnp.array([0.5, 10.0]), Objective(total_steps=10), train=True,
                         rngs={'dropout': jax.random.key(1)})
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))


def test_presets_and_xl2_parameter_count():
    assert dit_lib.preset('B/2') == dict(depth=12, hidden_size=768, num_heads=12, patch_size=2)
    with pytest.raises(ValueError, match='valid'):
        dit_lib.preset('B/3')
    # DiT-XL/2 as trained on ImageNet 256 (1000 classes, learned sigma): facebookresearch/DiT's train.py
    # prints 675,129,632 parameters, which counts the frozen pos_embed (256 x 1152) that we do not store.
    model = DiT(**dit_lib.preset('XL/2'), num_classes=1000, learn_sigma=True)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,))))
    assert count_params(shapes['params']) == 675_129_632 - 256 * 1152


def test_fresh_init_is_adaln_zero():
    """DiT's init: adaLN and the output layer zero, so a fresh network outputs exactly zero."""
    model = DiT(**TINY_P2)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    params = model.init(jax.random.key(1), x, jnp.zeros((2,)))['params']
    assert float(jnp.abs(model.apply({'params': params}, x, jnp.ones((2,)))).max()) == 0.0
    assert float(jnp.abs(params['blocks_0']['attn']['qkv']['kernel']).max()) > 0


def test_invalid_configurations_name_the_field():
    with pytest.raises(ValueError, match='divisible by patch_size'):
        DiT(**dict(TINY_P2, input_size=9)).init(jax.random.key(0), jnp.zeros((1, 9, 9, 4)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match='class_dropout_prob'):
        DiT(**TINY_P2, class_dropout_prob=0.0).init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match=r'\(batch, 8, 8, 4\)'):
        DiT(**TINY_P2).init(jax.random.key(0), jnp.zeros((1, 4, 8, 8)), jnp.zeros((1,)))


def test_strict_conversion_lists_every_problem():
    ref, model, _ = _pair(TINY_P2, num_classes=0)
    sd = {'module.' + k: v for k, v in ref.state_dict().items()}   # a DDP prefix is accepted
    dit_params_from_torch(sd, model)
    sd.pop('module.blocks.1.attn.qkv.weight')
    sd.pop('module.t_embedder.mlp.0.bias')
    sd['module.blocks.2.attn.qkv.weight'] = torch.zeros(3)          # a third block this model lacks
    sd['module.final_layer.linear.bias'] = torch.zeros(5)
    sd['module.pos_embed'] = torch.zeros(1, 16, 48)
    with pytest.raises(WeightsError) as e:
        dit_params_from_torch(sd, model)
    msg = str(e.value)
    for part in ('missing keys (2): blocks.1.attn.qkv.weight, t_embedder.mlp.0.bias',
                 'unexpected keys (1): blocks.2.attn.qkv.weight', 'final_layer.linear.bias: file (5,)',
                 'pos_embed: not the fixed 2-D sin-cos table'):
        assert part in msg, msg


def test_bfloat16_compute_keeps_float32_norms_softmax_and_time_embedding():
    _, _, params = _pair(TINY_P2, num_classes=0)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    t = jnp.array([-300.0, 500.0])
    f32 = DiT(**TINY_P2).apply({'params': params}, x, t)
    bf16_model = DiT(**TINY_P2, dtype=jnp.bfloat16)
    bf16 = bf16_model.apply({'params': params}, x, t)
    assert bf16.dtype == jnp.float32
    err = float(jnp.abs(bf16 - f32).max() / jnp.abs(f32).max())
    assert 1e-4 < err < 5e-2, err
    eqns = list(jaxprs.equations(jax.make_jaxpr(bf16_model.apply)({'params': params}, x, t).jaxpr))
    dots = [e for e in eqns if e.primitive.name == 'dot_general' and e.invars[1].aval.ndim == 2]
    assert dots and any(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    for name in ('exp', 'cos', 'sin', 'rsqrt'):    # softmax, time embedding, LayerNorm
        found = [e for e in eqns if e.primitive.name == name]
        assert found and all(v.aval.dtype == jnp.float32 for e in found for v in e.invars), name


def test_remat_gives_the_same_gradients():
    _, _, params = _pair(TINY_P2, num_classes=0)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    t = jnp.array([-300.0, 500.0])

    def grads(model):
        return jax.jit(jax.grad(lambda p: jnp.sum(model.apply({'params': p}, x, t) ** 2)))(params)

    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max()),
                           grads(DiT(**TINY_P2, remat=True)), grads(DiT(**TINY_P2)))
