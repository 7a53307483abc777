"""The trust boundary (docs/untrusted_files.md): a run, checkpoint, study file or config.json from
someone else is data, confined and checked in one place. One test per class of failure, each
example of issue 30 among them, on copies of a real run and a real exported study
(tests/fuzz/hostile.py builds them once); then the hostile-work-directory fuzz at a small count."""
import json
import math
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lct_jax import main as entry
from lct_jax import parallel
from lct_jax.names import UnsafeNameError
from lct_jax.study import __main__ as study_cli
from lct_jax.study.spec import StudyFileError, load_study
from lct_jax.workdir.lock import WorkdirLock, WorkdirLockedError
from tests.fuzz import hostile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def case(tmp_path):
    """A fresh copy of the seed: <case>/work (the study's root, with the trained run),
    <case>/export (the exported study), <case>/study.json, <case>/user (the user's own files)."""
    dst = tmp_path / 'case'
    shutil.copytree(hostile.seed_root(), dst, symlinks=True)
    return dst


def smoke(**changes):
    import configs.default as default
    config = default.get_config('smoke')
    config.unlock()
    for flag in hostile.STUDY['overrides'] + ['--config.seed=0']:
        key, value = flag[len('--config.'):].split('=')
        node = config
        for part in key.split('.')[:-1]:
            node = node[part]
        node[key.split('.')[-1]] = type(node[key.split('.')[-1]])(value)
    for key, value in changes.items():
        node = config
        for part in key.split('.')[:-1]:
            node = node[part]
        node[key.split('.')[-1]] = value
    config.lock()
    return config


def edit_json(path, change):
    value = json.load(open(path))
    change(value)
    json.dump(value, open(path, 'w'))


def main(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'lct_jax.main', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# --- paths from data stay inside their root -----------------------------------------------------------

def test_a_hostile_ema_name_in_the_record_is_refused_before_anything_is_written(case):
    """Issue 30's first example: sampling.ema = 'x/../../../../tmp/ESCAPED' in the run's config.json."""
    run = case / hostile.RUN
    target = case / 'user' / 'ESCAPED'
    edit_json(run / 'config.json', lambda c: c['sampling'].update(ema='x/../../../user/ESCAPED'))
    before = hostile.tree_state(str(case))
    with pytest.raises(ValueError, match='sampling.ema'):
        entry.run(smoke(), str(run), 'sample', '', False, {'sampling.num_samples': 8}, 120.0)
    assert hostile.tree_state(str(case)) == before and not target.exists()
    from lct_jax.modes.run_weights import load_params   # and the name is refused where it becomes a path
    with pytest.raises(UnsafeNameError, match='path separator'):
        load_params(smoke(), str(run), ema='x/../../../user/ESCAPED')


def test_a_recorded_comparison_dir_never_widens_where_evaluate_writes(case):
    """Issue 30's second example: evaluation.comparison_dir in config.json names the user's folder,
    where their notes file has our table's name. The recorded path is not honoured; given on the
    command line it is, and the notes (no table tag) are still kept: the table goes beside them."""
    run, user = case / hostile.RUN, case / 'user'
    notes = (user / 'comparison_digits.md').read_text()
    edit_json(run / 'config.json', lambda c: c['evaluation'].update(comparison_dir=str(user)))
    small = {'sampling.num_samples': 16, 'evaluation.pr_max_real': 64}
    entry.run(smoke(**small), str(run), 'evaluate', '', False, small, 120.0)
    assert sorted(os.listdir(user)) == ['comparison_digits.md', 'folder', 'results.json']
    assert (run.parent / 'comparison_digits.md').exists()                  # the default: the run's parent
    flags = dict(small, **{'evaluation.comparison_dir': str(user)})
    entry.run(smoke(**flags), str(run), 'evaluate', '', False, flags, 120.0)
    assert (user / 'comparison_digits.md').read_text() == notes
    assert (user / 'comparison_digits.new.md').read_text().startswith('<!-- lct_jax.comparison/1')


def test_symlinks_in_a_received_run_are_never_written_through(case):
    run, user = case / hostile.RUN, case / 'user'
    (run / 'results.json').unlink()
    (run / 'results.json').symlink_to(user / 'results.json')
    (run / 'results.md').unlink()
    (run / 'results.md').symlink_to(user / 'comparison_digits.md')
    before = hostile.tree_state(str(user))
    small = {'sampling.num_samples': 16, 'evaluation.pr_max_real': 64}
    entry.run(smoke(**small), str(run), 'evaluate', '', False, small, 120.0)
    assert hostile.tree_state(str(user)) == before
    rows = json.load(open(run / 'results.new.json'))                    # written beside, and said
    assert [r['sampler'] for r in rows] == ['1-step', '2-step'] and (run / 'results.new.md').exists()
    shutil.rmtree(run / 'samples')
    (run / 'samples').symlink_to(user / 'folder')
    with pytest.raises(UnsafeNameError, match='outside'):
        entry.run(smoke(**small), str(run), 'sample', '', False, small, 120.0)
    assert hostile.tree_state(str(user)) == before


# --- study files are data ------------------------------------------------------------------------------

def test_a_json_study_cannot_run_commands_or_move_a_run(case):
    """Issue 30's third example: a JSON study whose prepare runs `sh -c ...` and whose overrides hold
    --workdir=<elsewhere>."""
    study = json.load(open(case / 'study.json'))
    marker = case / 'user' / 'RAN'
    for change, message in (
            (dict(prepare=[['sh', '-c', f'touch {marker}']]), 'prepare'),
            (dict(overrides=study['overrides'] + [f'--workdir={case / "user"}']), '--workdir'),
            (dict(overrides=study['overrides'] + ['--workroot=/tmp']), '--workroot'),
            (dict(overrides=study['overrides'] + [f'--config.evaluation.comparison_dir={case / "user"}']), 'path'),
            (dict(eval_overrides=['--checkpoint=/etc']), '--checkpoint'),
            (dict(variants={'sLCT': {'config': '', 'overrides': [f'--config.data.latent_dir={case}/user']}}), 'path'),
            (dict(overrides=['--config.data.tail_power={root}']), 'path')):
        path = case / 'evil.json'
        json.dump(dict(study, **change), open(path, 'w'))
        with pytest.raises(StudyFileError, match=message):
            load_study(str(path))
        assert study_cli.main(['run-one', str(path), '--workroot', str(case / 'export'), '--index=0']) == 2
    assert not marker.exists() and sorted(os.listdir(case / 'user')) == ['comparison_digits.md', 'folder',
                                                                        'results.json']


def test_a_run_directory_that_is_a_symlink_out_of_the_root_is_refused(case):
    """Issue 30's fourth example: <workroot>/runs/sLCT as a symlink to a folder outside."""
    shutil.rmtree(case / 'export' / 'runs' / 'sLCT')
    (case / 'export' / 'runs' / 'sLCT').symlink_to(case / 'user' / 'folder')
    before = hostile.tree_state(str(case / 'user'))
    for action in (['run-one', '--variant=sLCT', '--seed=0'], ['status'], ['report', '--out', str(case / 'out')]):
        assert study_cli.main([action[0], str(case / 'study.json'), '--workroot', str(case / 'export'),
                               *action[1:]]) == 2, action
    assert hostile.tree_state(str(case / 'user')) == before


# --- locks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('heartbeat', ['NaN', 'Infinity', '-Infinity', '1e300', '"soon"', 'null', '[]'])
def test_a_lock_with_a_heartbeat_that_is_no_time_never_holds_the_directory(tmp_path, heartbeat):
    """Issue 30's fifth example: "heartbeat": NaN locked the directory forever (NaN compared false
    with every limit). A live job always writes a finite time, so such a lock is taken over."""
    path = tmp_path / 'lock.json'
    path.write_text('{"host": "elsewhere", "pid": 1, "heartbeat": %s, "token": "x"}' % heartbeat)
    said = []
    WorkdirLock(str(tmp_path), stale_after_s=120.0, log=said.append).acquire().release()
    assert 'taking over the lock' in said[0] and not path.exists()


def test_a_live_lock_says_how_to_clear_it_and_lock_stale_seconds_0_takes_it(tmp_path):
    path = tmp_path / 'lock.json'
    path.write_text('{"host": "elsewhere", "pid": 1, "heartbeat": %r, "token": "x"}' % time.time())
    with pytest.raises(WorkdirLockedError, match=f'delete {path} or pass --lock_stale_seconds=0'):
        WorkdirLock(str(tmp_path), stale_after_s=120.0, log=lambda m: None).acquire()
    time.sleep(0.01)
    WorkdirLock(str(tmp_path), stale_after_s=0.0, log=lambda m: None).acquire().release()


# --- config values --------------------------------------------------------------------------------------

@pytest.mark.parametrize('flag,key', [
    ('--config.optimizer.lr=nan', 'optimizer.lr'), ('--config.batch_size=0', 'batch_size'),
    ('--config.total_steps=-1', 'total_steps'), ('--config.sampling.num_samples=0', 'sampling.num_samples'),
    ('--config.ema_decays=(1.5,)', 'ema_decays'), ('--config.data.tail_power=9.0', 'data.tail_power'),
    ('--config.batch_size=10', 'batch_size=10 must be divisible by the 4 devices')])
def test_a_value_out_of_range_is_one_line_and_nothing_is_written(tmp_path, flag, key):
    """Issue 30's sixth and seventh examples (lr = nan trained to the end with NaN weights; batch
    size 0 was a traceback after config.json, blocking the corrected relaunch)."""
    workdir = tmp_path / 'never'
    out = main('--config=configs/default.py:smoke', f'--workdir={workdir}', '--num_cpu_devices=4', flag)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and key in lines[0] and 'Traceback' not in out.stderr, out.stderr
    assert not workdir.exists()   # nothing to block the corrected relaunch


def test_every_rule_of_the_table_refuses_a_wrong_type_and_accepts_the_defaults():
    from configs import celebahq256, default, digits_latent
    from lct_jax import config_checks
    for config in (default.get_config(), celebahq256.get_config(), digits_latent.get_config('ldm'),
                   default.get_config('meanflow'), celebahq256.get_config('ilct')):
        config_checks.check(config)
    for rule in config_checks.RULES:
        for wrong in (float('nan'), 'text', None, -10 ** 9):
            if rule.ok(wrong):   # a rule may accept one of these (a string for a name, a negative p_mean)
                assert wrong in ('text', -10 ** 9) or rule.allowed.startswith('a finite'), (rule.key, wrong)


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / 'file'
    path.write_text('mine')
    out = main('--config=configs/default.py:smoke', f'--workdir={path}')
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and 'is a file' in out.stderr
    assert path.read_text() == 'mine'


# --- the numerical guard at the update --------------------------------------------------------------------

def test_an_update_that_would_write_a_non_finite_weight_is_skipped_and_never_checkpointed(tmp_path):
    """A finite loss and gradient, and a learning rate that takes the weights past float32's range:
    the step keeps the old weights (skipped), the run stops after max_skips_in_a_row with one error,
    and no checkpoint holds a non-finite number."""
    from lct_jax.train import checkpoints, loop
    config = smoke(**{'optimizer.lr': 1e38, 'train.max_skips_in_a_row': 3, 'total_steps': 8,
                      'evaluation.every': 0, 'log_every': 2, 'checkpoint_every': 2})
    mesh = parallel.make_mesh()
    _, _, state, step = loop.build_training(config, mesh)
    pairer = loop.make_host_pairer(config, mesh)
    from lct_jax.data.pipeline import HostBatch
    x = (0.5 * np.random.default_rng(0).standard_normal((16, 8, 8, 1))).astype(np.float32)
    before = jax.device_get(state.params)
    state, metrics = step(state, loop.device_batch(HostBatch.of(x, pairer, 0), mesh))
    pairer.close()
    assert math.isfinite(float(metrics['loss'])) and math.isfinite(float(metrics['grad_norm']))
    assert int(metrics['skipped']) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.device_get(state.params))
    with pytest.raises(loop.NonFiniteError, match='consecutive steps had a non-finite'):
        loop.train(config, str(tmp_path), show_progress=False)
    for step_dir in os.listdir(tmp_path / 'checkpoints'):
        tree = checkpoints.load_numpy(str(tmp_path / 'checkpoints' / step_dir))
        assert all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves((tree['params'], tree['ema'])))
    # and a non-finite state handed to the saver is refused, naming the step
    manager = checkpoints.make_manager(str(tmp_path / 'other'), async_save=False)
    bad = jax.tree_util.tree_map(lambda a: a * jnp.nan if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    with pytest.raises(checkpoints.NonFiniteCheckpointError, match='step 5'):
        checkpoints.save(manager, 5, bad)
    checkpoints.close(manager)


# --- errors name the file ------------------------------------------------------------------------------------

def test_a_pytorch_file_without_pytorch_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    from lct_jax import untrusted
    path = tmp_path / 'authors.pt'
    path.write_bytes(b'PK\x03\x04 not really')
    monkeypatch.setitem(sys.modules, 'torch', None)     # `import torch` raises ImportError
    with pytest.raises(untrusted.MissingDependencyError, match=f'{path}.*needs PyTorch.*pip install torch'):
        untrusted.torch_load(str(path), "an authors' checkpoint")


# --- the hostile-work-directory fuzz, small ------------------------------------------------------------------

FUZZ_CASES = 8   # every command once (the plan is round robin); the long run: python -m tests.fuzz.run_hostile


def test_hostile_work_directories_write_nothing_outside_and_raise_no_traceback(tmp_path):
    results = hostile.run_cases(hostile.plan(FUZZ_CASES, seed=3), str(tmp_path / 'cases'))
    bad = [r for r in results if hostile.bad(r)]
    assert not bad, json.dumps(bad, indent=1)[:4000]
    assert {r['command'] for r in results} == set(hostile.COMMANDS)


def test_the_docs_print_the_config_table_as_the_code_holds_it():
    from lct_jax import config_checks
    assert config_checks.table_markdown() in open(os.path.join(ROOT, 'docs', 'untrusted_files.md')).read()


@pytest.mark.parametrize('field,value', [('sampler', {}), ('nfe', 'two'), ('fid', [1]), ('run', 3), ('step', 1.5),
                                         ('nfe', True)])
def test_evaluation_rows_with_a_field_of_the_wrong_type_are_not_ours(tmp_path, field, value):
    """Found by the hostile fuzz: a results.json row whose sampler was a JSON object passed the rows
    check and crashed the comparison table (unhashable dict). Each field's type is checked now: such a
    file is someone else's, skipped by the table and kept by append_rows (the rows go beside it)."""
    from lct_jax.evaluation import results, table1
    path = tmp_path / 'run' / 'results.json'
    path.parent.mkdir()
    row = {'format': table1.ROW_FORMAT, 'run': 'r', 'checkpoint': 'step 1:ema_0.99', 'dataset': 'digits',
           'method': 'sLCT', 'sampler': '1-step', 'nfe': 1, 'num_samples': 8, 'features': 'digits_mlp', 'fid': 1.0}
    path.write_text(json.dumps([row, dict(row, **{field: value})]))
    rows, why = table1.evaluation_rows(str(path))
    assert rows is None and repr(field) in why
    assert table1.load_rows([str(tmp_path)], say=lambda m: None) == []
    written = results.append_rows(str(path.parent), [row])
    assert written.endswith('results.new.json') and json.loads(path.read_text())[1][field] == value
