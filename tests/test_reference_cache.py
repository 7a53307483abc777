"""lct_jax/evaluation/reference_cache.py and the digits MLP's weights cache: a cache hit gives exactly
what computing gives, and anything the features depend on changes the key."""
import os

import numpy as np
import pytest

from lct_jax.evaluation import reference_cache


def _compute_counter():
    calls = []

    def compute():
        calls.append(1)
        return {'fid': np.arange(12.0).reshape(3, 4), 'pr': np.ones((2, 4))}
    return compute, calls


def test_a_hit_returns_what_was_computed_and_a_corrupt_file_is_recomputed(tmp_path):
    compute, calls = _compute_counter()
    parts = {'latents': {'manifest_sha256': 'a'}, 'features': {'fid': {'kind': 'digits_mlp'}}}
    first, how = reference_cache.cached_features(parts, compute, root=str(tmp_path))
    assert how == 'miss' and len(calls) == 1
    again, how = reference_cache.cached_features(parts, compute, root=str(tmp_path))
    assert how == 'hit' and len(calls) == 1
    assert set(again) == {'fid', 'pr'} and all(np.array_equal(first[k], again[k]) for k in first)
    # another key (any part changed) is computed, not served from the first one's file
    _, how = reference_cache.cached_features({**parts, 'limits': {'pr': 10}}, compute, root=str(tmp_path))
    assert how == 'miss' and len(calls) == 2
    # a truncated file (a full disk, a partial copy) is recomputed and rewritten
    path = os.path.join(tmp_path, 'reference_features', reference_cache.cache_key(parts) + '.npz')
    with open(path, 'r+b') as f:
        f.truncate(20)
    _, how = reference_cache.cached_features(parts, compute, root=str(tmp_path))
    assert how == 'miss' and len(calls) == 3
    assert reference_cache.cached_features(parts, compute, root=str(tmp_path))[1] == 'hit'


def test_an_unwritable_cache_costs_time_not_the_evaluation(tmp_path, capsys):
    blocker = tmp_path / 'not_a_dir'
    blocker.write_text('')  # the cache root is a file: makedirs fails
    compute, calls = _compute_counter()
    out, how = reference_cache.cached_features({'x': 1}, compute, root=str(blocker))
    assert how == 'miss' and len(calls) == 1 and out['fid'].shape == (3, 4)
    assert 'not cached' in capsys.readouterr().out


def test_the_latent_dir_fingerprint_follows_a_re_encode(tmp_path):
    import json
    fields = {'shape': [8, 8, 1], 'dtype': 'float32', 'scale_factor': 1.0}  # a manifest is checked when read
    (tmp_path / 'manifest.json').write_text(json.dumps({'shards': ['s0'], 'count': 2, **fields}))
    (tmp_path / 's0').write_bytes(b'12345')
    before = reference_cache.latent_dir_fingerprint(str(tmp_path))
    assert reference_cache.latent_dir_fingerprint(str(tmp_path)) == before
    (tmp_path / 's0').write_bytes(b'123456')  # a shard rewritten
    assert reference_cache.latent_dir_fingerprint(str(tmp_path)) != before
    shard = reference_cache.latent_dir_fingerprint(str(tmp_path))
    (tmp_path / 'manifest.json').write_text(json.dumps({'shards': ['s0'], 'count': 3, **fields}))
    assert reference_cache.latent_dir_fingerprint(str(tmp_path)) != shard


def test_the_cached_digits_mlp_equals_a_freshly_trained_one(tmp_path, monkeypatch):
    from lct_jax.evaluation import features
    monkeypatch.setenv('LCT_JAX_CACHE', str(tmp_path))
    features._digits_mlp.cache_clear()
    try:
        fresh = features.digits_mlp_features(8)            # trains, writes the cache
        assert len(os.listdir(tmp_path / 'digits_mlp')) == 1
        features._digits_mlp.cache_clear()
        cached = features.digits_mlp_features(8)           # reads it, no training
    finally:
        features._digits_mlp.cache_clear()
    images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    assert np.array_equal(fresh(images), cached(images)) and fresh(images).any()
    assert cached.fingerprint == fresh.fingerprint and cached.fingerprint['kind'] == 'digits_mlp'


def test_with_the_cache_off_the_reference_is_computed_and_nothing_is_written(tmp_path, monkeypatch):
    from configs import default
    from lct_jax.evaluation import reference as reference_mod
    monkeypatch.setenv('LCT_JAX_CACHE', str(tmp_path))
    calls = []
    monkeypatch.setattr(reference_mod, 'reference_feature_sets', lambda *a, **k: calls.append(1) or {'fid': np.ones((2, 3))})
    c = default.get_config('smoke')
    c.unlock()
    c.evaluation.reference_cache = False
    for _ in range(2):
        assert reference_mod.reference_features(c, str(tmp_path), {'fid': lambda x: x}, {'fid': None})['fid'].shape == (2, 3)
    assert len(calls) == 2 and os.listdir(tmp_path) == []


def test_evaluation_serves_the_reference_from_the_cache_with_equal_distances(tmp_path, monkeypatch, capsys):
    """Two evaluations of one checkpoint: the first computes the reference features, the second reads
    them, and every row is identical."""
    from configs import default
    from lct_jax.builders import build_model
    from lct_jax.modes import encode as encode_mode
    from lct_jax.modes import evaluate as evaluate_mode
    from tests.random_params import perturbed_params
    monkeypatch.setenv('LCT_JAX_CACHE', str(tmp_path / 'cache'))
    c = default.get_config('smoke')
    c.unlock()
    c.data.latent_dir = str(tmp_path / 'latents')
    c.sampling.num_samples = 64
    encode_mode.encode(c, str(tmp_path))
    m = c.model
    params = perturbed_params(build_model(c), (1, m.img_resolution, m.img_resolution, m.in_channels))
    monkeypatch.setattr(evaluate_mode, 'load_params', lambda config, workdir, checkpoint='': (params, 'random'))
    first = evaluate_mode.evaluate(c, str(tmp_path))
    second = evaluate_mode.evaluate(c, str(tmp_path))
    out = capsys.readouterr().out
    assert 'computed and cached in' in out and 'read from the cache in' in out
    assert '1,797 images x 64 features (fid)' in out   # the whole training set, the digits MLP's 64-d
    assert 'ours beside the paper\'s: ' + os.path.join(str(tmp_path.parent), 'comparison_digits.md') in out
    assert [r['fid'] for r in first] == [r['fid'] for r in second]
    assert len(os.listdir(tmp_path / 'cache' / 'reference_features')) == 2  # the features + their key's parts


def test_the_compilation_cache_flag_picks_the_directory_or_turns_it_off(tmp_path, monkeypatch):
    """main.py's --compilation_cache_dir: a given directory; by default $JAX_COMPILATION_CACHE_DIR,
    else <lct_jax cache>/xla; '' turns JAX's persistent cache off even when the environment names one."""
    import jax

    from lct_jax import main
    saved = jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache
    try:
        assert main.set_compilation_cache(str(tmp_path / 'given')) == str(tmp_path / 'given')
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'given')
        monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'env'))
        assert main.set_compilation_cache(None) == str(tmp_path / 'env')
        monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
        monkeypatch.setenv('LCT_JAX_CACHE', str(tmp_path / 'lct'))
        assert main.set_compilation_cache(None) == str(tmp_path / 'lct' / 'xla')
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'lct' / 'xla')
        assert main.set_compilation_cache('') == '' and not jax.config.jax_enable_compilation_cache
    finally:
        jax.config.update('jax_compilation_cache_dir', saved[0])
        jax.config.update('jax_enable_compilation_cache', saved[1])


def _digits_config(**changes):
    from configs import default
    c = default.get_config('smoke')
    c.unlock()
    for k, v in changes.items():
        section, key = k.split('.')
        c[section][key] = v
    return c


DIGITS_FP = {'kind': 'digits_mlp', 'resolution': 8, 'compute': 'jax-float32', 'weights_sha256': 'ab' * 32}
INCEPTION_FP = {'kind': 'inception', 'sha256': 'cd' * 32}


def test_a_statistics_file_from_another_network_or_resolution_is_refused(tmp_path):
    from lct_jax.evaluation import stats_file
    mu, sigma = np.arange(64.0), np.eye(64)
    path = str(tmp_path / 'digits.npz')
    stats_file.save(path, mu, sigma, stats_file.provenance('digits', 'train', 8, 1797, DIGITS_FP))
    with np.load(path) as f:                       # pytorch-fid still reads it: mu and sigma
        assert np.array_equal(f['mu'], mu) and set(f.files) == {'mu', 'sigma', 'provenance'}
    said = []
    got, _ = stats_file.load_checked(path, _digits_config(), DIGITS_FP, say=said.append)
    assert np.array_equal(got, mu) and '1,797 images of digits:train at 8px' in said[0]
    with pytest.raises(stats_file.StatisticsMismatchError, match=r'resolution: the file has 8, the evaluation 16'):
        stats_file.load_checked(path, _digits_config(**{'data.resolution': 16}), DIGITS_FP)
    with pytest.raises(stats_file.StatisticsMismatchError, match=r"features.kind: the file has 'digits_mlp', "
                                                                r"the evaluation 'inception'"):
        stats_file.load_checked(path, _digits_config(), INCEPTION_FP)
    other_weights = {**DIGITS_FP, 'weights_sha256': 'ef' * 32}
    with pytest.raises(stats_file.StatisticsMismatchError, match='features.weights_sha256'):
        stats_file.load_checked(path, _digits_config(), other_weights)
    with pytest.raises(stats_file.StatisticsMismatchError, match="dataset: the file has 'digits'"):
        stats_file.load_checked(path, _digits_config(**{'evaluation.dataset': 'celebahq256'}), DIGITS_FP)
    # pytorch-fid's file (no provenance) is Inception pool3: refused for other features
    plain = str(tmp_path / 'plain.npz')
    np.savez(plain, mu=mu, sigma=sigma)
    with pytest.raises(stats_file.StatisticsMismatchError, match="pytorch-fid's statistics .64-d, no provenance"):
        stats_file.load_checked(plain, _digits_config(), DIGITS_FP)


def test_an_adm_reference_batch_is_read_without_its_images(tmp_path, monkeypatch):
    """openai/guided-diffusion's VIRTUAL_imagenet256_labeled.npz layout: arr_0 images, mu, sigma, mu_s, sigma_s."""
    from lct_jax import untrusted
    from lct_jax.evaluation import stats_file
    rng = np.random.default_rng(0)
    mu, a = rng.standard_normal(2048), rng.standard_normal((2048, 2048)) * 0.01
    sigma = a @ a.T
    path = str(tmp_path / 'VIRTUAL_imagenet256_labeled.npz')
    np.savez(path, arr_0=np.zeros((10, 16, 16, 3), np.uint8), mu=mu, sigma=sigma,
             mu_s=np.zeros(2023), sigma_s=np.eye(3))
    read_members = []
    load = untrusted.load_npz
    monkeypatch.setattr(stats_file, 'load_npz', lambda *a, **k: read_members.append(k.get('only')) or load(*a, **k))
    got_mu, got_sigma, prov, kind = stats_file.read(path)
    assert kind == 'adm' and prov is None and 'arr_0' not in read_members[0]
    said = []
    m, s = stats_file.load_checked(path, _digits_config(**{'evaluation.features': 'inception'}), INCEPTION_FP,
                                   say=said.append)
    assert np.array_equal(m, mu) and np.array_equal(s, sigma) and "ADM's reference batch" in said[0]
    with pytest.raises(stats_file.StatisticsMismatchError, match="this evaluation's features are 'digits_mlp'"):
        stats_file.load_checked(path, _digits_config(), DIGITS_FP)
