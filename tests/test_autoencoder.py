"""The Flax SD VAE against diffusers' PyTorch AutoencoderKL with the same random weights."""
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.models.autoencoder import AutoencoderKL
from lct_jax.models.convert import WeightsError, vae_params_from_torch

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

SMALL = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
             layers_per_block=1, norm_num_groups=8)
SD = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
          layers_per_block=2, norm_num_groups=32)


def _reference(cfg, seed=0):
    torch.manual_seed(seed)
    n = len(cfg['block_out_channels'])
    ref = diffusers.AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * n,
                                  up_block_types=('UpDecoderBlock2D',) * n, **cfg).eval()
    with torch.no_grad():  # random, non-trivial norms and biases too
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ref


def _rel(got_nhwc, want_nchw):
    got = np.asarray(got_nhwc).transpose(0, 3, 1, 2)
    return np.abs(got - want_nchw).max() / np.abs(want_nchw).max()


@pytest.mark.parametrize('cfg, res', [(SMALL, 32), (SD, 64)], ids=['small', 'sd'])
def test_encode_decode_equal_diffusers(cfg, res):
    ref = _reference(cfg)
    model = AutoencoderKL(**cfg)
    params = vae_params_from_torch(ref.state_dict(), model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, res, res)).astype(np.float32)
    with torch.no_grad():
        post = ref.encode(torch.from_numpy(x)).latent_dist
        mean, logvar = post.mean.numpy(), post.logvar.numpy()
        image = ref.decode(torch.from_numpy(mean)).sample.numpy()
    m, lv = model.apply({'params': params}, jnp.asarray(x.transpose(0, 2, 3, 1)), method=model.encode)
    dec = model.apply({'params': params}, jnp.asarray(mean.transpose(0, 2, 3, 1)), method=model.decode)
    r = res // 2 ** (len(cfg['block_out_channels']) - 1)
    assert m.shape == (2, r, r, 4)
    assert _rel(m, mean) <= 1e-4 and _rel(lv, logvar) <= 1e-4 and _rel(dec, image) <= 1e-4


def test_legacy_attention_names_load_and_bad_files_are_listed():
    ref = _reference(SMALL)
    model = AutoencoderKL(**SMALL)
    sd = dict(ref.state_dict())
    new = vae_params_from_torch(sd, model)
    legacy = {}
    for k, v in sd.items():  # the old diffusers names, as 1x1 convs
        for old, cur in (('query', 'to_q'), ('key', 'to_k'), ('value', 'to_v'), ('proj_attn', 'to_out.0')):
            if f'.{cur}.' in k:
                k = k.replace(f'.{cur}.', f'.{old}.')
                v = v[:, :, None, None] if v.ndim == 2 else v
        legacy[k] = v
    old = vae_params_from_torch(legacy, model)
    np.testing.assert_array_equal(old['encoder']['mid_block']['attentions_0']['to_q']['kernel'],
                                  new['encoder']['mid_block']['attentions_0']['to_q']['kernel'])
    sd.pop('decoder.conv_out.bias')
    sd['encoder.conv_in.weight'] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(WeightsError, match=r'(?s)missing keys \(1\): decoder.conv_out.bias.*encoder.conv_in.weight'):
        vae_params_from_torch(sd, model)
