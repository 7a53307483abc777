"""The VGG16 fc2 features for precision / recall against torchvision's VGG16 (random weights)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.models.convert import WeightsError, vgg16_params_from_torch
from lct_jax.models.vgg16 import VGG16, adaptive_avg_pool, preprocess

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')


@functools.lru_cache(maxsize=None)
def _torch_vgg16():
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


def _torch_fc2(model, x_nchw, relu=True):
    with torch.no_grad():
        h = torch.flatten(model.avgpool(model.features(torch.from_numpy(x_nchw))), 1)
        return model.classifier[:5 if relu else 4](h).numpy()   # fc1, ReLU, dropout, fc2 [, ReLU]


def _rel_err(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


def test_fc2_features_equal_torchvision_vgg16():
    ref = _torch_vgg16()
    state = ref.state_dict()
    params = vgg16_params_from_torch(state, VGG16())
    rng = np.random.default_rng(0)
    errors = {}
    # 64x64 (the adaptive pool repeats the 2x2 map to 7x7) and 224x224 (the detector's size: pool = identity)
    for size, n in ((64, 2), (224, 1)):
        x = rng.standard_normal((n, 3, size, size)).astype(np.float32)
        for relu in (True, False):
            want = _torch_fc2(ref, x, relu)
            got = np.asarray(jax.jit(VGG16(fc2_relu=relu).apply)({'params': params},
                                                                  jnp.asarray(x.transpose(0, 2, 3, 1))))
            assert got.shape == (n, 4096)
            errors[size, relu] = _rel_err(got, want)
    assert max(errors.values()) <= 1e-4, errors


def test_area_resize_and_adaptive_pool_equal_pytorch():
    import torch.nn.functional as F
    rng = np.random.default_rng(1)
    for (h, w), out in (((256, 256), (224, 224)), ((2, 2), (7, 7)), ((13, 9), (7, 7))):
        x = rng.uniform(0, 255, (2, 3, h, w)).astype(np.float32)
        want = F.interpolate(torch.from_numpy(x), size=out, mode='area').numpy()
        assert np.allclose(want, F.adaptive_avg_pool2d(torch.from_numpy(x), out).numpy())
        got = np.asarray(adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), out)).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # preprocess: area resize to 224, then torchvision's ImageNet normalisation (or Caffe's BGR mean)
    img = rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    t = F.interpolate(torch.from_numpy(img.transpose(0, 3, 1, 2).astype(np.float32)), size=(224, 224),
                      mode='area').numpy().transpose(0, 2, 3, 1)
    tv = (t / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(np.asarray(preprocess(img)), tv, rtol=1e-4, atol=1e-4)
    caffe = t[..., ::-1] - np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(np.asarray(preprocess(img, 'caffe')), caffe, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match='valid'):
        preprocess(img, 'keras')


def test_converter_is_strict():
    state = {k: v.numpy() for k, v in _torch_vgg16().state_dict().items()}
    model = VGG16()
    bad = dict(state)
    bad.pop('features.28.bias')
    bad['features.0.weight'] = bad['features.0.weight'][:32]
    bad['classifier.9.weight'] = np.zeros(3)
    with pytest.raises(WeightsError) as e:
        vgg16_params_from_torch(bad, model)
    msg = str(e.value)
    assert 'missing keys (1): features.28.bias' in msg
    assert 'unexpected keys (1): classifier.9.weight' in msg
    assert 'wrong shapes (1): features.0.weight' in msg


def test_nvidia_style_torchscript_is_converted_by_shape(tmp_path):
    """A TorchScript file (as NVIDIA's vgg16.pt is) with extra tensors around VGG16's layers."""
    from lct_jax.evaluation import nvidia_vgg16

    class WithExtras(torch.nn.Module):  # e.g. LPIPS heads registered before the network
        def __init__(self, vgg):
            super().__init__()
            self.lin0 = torch.nn.Conv2d(64, 1, 1, bias=False)
            self.vgg = vgg

        def forward(self, x):
            return self.vgg(x)

    scripted = torch.jit.script(WithExtras(_torch_vgg16()))
    src, dst = str(tmp_path / 'vgg16.pt'), str(tmp_path / 'vgg16.npz')
    scripted.save(src)
    nvidia_vgg16.main([src, dst])
    with np.load(dst) as f:
        arrays = {k: f[k] for k in f.files}
    want = {k: v.numpy() for k, v in _torch_vgg16().state_dict().items() if not k.startswith('classifier.6')}
    assert sorted(arrays) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(arrays[k], want[k])
    assert 'def forward' in open(dst + '.code.txt').read()
    vgg16_params_from_torch(arrays, VGG16())   # loads strictly
    with pytest.raises(WeightsError, match='no tensor of shape'):
        nvidia_vgg16.extract_vgg16({k: v for k, v in arrays.items() if k != 'classifier.3.weight'})


def test_check_against_a_detector_names_the_settings_that_reproduce_it(tmp_path):
    """`--check` on a TorchScript detector with StyleGAN2-ADA's calling convention (uint8 NCHW in,
    return_features=True), built here to do area resize + torchvision normalisation + fc2 + ReLU."""
    from lct_jax.evaluation import nvidia_vgg16

    class Detector(torch.nn.Module):
        def __init__(self, vgg):
            super().__init__()
            self.vgg = vgg
            self.fc = torch.nn.Sequential(*list(vgg.classifier)[:5])   # fc1, ReLU, dropout, fc2, ReLU
            self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, img, return_features: bool = False):
            x = torch.nn.functional.interpolate(img.to(torch.float32), size=(224, 224), mode='area')
            x = (x / 255 - self.mean) / self.std
            h = torch.flatten(self.vgg.avgpool(self.vgg.features(x)), 1)
            return self.fc(h)

    src, dst = str(tmp_path / 'detector.pt'), str(tmp_path / 'vgg16.npz')
    torch.jit.script(Detector(_torch_vgg16())).save(src)
    nvidia_vgg16.convert(src, dst)
    errors = nvidia_vgg16.check(src, dst, num=1)
    best = min(errors, key=errors.get)
    assert best == ('torchvision', True) and errors[best] <= 1e-4, errors
    assert errors['caffe', True] > 0.1 and errors['torchvision', False] > 1e-3, errors
