"""Every file we read is untrusted, and nothing we write destroys what is there (issue 26).

No pickle runs code; damaged files are one error naming them; names that become paths cannot
escape; a study report on a fresh clone leaves the committed one byte-identical. The fuzz
harness over every reader is tests/test_fuzz.py.
"""
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from lct_jax.untrusted import UnreadableFileError

pytestmark = pytest.mark.faults
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- no code runs from a file -----------------------------------------------------------------

def test_a_pt_whose_pickle_would_create_a_file_is_refused_and_nothing_is_created(tmp_path):
    pytest.importorskip('torch')
    from lct_jax.modes import run_weights
    from tests.fuzz import corpus, mutate
    marker = tmp_path / 'created_by_the_pickle'
    evil = tmp_path / 'evil.pt'
    evil.write_bytes(mutate.evil_pickle_payload(str(marker)))
    with pytest.raises(UnreadableFileError) as e:
        run_weights.load_params(corpus.smoke_config(), str(tmp_path / 'wd'), str(evil))
    assert not marker.exists()
    first = str(e.value).splitlines()[0]
    assert str(evil) in first and 'posix.mkdir' in first and 'refused' in first
    assert 'weights_only=False' in first and 'safetensors' in first  # how to convert a file one trusts
    from lct_jax.models.convert import (
        load_state_dict,  # the other .pt reader: weights files
    )
    with pytest.raises(UnreadableFileError, match='posix.mkdir'):
        load_state_dict(str(evil))
    assert not marker.exists()


def test_the_authors_checkpoint_layout_still_loads(tmp_path):
    """{'model', 'ema', 'ema_<rate>', 'target', 'opt', 'args': argparse.Namespace, 'epoch', 'train_steps'},
    as the authors' train script saves it, through load_params (--mode=sample --checkpoint=x.pt)."""
    torch = pytest.importorskip('torch')
    from lct_jax.builders import build_model
    from lct_jax.models.convert import unet_params_from_torch
    from lct_jax.modes import run_weights
    from tests.fuzz import corpus
    path = corpus.authors_checkpoint(str(tmp_path / 'authors.pt'))
    with pytest.raises(Exception):  # what made the old loader need weights_only=False: the Namespace
        torch.load(path, weights_only=True)
    config = corpus.smoke_config()
    sd = torch.load(path, weights_only=False)  # the test's own trusted file
    for ema, key in (('params', 'model'), ('ema_0.99', 'ema_0.99')):
        params, desc = run_weights.load_params(config, str(tmp_path / 'wd'), path, ema=ema)
        want = unet_params_from_torch(sd[key], build_model(config))
        assert desc == f'authors.pt:{key}'
        assert len(jax_leaves(params)) == len(jax_leaves(want)) > 10
        for a, b in zip(jax_leaves(params), jax_leaves(want)):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError, match=r"has no 'ema_0.5'.*'args'.*'opt'.*'target'"):
        run_weights.load_params(config, str(tmp_path / 'wd'), path, ema='ema_0.5')


def jax_leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_npz_readers_refuse_pickles_and_headers_that_lie(tmp_path):
    from lct_jax.evaluation import fid
    from tests.fuzz import mutate
    good = tmp_path / 'stats.npz'
    fid.save_stats(str(good), np.zeros(3), np.eye(3))
    evil = tmp_path / 'evil.npz'
    evil.write_bytes(mutate.npz_object_array(b'', None))
    with pytest.raises(UnreadableFileError, match=f'{evil}.*(pickle|object)'):
        fid.load_stats(str(evil))
    # a header declaring 10^11 elements: refused from the sizes, nothing allocated
    huge = tmp_path / 'huge.npz'
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members['mu.npy'] = members['mu.npy'].replace(b"'shape': (3,)", b"'shape': (100000000000,)")
    with zipfile.ZipFile(huge, 'w') as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(UnreadableFileError, match=f'{huge}: member mu.npy declares shape'):
        fid.load_stats(str(huge))
    # an existing statistics file is not replaced by other statistics
    written = fid.save_stats(str(good), np.ones(3), np.eye(3))
    assert written == str(tmp_path / 'stats.new.npz')
    np.testing.assert_array_equal(fid.load_stats(str(good))[0], np.zeros(3))


# --- damaged files: one error naming them -------------------------------------------------------

def test_a_truncated_manifest_is_an_error_naming_it(tmp_path):
    from lct_jax.data.latents import LatentDataset
    from tests.fuzz import corpus
    d = corpus.latent_dir(str(tmp_path / 'lat'))
    manifest = os.path.join(d, 'manifest.json')
    data = open(manifest, 'rb').read()
    open(manifest, 'wb').write(data[:len(data) // 2])
    with pytest.raises(UnreadableFileError, match=f'^{manifest} is not valid JSON'):
        LatentDataset(d)
    m = json.loads(data)
    m['shards'][0] = '../../outside.tfrecord'  # a shard name must not be a path out of the directory
    open(manifest, 'w').write(json.dumps(m))
    with pytest.raises(UnreadableFileError, match='shard name .*path separator'):
        LatentDataset(d)


def test_a_flipped_byte_in_an_orbax_array_file_is_named_not_read_as_other_weights(tmp_path):
    from lct_jax.modes import run_weights
    from lct_jax.train import checkpoints
    from tests.fuzz import corpus, harness
    shutil.copytree(os.path.join(harness.seed_root(), 'orbax', 'wd'), tmp_path / 'wd')  # corpus.orbax_workdir's
    wd = str(tmp_path / 'wd')
    step = os.path.join(wd, 'checkpoints', '1')
    assert os.path.exists(os.path.join(step, checkpoints.SEAL_FILE))
    run_weights.load_params(corpus.smoke_config(), wd)  # intact: reads
    data_dir = os.path.join(step, 'default', 'd')
    victim = os.path.join(data_dir, sorted(os.listdir(data_dir))[0])
    b = bytearray(open(victim, 'rb').read())
    b[len(b) // 2] ^= 0x10
    open(victim, 'wb').write(bytes(b))
    with pytest.raises(checkpoints.CheckpointError, match=f'{step} is damaged: 1 file.*{victim}'):
        run_weights.load_params(corpus.smoke_config(), wd)


def test_images_of_every_mode_decode_and_bombs_are_refused(tmp_path):
    from PIL import Image

    from lct_jax.data.sources import BadImageError, ImageFolderSource, decode_image
    from tests.fuzz import corpus
    folder = corpus.image_folder(str(tmp_path / 'img'))
    src = ImageFolderSource(folder, 8)
    images = src.images(range(len(src)))
    assert images.shape == (len(src), 8, 8, 3) and images.dtype == np.uint8
    # 16-bit: scaled to 8 bits (PIL's own convert('RGB') clips at 255: nearly white)
    sixteen = np.asarray(Image.open(os.path.join(folder, 'd_16bit.png')), np.float64)
    got = decode_image(os.path.join(folder, 'd_16bit.png'), 'd', 12)
    np.testing.assert_allclose(got[..., 0], np.round(sixteen / 257), atol=1)
    assert got.mean() < 200
    bomb = corpus.decompression_bomb(str(tmp_path / 'bomb.png'))
    with pytest.raises(BadImageError, match=f'{bomb}: refused: .*pixels'):
        decode_image(bomb, bomb, 8)
    strip = tmp_path / 'strip.png'
    Image.fromarray(np.zeros((1, 100000), np.uint8)).save(strip)  # no 8 x 800,000 intermediate
    assert decode_image(str(strip), 'strip', 8).shape == (8, 8, 3)
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0' + os.urandom(200))
    with pytest.raises(BadImageError, match=f'{bad}: not a readable image'):
        decode_image(str(bad), str(bad), 8)


# --- names that become paths ----------------------------------------------------------------------

@pytest.mark.parametrize('where, name', [('variant', '../../../escape'), ('variant', 'a/b'),
                                         ('study', '../../../escape'), ('study', 'a/b'), ('variant', '..'),
                                         ('variant', '/abs')])
def test_a_name_with_dotdot_or_a_slash_is_refused_before_anything_is_written(tmp_path, where, name):
    from lct_jax.study.__main__ import main
    from tests.fuzz import corpus
    study = dict(corpus.STUDY)
    if where == 'variant':
        study['variants'] = {name: '', 'sLCT': ''}
    else:
        study['name'] = name
    path = tmp_path / 'study.json'
    path.write_text(json.dumps(study))
    before = sorted(p for p in tmp_path.rglob('*'))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the default work root, workdir/study/<name>, would be below it
    try:
        for action in (['run-one', str(path), '--index', '0'], ['run', str(path), '--workroot', str(tmp_path / 'w')],
                       ['export', str(path), '--to', str(tmp_path / 'x')]):
            assert main(action) == 2
    finally:
        os.chdir(cwd)
    assert sorted(p for p in tmp_path.rglob('*')) == before
    assert not (tmp_path.parent.parent.parent / 'escape').exists()


def test_names_module_accepts_plain_names_only():
    from lct_jax.names import UnsafeNameError, check_component, join_inside
    for ok in ('sLCT', 'no_ot', 'c_rescaled', 'seed_0', 'a.b', 'ε'):
        assert check_component(ok, 'name') == ok
    for bad in ('', '.', '..', 'a/b', '../x', '/abs', 'a\\b', 'a\x00b', '-flag', 'x' * 256, 3, None):
        with pytest.raises(UnsafeNameError):
            check_component(bad, 'name')
    with pytest.raises(UnsafeNameError):
        join_inside('/tmp', '..', what='variant')


# --- nothing we write destroys what is there ---------------------------------------------------------

def test_report_on_a_fresh_clone_leaves_the_committed_report_byte_identical(tmp_path, capsys):
    """`python -m lct_jax.study report docs/study/latent/study_latent.py`, the study file's own command,
    in a checkout with no live runs: the work root defaults to the export beside the study file."""
    from lct_jax.study.__main__ import main
    clone = tmp_path / 'clone'
    for study in ('latent', 'pixel'):  # the latent study file imports the pixel one's variants
        shutil.copytree(os.path.join(ROOT, 'docs', 'study', study), clone / 'docs' / 'study' / study)
    latent = clone / 'docs' / 'study' / 'latent'
    committed = {n: (latent / n).read_bytes() for n in ('results.json', 'results.md')}
    cwd = os.getcwd()
    os.chdir(clone)
    try:
        assert main(['report', 'docs/study/latent/study_latent.py']) == 0
        assert f'work root: {latent}' in capsys.readouterr().out
        assert {n: (latent / n).read_bytes() for n in committed} == committed
        assert not (latent / 'results.new.json').exists()
        # a work root holding fewer finished runs: the committed report is kept, the new one beside it
        assert main(['report', 'docs/study/latent/study_latent.py', '--workroot', str(tmp_path / 'empty')]) == 0
        out = capsys.readouterr().out
        assert 'kept the report' in out and 'holds 36 finished run(s) this one lacks' in out and 'iLCT/seed_0' in out
        assert {n: (latent / n).read_bytes() for n in committed} == committed
        assert json.loads((latent / 'results.new.json').read_text())['runs'] == []
        # ... and replaced only when asked
        assert main(['report', 'docs/study/latent/study_latent.py', '--workroot', str(tmp_path / 'empty'),
                     '--replace']) == 0
        assert json.loads((latent / 'results.json').read_text())['runs'] == []
    finally:
        os.chdir(cwd)
