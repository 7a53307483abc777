"""`--mode=train_autoencoder` (lct_jax/autoencoder_training.py) and configs/digits_latent.py: the loss
parts in closed form, the diffusers export read back by the ordinary 'kl' codec, and a tiny run of
the whole latent pipeline (train -> resume -> encode 32x32 digits to 8x8x4 -> analyze)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax.models.autoencoder import AutoencoderKL
from lct_jax.train import autoencoder as aet


def tiny_config(workdir, *variants):
    from configs import digits_latent
    c = digits_latent.get_config(','.join(('ae_smoke',) + variants))
    with c.unlocked():
        # a narrow autoencoder with the real geometry (two down-samplings: 32x32x1 -> 8x8x4)
        c.autoencoder_training.update(block_out_channels=(8, 16, 16), norm_num_groups=4)
        c.autoencoder.weights = os.path.join(workdir, aet.EXPORT_DIR)
        c.data.latent_dir = os.path.join(workdir, 'latents')
    return c


def test_loss_parts_in_closed_form():
    mean = jnp.ones((2, 2, 2, 4)) * jnp.array([0.0, 1.0]).reshape(2, 1, 1, 1)
    logvar = jnp.zeros_like(mean)
    # KL(N(m, 1) || N(0, 1)) = m^2 / 2 per element: 0 and 16 * 0.5
    np.testing.assert_allclose(aet.kl_to_standard_normal(mean, logvar), [0.0, 8.0])
    np.testing.assert_allclose(aet.kl_to_standard_normal(jnp.zeros((1, 1, 1, 1)), jnp.log(jnp.full((1, 1, 1, 1), 2.0))),
                               [0.5 * (2.0 - 1.0 - np.log(2.0))], rtol=1e-6)
    x, x_hat = jnp.zeros((1, 2, 2, 1)), jnp.full((1, 2, 2, 1), -0.5)
    assert float(aet.reconstruction_error(x, x_hat, 'l1')[0]) == 2.0
    assert float(aet.reconstruction_error(x, x_hat, 'l2')[0]) == 1.0
    assert float(aet.reconstruction_error(x, x_hat, 'l1+l2')[0]) == 3.0
    with pytest.raises(ValueError, match='valid'):
        aet.reconstruction_error(x, x_hat, 'lpips')
    assert aet.psnr(np.array([255.0 ** 2 / 100.0])) == pytest.approx(20.0)


def test_export_is_read_back_exactly_by_the_kl_codec(tmp_path):
    from lct_jax.models.autoencoder import kl_codec, vae_fields_from_config
    from lct_jax.models.convert import vae_params_from_torch
    model = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
                          layers_per_block=1, norm_num_groups=4)
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1), minval=-1, maxval=1)
    params = model.init(jax.random.key(1), x)['params']
    back = vae_params_from_torch(aet.torch_state_dict(params, model), model)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(back))
    folder = aet.export_diffusers(params, model, str(tmp_path / 'vae'), 16, 1.0)
    cfg = json.load(open(os.path.join(folder, 'config.json')))
    codec = kl_codec(os.path.join(folder, 'diffusion_pytorch_model.safetensors'), 1.0,
                     **vae_fields_from_config(cfg, folder))
    assert codec.latent_shape(16) == (8, 8, 4)
    z = model.apply({'params': params}, x, method=model.encode)[0]
    np.testing.assert_allclose(codec.decode(z), model.apply({'params': params}, z, method=model.decode),
                               atol=1e-5)


@pytest.mark.slow
def test_latent_pipeline_trains_resumes_encodes_and_analyzes(tmp_path, capsys):
    from lct_jax.data.latents import LatentDataset
    from lct_jax.modes import encode as encode_mode
    from lct_jax.modes.analyze import analyze_dataset
    wd = str(tmp_path)
    c = tiny_config(wd)
    first = aet.train_autoencoder(c, wd)
    assert first['latent_shape'] == [8, 8, 4] and first['num_images'] == 1797 and first['steps'] == 4
    assert np.isfinite(first['mse_uint8']) and first['psnr_db'] > 0
    assert os.path.getsize(os.path.join(wd, 'ae_reconstructions.png')) > 500
    assert json.load(open(os.path.join(wd, 'ae_metrics.json')))['psnr_db'] == first['psnr_db']
    capsys.readouterr()
    again = aet.train_autoencoder(c, wd)         # finished: restored, not retrained, same numbers
    out = capsys.readouterr().out
    assert 'resuming from step 4' in out and 'autoencoder step' not in out
    assert again['mse_uint8'] == first['mse_uint8']
    encode_mode.encode(c, wd)                            # through the ordinary 'kl' codec, from the export
    ds = LatentDataset(c.data.latent_dir)
    assert len(ds) == 1797 and tuple(ds.manifest['shape']) == (8, 8, 4)
    summary = analyze_dataset(c, wd)['summary']
    assert set(summary) == {'latents', 'pixels', 'tail_power', 'temporal_differences'}
    assert summary['latents']['count'] == 1797 * 256 and summary['temporal_differences']['count'] == 512 * 256


def test_digits_latent_variants():
    from configs import digits_latent
    c = digits_latent.get_config()
    assert (c.model.img_resolution, c.model.in_channels, c.data.resolution) == (8, 4, 32)
    assert c.autoencoder.kind == 'kl' and c.autoencoder_training.kl_weight == 1e-6
    assert c.consistency.c0 == pytest.approx(0.00054 * np.sqrt(256))
    assert digits_latent.get_config('kl_1e-3').autoencoder_training.kl_weight == 1e-3
    i = digits_latent.get_config('ilct,kl_1e-4')
    assert i.consistency.loss_norm == 'huber' and i.autoencoder_training.kl_weight == 1e-4


def test_rescaled_c_schedule_keeps_the_papers_ratio_to_c0():
    from lct_jax.objectives.slct import robust_c

    from lct_jax.objectives.slct import SLCT as Objective
    paper = Objective(total_steps=10, c_schedule='scaling')
    d256 = Objective(total_steps=10, c_schedule='scaling_rescaled', c0=0.00054 * 16)
    same = Objective(total_steps=10, c_schedule='scaling_rescaled')   # c0 = 0.03456: the paper's c(N)
    for n in (11, 21, 41, 641):
        assert float(same.robust_c(n)) == pytest.approx(float(paper.robust_c(n)), rel=1e-6)
        assert float(d256.robust_c(n)) == pytest.approx(float(paper.robust_c(n)) / 4, rel=1e-6)
    assert float(d256.robust_c(11)) == pytest.approx(0.00864, rel=1e-6)
    assert float(robust_c(21, 10, 0.00864)) == pytest.approx(0.013635, rel=1e-3)   # unrescaled: > c0
    with pytest.raises(ValueError, match='scaling_rescaled'):
        Objective(total_steps=10, c_schedule='adaptive')
