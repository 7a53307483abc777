"""FID network and distance against pytorch-fid; precision/recall; sampling; the results table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax import parallel
from lct_jax.evaluation import fid, precision_recall
from lct_jax.models.convert import WeightsError, inception_params_from_torch
from lct_jax.models.inception import InceptionV3
from lct_jax.sampling import consistency as consistency_sampling

torch = pytest.importorskip('torch')
pytest.importorskip('pytorch_fid')


def test_inception_pool_features_equal_pytorch_fid():
    from tests.reference.fid_inception import random_fid_inception
    ref, state = random_fid_inception()
    model = InceptionV3()
    variables = inception_params_from_torch(state, model)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 80)).astype(np.float32)  # resized to 299
    with torch.no_grad():
        want = ref(torch.from_numpy(x))[0][:, :, 0, 0].numpy()
    got = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
    assert got.shape == (2, 2048)
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4
    state.pop('Mixed_7c.branch_pool.conv.weight')
    with pytest.raises(WeightsError, match='missing keys \\(1\\): Mixed_7c.branch_pool.conv.weight'):
        inception_params_from_torch(state, model)


def test_frechet_distance_equals_pytorch_fid(tmp_path):
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((500, 16)), rng.standard_normal((400, 16)) * 1.3 + 0.2
    mu1, s1 = fid.statistics(a)
    mu2, s2 = fid.statistics(b)
    want = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-6)
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)
    path = str(tmp_path / 'ref.npz')
    fid.save_stats(path, mu1, s1)
    with np.load(path) as f:  # pytorch-fid reads f['mu'], f['sigma']
        np.testing.assert_array_equal(f['mu'], mu1)
    np.testing.assert_array_equal(fid.load_stats(path)[1], s1)


def test_precision_recall_limits_and_a_small_case():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 8))
    assert precision_recall.precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # generated = half of the real points: precise, but recall misses the other half
    p, r = precision_recall.precision_recall(real, real[:100], k=3)
    assert p == 1.0 and 0.4 < r < 1.0
    pts = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    np.testing.assert_allclose(precision_recall.knn_radii(pts, k=1), [1, 1, 1, 1, 49])


def test_same_seed_same_images_on_one_and_four_devices():
    from lct_jax.models.unet import UNet
    from lct_jax.objectives.slct import SLCT as Objective
    model = UNet(img_resolution=8, in_channels=1, out_channels=1, model_channels=32, channel_mult=(1, 2),
                 num_blocks=1, attn_resolutions=(4,))
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))['params']
    params = jax.tree_util.tree_map(lambda p: p + 0.05, params)
    obj = Objective(total_steps=10)
    sig = consistency_sampling.step_sigmas((0, 420, 640), 641, obj)
    assert sig[1] == pytest.approx(0.5286, rel=1e-3)
    outs = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.make_mesh(devices)
        f = consistency_sampling.make_sampler(model.apply, obj, (8, 8, 1), sig, 42, mesh)
        outs.append(np.asarray(f(parallel.replicate(params, mesh), parallel.shard_host_array(np.arange(8), mesh))))
    # XLA's CPU kernels may round differently for other per-device shapes (1 ulp); the images agree.
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    from lct_jax.models.autoencoder import to_uint8
    np.testing.assert_array_equal(to_uint8(outs[0] * 0.5), to_uint8(outs[1] * 0.5))
    # and a sample does not depend on the batch it is drawn in
    f = consistency_sampling.make_sampler(model.apply, obj, (8, 8, 1), sig, 42)
    np.testing.assert_allclose(np.asarray(f(params, np.arange(3, 5))), outs[0][3:5],
                               rtol=1e-5, atol=1e-6)
