"""The train step and loop: data-parallel equivalence, one compile, non-finite policy, outputs."""
import glob
import json
import os
import threading

import jax
import numpy as np
import pytest
from PIL import Image

from configs import default
from lct_jax import parallel
from lct_jax.data import latents, tfrecord
from lct_jax.data.pipeline import HostBatch
from lct_jax.train import loop


def smoke_config(**overrides):
    c = default.get_config('smoke')
    with c.unlocked():
        for k, v in overrides.items():
            node = c
            *path, leaf = k.split('.')
            for p in path:
                node = node[p]
            node[leaf] = v
    return c


_PAIRERS = []


@pytest.fixture(autouse=True)
def _close_pairers():
    yield
    while _PAIRERS:
        _PAIRERS.pop().close()


def _step_and_state(config, mesh):
    """(state, run) where run(state, x) pairs x's noise as the loop does (host placement) and steps."""
    _, _, state, step = loop.build_training(config, mesh)
    pairer = loop.make_host_pairer(config, mesh)
    if pairer is not None:
        _PAIRERS.append(pairer)

    def run(state, x):
        x = np.asarray(x)
        return step(state, loop.device_batch(HostBatch.of(x, pairer, int(state.step)), mesh))

    return state, run


def _batch(n=16, seed=0):
    return (0.5 * np.random.default_rng(seed).standard_normal((n, 8, 8, 1))).astype(np.float32)


def test_four_devices_equal_one_device_without_coupling():
    config = smoke_config(**{'coupling.method': 'none'})
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.make_mesh(devices)
        state, step = _step_and_state(config, mesh)
        for k in range(3):
            state, metrics = step(state, _batch(seed=k))
        results.append(jax.device_get(state.params))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *results)


@pytest.mark.parametrize('placement', ['host', 'device'])
def test_compile_for_leaves_the_first_step_nothing_to_compile(placement):
    """What the loop does before the multi-process barrier: after compile_for, the first step
    traces and compiles nothing (else a process could still be compiling at the first collective)."""
    from jax._src import monitoring
    config = smoke_config(**{'coupling.placement': placement})
    mesh = parallel.make_mesh()
    _, _, state, step_fn = loop.build_training(config, mesh)
    pairer = loop.make_host_pairer(config, mesh)
    if pairer is not None:
        _PAIRERS.append(pairer)
    x = _batch()
    batch = loop.device_batch(HostBatch.of(x, pairer, 0), mesh)
    events = []
    monitoring.register_event_duration_secs_listener(
        lambda name, _d, **_kw: events.append(name) if name.startswith('/jax/core/compile/') else None)
    step_fn.compile_for(state, batch)
    assert any('backend_compile' in e for e in events)           # it did compile (and the listener works)
    events.clear()
    state, metrics = step_fn(state, batch)
    assert float(metrics['loss']) > 0 and events == [] and step_fn.trace_count() == 1


def test_non_finite_batch_skips_the_update_and_is_counted():
    config = smoke_config()
    mesh = parallel.make_mesh()
    state, step = _step_and_state(config, mesh)
    bad = _batch()
    bad[3, 2, 2, 0] = np.nan
    before = jax.device_get(state.params)
    state, m = step(state, bad)
    assert int(m['skipped']) == 1 and int(m['skipped_total']) == 1 and int(state.step) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.device_get(state.params))
    state, m = step(state, bad)
    assert int(m['skipped_in_a_row']) == 2
    state, m = step(state, _batch())
    assert int(m['skipped']) == 0 and int(m['skipped_in_a_row']) == 0 and int(m['skipped_total']) == 2
    # the run of 2 is remembered for the loop's check at the next log step
    assert int(m['longest_skip_run']) == 2 and int(state.longest_skip_run) == 2
    assert np.isfinite(float(m['loss']))


def test_smoke_run_leaves_everything_and_compiles_once(tmp_path):
    workdir = str(tmp_path / 'run')
    m = loop.train(smoke_config(), workdir, show_progress=False)
    assert m['final_step'] == 20 and m['trace_count'] == 1
    # the input pipeline's reader and pairing threads stopped with the run
    assert not [t.name for t in threading.enumerate() if t.name.startswith(('lct-input', 'lct-pairing'))]
    assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '20']
    assert glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))
    lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
    assert [l['step'] for l in lines] == [5, 10, 15, 20]
    # the curriculum crossed stages inside one compiled step
    assert len({l['num_scales'] for l in lines}) >= 4
    for key in ('loss', 'ct_loss', 'ct_loss_per_weight', 'diffusion_loss', 'c', 'learning_rate', 'grad_norm',
                'param_norm', 'ot_cost_ratio', 'skipped_total', 'steps_per_sec', 'examples_per_sec'):
        assert all(np.isfinite(l[key]) for l in lines), key
    assert all(l['ot_cost_ratio'] < 1.0 for l in lines)
    for label in ('1step', '2step'):
        grid = os.path.join(workdir, 'samples', f'step_0000020_{label}.png')
        assert min(Image.open(grid).size) >= 512   # 16 digits of 8x8, scaled up to be judged by eye
    _tensorboard_reads(os.path.join(workdir, 'tensorboard'), [l['step'] for l in lines])
    # a second call resumes at the end and does nothing more
    again = loop.train(smoke_config(), workdir, show_progress=False)
    assert again['final_step'] == 20
    # --mode=sample and --mode=evaluate on this run's checkpoint
    from lct_jax.modes import evaluate as evaluate_mode
    from lct_jax.modes import sample as sample_mode
    cfg = smoke_config(**{'sampling.num_samples': 40, 'sampling.batch_size': 16, 'sampling.image_format': 'jpeg'})
    sample_mode.sample(cfg, workdir)
    out = os.path.join(workdir, 'samples', 'step_20_ema_0.99_2step')
    assert len(glob.glob(os.path.join(out, '*.jpg'))) == 40 and os.path.exists(out + '.npz')
    rows = evaluate_mode.evaluate(cfg, workdir)
    assert [r['sampler'] for r in rows] == ['1-step', '2-step'] and all(np.isfinite(r['fid']) for r in rows)
    assert all(0 <= r['recall'] <= 1 for r in rows)
    table = open(os.path.join(workdir, 'results.md')).read()
    assert table.count('| default:smoke | step 20:ema_0.99 |') == 2


def _tensorboard_reads(logdir, steps):
    """TensorBoard itself (the `viz` extra) opens the run's event files: scalars and sample grids."""
    accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    events = accumulator.EventAccumulator(logdir, size_guidance={'scalars': 0, 'images': 0})
    events.Reload()
    tags = events.Tags()
    assert {'loss', 'ct_loss_per_weight', 'num_scales'} <= set(tags['scalars']), tags['scalars']
    assert [e.step for e in events.Scalars('loss')] == steps
    assert any(tag.startswith('samples/') for tag in tags['images']), tags['images']


def _nan_dataset(d, n=32):
    os.makedirs(d)
    with tfrecord.TFRecordWriter(os.path.join(d, latents.shard_name(0, 1))) as w:
        for i in range(n):
            w.write(tfrecord.encode_latent(np.full((8, 8, 1), np.nan, np.float32), i))
    np.savez(os.path.join(d, latents.STATS), mean=np.zeros((8, 8, 1)), std=np.ones((8, 8, 1)))
    json.dump({'count': n, 'shape': [8, 8, 1], 'dtype': 'float32', 'scale_factor': 1.0,
               'shards': [latents.shard_name(0, 1)]}, open(os.path.join(d, latents.MANIFEST), 'w'))


def test_k_non_finite_steps_in_a_row_stop_the_run(tmp_path):
    d = str(tmp_path / 'nan')
    _nan_dataset(d)
    config = smoke_config(**{'data.latent_dir': d, 'data.expected_count': 32, 'train.max_skips_in_a_row': 3})
    # checked at the first log step (step 5 of the smoke config), where 5 >= 3 steps were skipped
    with pytest.raises(loop.NonFiniteError, match=r'5 consecutive steps had a non-finite.*max_skips_in_a_row=3'):
        loop.train(config, str(tmp_path / 'run'), show_progress=False)


def test_dataset_that_does_not_fit_stops_before_compiling(tmp_path):
    d = str(tmp_path / 'nan')
    _nan_dataset(d)
    config = smoke_config(**{'data.latent_dir': d, 'model.in_channels': 4, 'model.out_channels': 4})
    with pytest.raises(ValueError, match=r'(?s)latent shape \[8, 8, 1\].*\[8, 8, 4\].*expected_count=1797'):
        loop.train(config, str(tmp_path / 'run'), show_progress=False)
