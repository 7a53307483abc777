"""Weights by path or by name: files, diffusers folders, hub ids, URLs into a cache.

Nothing here touches the network: the Hugging Face cache is built on disk in
the layout huggingface_hub reads (blobs, a snapshot of symlinks, refs/main)
and read with HF_HUB_OFFLINE=1; URL downloads are file:// URLs.
"""
import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from lct_jax import weights

SMALL = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
             layers_per_block=1, norm_num_groups=8, sample_size=16)
REPO = 'tiny-org/tiny-vae'
COMMIT = hashlib.sha1(b'tiny-vae').hexdigest()


@pytest.fixture(scope='module')
def small_vae(tmp_path_factory):
    """A small diffusers AutoencoderKL with random weights, saved as a diffusers folder."""
    torch = pytest.importorskip('torch')
    diffusers = pytest.importorskip('diffusers')
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * 2,
                                  up_block_types=('UpDecoderBlock2D',) * 2, **SMALL).eval()
    with torch.no_grad():  # random, non-trivial norms and biases too
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp('vae') / 'tiny-vae'
    ref.save_pretrained(str(folder), safe_serialization=True)
    return folder, ref


def build_hub_cache(cache_dir, repo_id, folder, commit, subfolder=''):
    """`folder`'s files in huggingface_hub's cache layout, as a download of repo_id@main would leave them."""
    repo_dir = os.path.join(cache_dir, 'models--' + repo_id.replace('/', '--'))
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), 'rb') as f:
            data = f.read()
        blob = os.path.join(repo_dir, 'blobs', hashlib.sha256(data).hexdigest())
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        with open(blob, 'wb') as f:
            f.write(data)
        link = os.path.join(repo_dir, 'snapshots', commit, subfolder, name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    os.makedirs(os.path.join(repo_dir, 'refs'), exist_ok=True)
    with open(os.path.join(repo_dir, 'refs', 'main'), 'w') as f:
        f.write(commit)


@pytest.fixture
def offline_hub(small_vae, tmp_path, monkeypatch):
    import huggingface_hub.constants
    cache = str(tmp_path / 'hf_cache')
    build_hub_cache(cache, REPO, small_vae[0], COMMIT)
    build_hub_cache(cache, 'tiny-org/tiny-pipeline', small_vae[0], COMMIT, subfolder='vae')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', cache)
    return cache


def test_file_folder_and_hub_id_resolve_to_the_same_weights_and_config(small_vae, offline_hub, tmp_path):
    folder, _ = small_vae
    want_config = json.load(open(folder / 'config.json'))
    want_bytes = open(folder / 'diffusion_pytorch_model.safetensors', 'rb').read()
    pipeline = tmp_path / 'pipeline'
    shutil.copytree(folder, pipeline / 'vae')
    for spec in (str(folder / 'diffusion_pytorch_model.safetensors'), str(folder), str(pipeline),
                 REPO, f'{REPO}@main', f'{REPO}@{COMMIT}', 'tiny-org/tiny-pipeline/vae'):
        got = weights.resolve_diffusers(spec)
        assert got.config == want_config, spec
        assert open(got.weights_file, 'rb').read() == want_bytes, spec
    assert weights.resolve_diffusers(REPO).weights_file.startswith(offline_hub)


def test_missing_hub_id_or_file_is_a_one_line_error(offline_hub):
    with pytest.raises(weights.WeightsNotFoundError) as e:
        weights.resolve_diffusers('nobody/missing-vae@v2')
    message = str(e.value)
    assert "'nobody/missing-vae@v2'" in message and offline_hub in message and 'HF_HUB_OFFLINE=1' in message
    assert 'hf download nobody/missing-vae --revision v2' in message and '\n' not in message
    with pytest.raises(weights.WeightsNotFoundError, match='weights file not found: weights/vae.safetensors'):
        weights.resolve_diffusers('weights/vae.safetensors')
    with pytest.raises(ValueError, match='autoencoder.weights is empty'):
        weights.resolve_diffusers('')


def test_codec_by_hub_id_builds_the_config_json_architecture_and_equals_diffusers(small_vae, offline_hub):
    import jax
    import ml_collections
    import torch

    from lct_jax.models.autoencoder import make_codec
    _, ref = small_vae
    cfg = ml_collections.ConfigDict(dict(kind='kl', weights=REPO, scale_factor=0.18215))
    codec = make_codec(cfg, image_channels=3)
    assert (codec.downsample, codec.latent_channels) == (2, 4)  # two levels, not the SD VAE's four
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.arange(2))
    z = np.asarray(codec.encode(keys, x))
    noise = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (8, 8, 4)))(keys))
    with torch.no_grad():
        dist = ref.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent_dist
        want = (dist.mean.numpy().transpose(0, 2, 3, 1) + dist.std.numpy().transpose(0, 2, 3, 1) * noise) * 0.18215
        want_images = ref.decode(torch.from_numpy(want.transpose(0, 3, 1, 2) / 0.18215)).sample.numpy()
    np.testing.assert_allclose(z, want, atol=2e-5 * np.abs(want).max())
    images = np.asarray(codec.decode(z / 0.18215)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(images, want_images, atol=1e-4 * np.abs(want_images).max())


def test_mesh_decoder_takes_the_vae_weights_as_inputs_not_constants(small_vae, offline_hub):
    """The decode program on the mesh (evaluation/sharded.py) gets the VAE's weights as replicated
    arguments: folded in as constants, the SD-VAE's 83M weights would be 335 MB inside every
    compiled program. Checked on the lowered program: its parameters include every weight, its
    constants hold none, and it decodes exactly as codec.decode. (Closing over codec.params
    instead makes its biggest constant 294,980 characters long: this test then fails.)"""
    import jax
    import ml_collections

    from lct_jax import parallel
    from lct_jax.evaluation import sharded
    from lct_jax.models.autoencoder import make_codec
    codec = make_codec(ml_collections.ConfigDict(dict(kind='kl', weights=REPO, scale_factor=0.18215)), 3)
    n_weights = sum(np.size(a) for a in jax.tree_util.tree_leaves(codec.params))
    assert n_weights > 100_000
    mesh = parallel.make_mesh()
    z = np.random.default_rng(1).normal(size=(jax.device_count() * 2, 8, 8, 4)).astype(np.float32)
    fn = sharded.per_device(sharded.decode_images(codec, sharded.Unscaled()), mesh)
    weights = parallel.replicate(codec.params, mesh)
    lowered = fn.lower(weights, parallel.shard_host_array(z, mesh))
    args = jax.tree_util.tree_leaves(lowered.args_info)
    assert len(args) == len(jax.tree_util.tree_leaves(codec.params)) + 1
    text = lowered.as_text()
    biggest_constant = max((len(line) for line in text.splitlines() if 'stablehlo.constant' in line), default=0)
    assert biggest_constant < 10_000, 'a weight was folded into the program as a constant'
    got = sharded.host_decoder(codec, mesh)(z)
    np.testing.assert_array_equal(got, sharded.to_uint8(codec.decode(z)))


def test_config_json_the_port_cannot_build_is_named():
    from lct_jax.models.autoencoder import vae_fields_from_config
    with pytest.raises(ValueError) as e:
        vae_fields_from_config({'act_fn': 'gelu', 'shift_factor': 0.0609, 'block_out_channels': [32],
                                'down_block_types': ['AttnDownEncoderBlock2D']}, 'some/vae')
    for field in ("act_fn='gelu'", 'shift_factor=0.0609', 'down_block_types'):
        assert field in str(e.value)


# --- encode by id, through the command line, offline -----------------------------------------------

def _digit_pngs(folder, n=40, size=16):
    from PIL import Image
    from sklearn.datasets import load_digits
    raw = (load_digits().images[:n] * (255.0 / 16.0)).round().astype(np.uint8)
    os.makedirs(folder)
    for i, im in enumerate(raw):
        img = Image.fromarray(im).resize((size, size), Image.BICUBIC).convert('RGB')
        img.save(os.path.join(folder, f'{i:03d}.png'))
    return folder


def _encode(workdir, weights_spec, image_dir, cache):
    from tests import runs
    env = runs.env()
    env.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE=cache)
    cmd = runs.command(workdir, '--mode=encode', '--config.autoencoder.kind=kl',
                       f'--config.autoencoder.weights={weights_spec}', '--config.data.source=image_dir',
                       f'--config.data.image_dir={image_dir}', '--config.data.resolution=16',
                       '--config.data.expected_count=0', '--config.data.examples_per_shard=16',
                       '--config.data.encode_batch_size=8', config='configs/default.py', devices=2)
    return subprocess.run(cmd, cwd=runs.ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_encode_by_hub_id_offline_equals_encode_by_folder_and_a_missing_id_is_one_error_line(
        small_vae, tmp_path):
    cache = str(tmp_path / 'hf_cache')
    build_hub_cache(cache, REPO, small_vae[0], COMMIT)
    images = _digit_pngs(str(tmp_path / 'pngs'))
    by_id = _encode(str(tmp_path / 'by_id'), REPO, images, cache)
    assert by_id.returncode == 0, by_id.stderr[-3000:]
    by_path = _encode(str(tmp_path / 'by_path'), str(small_vae[0]), images, cache)
    assert by_path.returncode == 0, by_path.stderr[-3000:]
    manifests = [json.load(open(tmp_path / w / 'latents' / 'manifest.json')) for w in ('by_id', 'by_path')]
    assert manifests[0] == manifests[1] and manifests[0]['shape'] == [8, 8, 4] and manifests[0]['count'] == 40
    for shard in manifests[0]['shards']:
        assert (open(tmp_path / 'by_id' / 'latents' / shard, 'rb').read()
                == open(tmp_path / 'by_path' / 'latents' / shard, 'rb').read())
    missing = _encode(str(tmp_path / 'missing'), 'nobody/missing-vae', images, cache)
    assert missing.returncode == 2
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith('error: WeightsNotFoundError: autoencoder.weights=') and 'nobody/missing-vae' in last
    assert cache in last and 'HF_HUB_OFFLINE=1' in last


# --- single files by URL: FID Inception, VGG16 --------------------------------------------------------

def _served(tmp_path, stem, content, hash_prefix=None):
    prefix = hash_prefix or hashlib.sha256(content).hexdigest()[:8]
    path = tmp_path / 'server' / f'{stem}-{prefix}.pth'
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def test_url_weights_are_fetched_once_into_torch_hubs_cache_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    good = _served(tmp_path, 'pt_fake', b'weights' * 1000)
    path = weights.resolve_file(good.as_uri(), 'evaluation.inception_weights')
    assert path == str(cache / good.name) and open(path, 'rb').read() == b'weights' * 1000
    good.unlink()  # the second resolve does not download again
    assert weights.resolve_file(good.as_uri(), 'evaluation.inception_weights') == path
    bad = _served(tmp_path, 'pt_bad', b'tampered', hash_prefix='00000000')
    with pytest.raises(ValueError, match='does not start with 00000000'):
        weights.resolve_file(bad.as_uri(), 'evaluation.inception_weights')
    assert sorted(os.listdir(cache)) == [good.name]  # nothing of the corrupt download is kept
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(weights.WeightsNotFoundError) as e:
        weights.inception_weights_file(weights.FID_INCEPTION_URL)
    assert 'pt_inception-2015-12-05-6726825d.pth is not in the cache ' + str(cache) in str(e.value)
    with pytest.raises(weights.WeightsNotFoundError, match='vgg16-397923af.pth is not in the cache'):
        weights.vgg16_weights_file(weights.VGG16_URL)
    with pytest.raises(weights.WeightsNotFoundError, match='weights file not found: /no/such.pth'):
        weights.inception_weights_file('/no/such.pth')


def test_default_urls_are_pytorch_fids_and_torchvisions_and_the_config_uses_them():
    from configs import base
    c = base.get_config()
    assert c.evaluation.inception_weights == weights.FID_INCEPTION_URL
    assert c.evaluation.vgg16_weights == weights.VGG16_URL
    assert c.autoencoder.weights == 'stabilityai/sd-vae-ft-ema'
    pytorch_fid = pytest.importorskip('pytorch_fid.inception')
    torchvision = pytest.importorskip('torchvision.models')
    assert weights.FID_INCEPTION_URL == pytorch_fid.FID_WEIGHTS_URL
    assert weights.VGG16_URL == torchvision.VGG16_Weights.IMAGENET1K_V1.url
