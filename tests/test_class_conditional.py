"""Class-conditional latents: labels from the source, stored by the encode, read by the pipeline,
passed to a DiT by the train step (with label dropout), and per-class sampling and grids."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import default, imagenet256
from lct_jax import builders, parallel
from lct_jax.data import latents, sources, tfrecord
from lct_jax.data.encode import encode_dataset
from lct_jax.data.pipeline import HostBatch, InputPipeline, Normalizer, batch_indices
from lct_jax.models.autoencoder import identity_codec
from lct_jax.objectives.base import Batch
from lct_jax.sampling import consistency as consistency_sampling
from lct_jax.sampling import spec as sampler_spec
from lct_jax.train import loop
from tests import runs


def _write_images(root, layout):
    rng = np.random.default_rng(0)
    for rel in layout:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)


def test_image_folder_labels_come_from_class_subfolders(tmp_path):
    _write_images(tmp_path / 'cls', ['dog/b.png', 'cat/a.png', 'cat/sub/c.png', 'emu/d.jpg'])
    src = sources.ImageFolderSource(str(tmp_path / 'cls'), 8, labels=True)
    assert src.classes == ('cat', 'dog', 'emu')            # sorted, as torchvision's ImageFolder
    assert [os.path.relpath(p, tmp_path / 'cls') for p in src.paths] == \
        ['cat/a.png', 'cat/sub/c.png', 'dog/b.png', 'emu/d.jpg']
    assert src.labels(range(4)) == [0, 0, 1, 2]
    assert sources.Flipped(src).labels([4, 6]) == [0, 1]    # a mirror keeps its label
    assert sources.ImageFolderSource(str(tmp_path / 'cls'), 8).classes == ()   # labels are opt-in
    _write_images(tmp_path / 'flat', ['a.png', 'dog/b.png'])  # an image at the top: no labels
    with pytest.raises(ValueError, match='a.png is not inside a class subfolder'):
        sources.ImageFolderSource(str(tmp_path / 'flat'), 8, labels=True)
    flat = sources.ImageFolderSource(str(tmp_path / 'flat'), 8)
    assert flat.classes == () and flat.labels([0, 1]) == [None, None]


def test_records_with_and_without_labels():
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    assert tfrecord.decode_labeled_latent(tfrecord.encode_latent(x, 5, 7))[1:] == (5, 7)
    assert tfrecord.decode_labeled_latent(tfrecord.encode_latent(x, 5, 0))[1:] == (5, 0)
    latent, index, label = tfrecord.decode_labeled_latent(tfrecord.encode_latent(x, 5))
    assert label is None and index == 5 and np.array_equal(latent, x)
    assert tfrecord.decode_latent(tfrecord.encode_latent(x, 5, 3))[1] == 5


def test_encode_stores_the_labels_and_the_pipeline_yields_them(tmp_path):
    from sklearn.datasets import load_digits
    d = str(tmp_path / 'lat')
    manifest = encode_dataset(sources.DigitsSource(8, labels=True), identity_codec(1), d, batch_size=256,
                              examples_per_shard=700, show_progress=False)
    assert manifest['num_classes'] == 10 and manifest['classes'] == [str(i) for i in range(10)]
    ds = latents.LatentDataset(d)
    want = load_digits().target
    idx = np.array([0, 1, 699, 700, 1796])
    x, y = ds.read_labeled_batch(idx)
    assert y.dtype == np.int32 and np.array_equal(y, want[idx]) and x.shape == (5, 8, 8, 1)
    normalizer = Normalizer.from_dir(d, mode='scalar')
    pipe = InputPipeline(ds, normalizer, 16, seed=0, rows=slice(0, 16), labels=True)
    try:
        xb, _, _, yb = next(pipe)
        np.testing.assert_array_equal(yb, want[batch_indices(0, 16, len(ds), 0)])
        assert xb.shape == (16, 8, 8, 1)
    finally:
        pipe.close()
    # a dataset encoded without labels cannot feed a class-conditional model
    _write_images(tmp_path / 'flat', ['a.png', 'b.png'])
    plain = str(tmp_path / 'plain')
    encode_dataset(sources.ImageFolderSource(str(tmp_path / 'flat'), 8), identity_codec(3), plain,
                   show_progress=False)
    assert latents.LatentDataset(plain).num_classes == 0
    with pytest.raises(ValueError, match='no class label'):
        latents.LatentDataset(plain).read_labeled_batch([0])
    config = default.get_config('dit_cond')
    with config.unlocked():
        config.data.expected_count = 0
        config.batch_size = 2
        config.model.in_channels = config.model.out_channels = 3
    with pytest.raises(ValueError, match='holds no class labels'):
        builders.check_dataset(config, latents.read_manifest(plain), plain)


def test_labels_reach_the_network_in_the_step_with_dropout():
    """The same batch and noise with other labels gives another loss; the unconditional model's step
    keeps its four arguments; label dropout uses the objective's dropout key."""
    mesh = parallel.make_mesh()
    config = default.get_config('dit_cond,smoke')
    with config.unlocked():
        config.coupling.method = 'none'
        config.model.dit.update(hidden_size=32, depth=1, num_heads=2)
    _, _, state, step = loop.build_training(config, mesh)
    assert builders.num_classes_of(config) == 10
    rng = np.random.default_rng(0)
    x = (0.5 * rng.standard_normal((16, 8, 8, 1))).astype(np.float32)
    z = rng.standard_normal((16, 8, 8, 1)).astype(np.float32)
    ratio = np.ones((16,), np.float32)
    # fresh adaLN-Zero weights ignore the conditioning: perturb every weight so they do not
    noisy = jax.tree_util.tree_map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape, p.dtype),
                                   state.params)
    state = state.replace(params=jax.device_put(noisy, jax.tree_util.tree_map(lambda a: a.sharding, state.params)))
    state_copy = jax.tree_util.tree_map(jnp.copy, state)
    _, m1 = step(state, loop.device_batch(HostBatch(x, z, ratio, np.arange(16, dtype=np.int32) % 10), mesh))
    _, m2 = step(state_copy, loop.device_batch(HostBatch(x, z, ratio, np.full(16, 3, np.int32)), mesh))
    assert float(m1['loss']) != float(m2['loss'])
    assert step.trace_count() == 1
    lowered = step.lower(jax.eval_shape(lambda: state_copy), Batch(
        jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=parallel.batch_sharding(mesh)), None, None,
        jax.ShapeDtypeStruct((16,), jnp.int32, sharding=parallel.batch_sharding(mesh))))
    assert 'update' in lowered


def test_samplers_draw_per_class():
    assert np.array_equal(sampler_spec.class_indices(3, 4, 10), [3, 13, 23, 33])
    assert np.array_equal(np.asarray(sampler_spec.class_of(np.arange(12), 10)), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    from lct_jax.models.dit import DiT
    model = DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))['params']
    # give the label table and adaLN weight so the class matters
    params = jax.tree_util.tree_map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)
    from lct_jax.objectives.slct import SLCT as Objective
    obj = Objective(total_steps=10)
    conditional = consistency_sampling.make_sampler(model.apply, obj, (8, 8, 1), (80.0,), seed=0, num_classes=10)
    unconditional = consistency_sampling.make_sampler(model.apply, obj, (8, 8, 1), (80.0,), seed=0)
    idx = jnp.arange(20)
    a, b = np.asarray(conditional(params, idx)), np.asarray(unconditional(params, idx))
    assert np.abs(a - b).max() > 1e-4          # labels given: not the null class
    # sample i of class i % 10, whatever batch it is drawn in
    np.testing.assert_allclose(np.asarray(conditional(params, jnp.asarray(sampler_spec.class_indices(3, 2, 10)))),
                               a[[3, 13]], rtol=1e-5, atol=1e-6)


def test_imagenet_config_is_the_post_paper_dit_recipe():
    c = imagenet256.get_config()
    model = builders.build_model(c)
    assert (model.hidden_size, model.depth, model.patch_size, model.num_classes) == (768, 12, 2, 1000)
    assert (c.consistency.start_scales, c.consistency.end_scales, c.consistency.p_mean, c.consistency.p_std) == \
        (8, 512, -0.8, 1.5)
    assert c.data.source == 'tfds' and c.data.tfds_name == 'imagenet2012' and c.total_steps == (1_281_167 // 128) * 560
    assert c.evaluation.paper_fid_1step == 0.0      # 16.75 is the later readme's, not a paper number
    smoke = imagenet256.get_config('smoke')
    assert builders.build_model(smoke).input_size == 8 and builders.num_classes_of(smoke) == 1000
    with pytest.raises(ValueError, match='post-paper'):
        imagenet256.get_config('ilct')


@pytest.mark.slow   # a training subprocess plus sampling: minutes on this CPU
def test_a_class_conditional_digits_run_draws_grids_per_class(tmp_path):
    """main trains configs/default.py:dit_cond,smoke on the digits' 10 classes, with grids per class;
    --mode=sample writes per-class grids too."""
    from lct_jax.modes import sample as sample_mode
    w = str(tmp_path / 'cond')
    runs.run(runs.command(w, config='configs/default.py:dit_cond,smoke', devices=2), str(tmp_path / 'train.log'))
    log = open(tmp_path / 'train.log').read()
    assert 'done: step 20' in log and 'compiled train step 1 time(s)' in log
    assert json.load(open(os.path.join(w, 'latents', 'manifest.json')))['num_classes'] == 10
    for label in ('1step', '2step'):
        grids = sorted(glob.glob(os.path.join(w, 'samples', f'step_0000020_{label}_class*.png')))
        assert len(grids) == 10, grids
    config = default.get_config('dit_cond,smoke')
    with config.unlocked():
        config.sampling.update(num_samples=20, batch_size=20)
    sample_mode.sample(config, w)
    assert len(glob.glob(os.path.join(w, 'samples', '*_2step_class*_grid.png'))) == 10
