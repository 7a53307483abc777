"""The work directory: one writer, an immutable record of what was run, history that matches the checkpoints.

Fast unit tests of the lock, the record and the metric history first; then
end-to-end runs of `python -m lct_jax.main` (marked `faults`), which share
one smoke run: it is frozen (SIGSTOP) between a log step and the next
checkpoint, a second launch tries the same work directory, then it is killed
(SIGKILL) and resumed. The other tests work on copies of that directory.
"""
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from lct_jax.train import checkpoints
from lct_jax.train.metric_writer import (
    DROPPED,
    METRICS,
    MetricWriter,
    split_history,
    truncate_history,
)
from lct_jax.workdir import record
from lct_jax.workdir.lock import LOCK_FILE, WorkdirLock, WorkdirLockedError
from tests import runs

# --- helpers -----------------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()  # reaped: the pid no longer exists
    return p.pid


def write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    content = {'host': socket.gethostname(), 'pid': os.getpid(), 'job': None, 'started': '2020-01-01T00:00:00+00:00',
               'heartbeat': time.time(), 'token': 'someone-else', **holder}
    with open(os.path.join(workdir, LOCK_FILE), 'w') as f:
        json.dump(content, f)


def snapshot(workdir) -> dict:
    """{relative path: sha256} of every file in the work directory."""
    out = {}
    for root, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
    return out


def logged_steps(workdir) -> list[int]:
    path = os.path.join(workdir, METRICS)
    if not os.path.exists(path):
        return []
    steps = []
    for line in open(path):
        try:
            steps.append(json.loads(line)['step'])
        except ValueError:  # a row being written
            pass
    return steps


def event_records(path):
    """The payloads of a TFRecord file, stopping at a truncated tail (a killed writer), as TensorBoard does."""
    data = open(path, 'rb').read()
    i = 0
    while i + 12 <= len(data):
        n = struct.unpack('<Q', data[i:i + 8])[0]
        if i + 16 + n > len(data):
            return
        yield data[i + 12:i + 12 + n]
        i += 16 + n


def tensorboard_scalars(logdir, tag='loss') -> list[tuple[int, float]]:
    """(step, value) of a scalar as TensorBoard shows it: event files in name order, and a
    SessionLog.START at step P purges the earlier events at steps >= P (TensorBoard's
    EventAccumulator with purge_orphaned_data, its default; tensorboard itself is not installed here)."""
    from tensorboardX.proto import event_pb2
    values = []
    for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
        for payload in event_records(path):
            event = event_pb2.Event.FromString(payload)
            if event.WhichOneof('what') == 'session_log' and event.session_log.status == event.session_log.START:
                values = [(s, v) for s, v in values if s < event.step]
            for v in event.summary.value:
                if v.tag == tag:
                    values.append((event.step, v.simple_value))
    return values


def latest_committed(workdir) -> int:
    d = os.path.join(workdir, 'checkpoints')
    steps = [int(s) for s in os.listdir(d) if s.isdigit() and runs.checkpoint_done(workdir, int(s))] \
        if os.path.isdir(d) else []
    return max(steps, default=0)


def main_run(workdir, *flags, timeout=600):
    return subprocess.run(runs.command(workdir, *flags), cwd=runs.ROOT, env=runs.env(), capture_output=True,
                          text=True, timeout=timeout)


def error_lines(out) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.startswith('error:')]


# --- the lock ----------------------------------------------------------------

def test_a_second_holder_is_refused_with_one_line_naming_the_first(tmp_path):
    with WorkdirLock(str(tmp_path)):
        holder = json.load(open(tmp_path / LOCK_FILE))
        assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
        with pytest.raises(WorkdirLockedError) as e:
            WorkdirLock(str(tmp_path)).acquire()
        message = str(e.value)
        assert '\n' not in message
        assert f'host {socket.gethostname()}, pid {os.getpid()}' in message and holder['started'] in message
    assert not (tmp_path / LOCK_FILE).exists()  # released


def test_a_dead_pid_on_this_host_is_taken_over_with_a_message(tmp_path):
    pid = dead_pid()
    write_lock(str(tmp_path), pid=pid)  # fresh heartbeat: only the dead pid tells
    messages = []
    with WorkdirLock(str(tmp_path), log=messages.append):
        assert json.load(open(tmp_path / LOCK_FILE))['pid'] == os.getpid()
    assert len(messages) == 1 and f'its process {pid} on this host is dead' in messages[0], messages


def test_another_host_is_judged_by_its_heartbeat(tmp_path):
    write_lock(str(tmp_path), host='elsewhere', pid=1, heartbeat=time.time() - 5)
    with pytest.raises(WorkdirLockedError, match='host elsewhere, pid 1'):
        WorkdirLock(str(tmp_path), stale_after_s=60).acquire()
    write_lock(str(tmp_path), host='elsewhere', pid=1, heartbeat=time.time() - 61)
    messages = []
    with WorkdirLock(str(tmp_path), stale_after_s=60, log=messages.append):
        pass
    assert len(messages) == 1 and 'no heartbeat for 61 s (> 60 s)' in messages[0], messages


def test_the_heartbeat_advances_and_a_lost_lock_is_noticed(tmp_path):
    lock = WorkdirLock(str(tmp_path), heartbeat_s=0.05).acquire()
    first = json.load(open(tmp_path / LOCK_FILE))['heartbeat']
    time.sleep(0.3)
    assert json.load(open(tmp_path / LOCK_FILE))['heartbeat'] > first
    write_lock(str(tmp_path), token='a-later-holder')  # someone took it over
    messages = []
    lock.log = messages.append
    time.sleep(0.3)
    assert lock.lost and 'no longer held by this job' in messages[0]
    lock.release()
    assert json.load(open(tmp_path / LOCK_FILE))['token'] == 'a-later-holder'  # not ours to remove


# --- the record --------------------------------------------------------------

def test_config_changes_list_old_and_new_values():
    changes = record.config_changes({'a': 1, 'm': {'c': 32, 'k': [1, 2]}}, {'a': 1, 'm': {'c': 48, 'k': [1, 2]}, 'n': 0})
    assert changes == {'m.c': (32, 48), 'n': (record.ABSENT, 0)}
    assert record.format_changes(changes) == '  m.c: 32 -> 48\n  n: <absent> -> 0'


def test_a_training_change_needs_the_flag_and_is_recorded_with_its_step(tmp_path):
    rec = record.RunRecord(str(tmp_path))
    first = {'model': {'model_channels': 32}, 'train': {'restore_fallback': False}}
    assert rec.check_start(first, allow_change=False) == {}
    rec.begin_segment(first, 0, {}, {'host': 'h'})
    config_bytes = open(tmp_path / 'config.json', 'rb').read()
    rec.begin_segment(first, 10, {}, {'host': 'h'})  # a resume without changes rewrites nothing
    assert open(tmp_path / 'config.json', 'rb').read() == config_bytes
    # a setting that does not change training is noted without the flag
    fallback = {'model': {'model_channels': 32}, 'train': {'restore_fallback': True}}
    assert rec.check_start(fallback, allow_change=False) == {'train.restore_fallback': (False, True)}
    changed = {'model': {'model_channels': 48}, 'train': {'restore_fallback': False}}
    with pytest.raises(record.ConfigChangedError, match=r'model\.model_channels: 32 -> 48') as e:
        rec.check_start(changed, allow_change=False)
    assert '--allow_config_change' in str(e.value)
    changes = rec.check_start(changed, allow_change=True)
    rec.begin_segment(changed, 20, changes, {'host': 'h'})
    run = json.load(open(tmp_path / 'run.json'))
    assert run['config_changes'] == [{'step': 20, 'when': run['config_changes'][0]['when'],
                                      'changes': {'model.model_channels': [32, 48]},
                                      'allowed_by': '--allow_config_change'}]
    # the two segments that never ended cleanly were closed by the next start
    assert [(s['from_step'], s.get('to_step')) for s in run['segments']] == [(0, 10), (10, 20), (20, None)]
    assert 'interrupted' in run['segments'][0]['end']
    assert json.load(open(tmp_path / 'config.json'))['model']['model_channels'] == 48
    # a key new to the code's config (with its default) is noted, not refused
    newer = dict(changed, dit={'depth': 12})
    assert rec.check_start(newer, allow_change=False) == {'dit.depth': (record.ABSENT, 12)}


def test_checkpoints_without_a_record_are_not_resumed_without_the_flag(tmp_path):
    """A directory with checkpoints and no config.json (a record deleted, or a run from before the
    record existed): nothing to compare with, so resuming needs the flag, which adopts the config."""
    rec = record.RunRecord(str(tmp_path))
    config = {'model': {'model_channels': 32}}
    assert rec.check_start(config, allow_change=False) == {}  # fresh: no checkpoints, nothing to ask
    os.makedirs(tmp_path / 'checkpoints' / '20')
    os.makedirs(tmp_path / 'checkpoints' / '10')
    with pytest.raises(record.ConfigChangedError, match=r'latest: step 20.*config\.json is missing') as e:
        rec.check_start(config, allow_change=False)
    assert '--allow_config_change' in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ['checkpoints']  # the refusal wrote nothing
    assert rec.check_start(config, allow_change=True) == {}
    rec.begin_segment(config, 20, {}, {'host': 'h'})
    run = json.load(open(tmp_path / 'run.json'))
    assert [(c['step'], c['changes']) for c in run['config_changes']] == [(20, {})]
    assert 'adopted' in run['config_changes'][0]['allowed_by']
    assert json.load(open(tmp_path / 'config.json')) == config
    assert rec.check_start(config, allow_change=False) == {}  # from now on an ordinary recorded run


def test_read_only_modes_start_from_the_recorded_config():
    from configs import default
    config = default.get_config('smoke')
    recorded = record.config_as_dict(config)
    recorded['model']['model_channels'] = 16
    recorded['model']['channel_mult'] = [1, 2]
    recorded['sampling']['num_samples'] = 32
    recorded['gone_key'] = 1
    merged, skipped = record.apply_recorded(config, recorded, {'sampling.num_samples': 8})
    assert merged.model.model_channels == 16 and merged.model.channel_mult == (1, 2)
    assert merged.sampling.num_samples == 8  # the command line wins
    assert skipped == ['gone_key']


# --- history and checkpoints -------------------------------------------------

def test_history_after_the_resumed_step_is_moved_aside(tmp_path):
    lines = [json.dumps({'step': s, 'loss': 1.0}) + '\n' for s in (5, 10, 15)] + ['{"step": 2']  # cut by a kill
    kept, dropped = split_history(lines, 10)
    assert [json.loads(x)['step'] for x in kept] == [5, 10] and len(dropped) == 2
    (tmp_path / METRICS).write_text(''.join(lines))
    assert truncate_history(str(tmp_path), 10) == 2
    assert [json.loads(x)['step'] for x in open(tmp_path / METRICS)] == [5, 10]
    moved = [json.loads(x) for x in open(tmp_path / DROPPED)]
    assert [json.loads(m['line'])['step'] for m in moved[:1]] == [15] and moved[1]['line'] == '{"step": 2'
    assert all(m['dropped_when_resuming_from_step'] == 10 for m in moved)


def test_tensorboard_purges_the_steps_after_the_resumed_one(tmp_path):
    w = MetricWriter(str(tmp_path), enabled=True, start_step=0)
    for step in (5, 10, 15):
        w.scalars(step, {'loss': float(step)})
    w.close()
    time.sleep(1.1)  # event files are named by the second they were opened
    w = MetricWriter(str(tmp_path), enabled=True, start_step=10)
    w.scalars(15, {'loss': -15.0})
    w.close()
    assert tensorboard_scalars(str(tmp_path / 'tensorboard')) == [(5, 5.0), (10, 10.0), (15, -15.0)]
    assert logged_steps(str(tmp_path)) == [5, 10, 15]


def test_the_metric_writer_does_not_import_torch_and_its_events_read_back(tmp_path):
    """tensorboardX imports PyTorch where it is installed (1.4 s per training process, for type
    hints); the writer hides it while tensorboardX imports, and what it writes reads back."""
    pytest.importorskip('torch')
    code = ('import sys; from lct_jax.train.metric_writer import MetricWriter\n'
            f'w = MetricWriter({str(tmp_path)!r}, enabled=True)\n'
            'w.scalars(3, {"loss": 0.5}); w.close()\n'
            'assert "torch" not in sys.modules, "torch imported"\n'
            'import torch; print(torch.__name__)')       # and torch still imports afterwards
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0 and out.stdout.strip() == 'torch', out.stderr[-2000:]
    assert tensorboard_scalars(str(tmp_path / 'tensorboard')) == [(3, 0.5)]


def test_shape_mismatches_name_the_keys_and_shapes():
    text = checkpoints.shape_mismatches({'params/conv/bias': (32,), 'params/old': (1,)},
                                        {'params/conv/bias': (48,), 'params/new': (2,)})
    assert 'wrong shapes (1): params/conv/bias: checkpoint (32,), config (48,)' in text
    assert 'in the config but not in the checkpoint (1): params/new (2,)' in text
    assert 'in the checkpoint but not in the config (1): params/old (1,)' in text
    assert checkpoints.shape_mismatches({'a': (1,)}, {'a': (1,)}) == ''


# --- end to end: one smoke run, frozen, locked out, killed and resumed ----------

FLAGS = ['--config.model.model_channels=48', '--config.total_steps=40', '--config.log_every=5',
         '--config.checkpoint_every=10', '--config.sample_every=1000', '--config.sampling.num_samples=32']


@pytest.fixture(scope='module')
def killed_and_resumed(tmp_path_factory):
    """A run frozen and killed between a log step and the next checkpoint (S < logged < S + 10),
    a second launch tried while it was frozen, then the resume. Returns what each left behind."""
    base = tmp_path_factory.mktemp('workdir')
    wd = str(base / 'run')
    p = runs.start(runs.command(wd, *FLAGS), str(base / 'first.txt'))
    try:
        while True:  # catch it with history on disk (rows and events) beyond its latest checkpoint
            runs.wait_for(lambda: 0 < latest_committed(wd) < max(logged_steps(wd), default=0), p, poll=0.01)
            assert p.poll() is None, 'the run ended before it could be caught: ' + open(base / 'first.txt').read()[-2000:]
            p.send_signal(signal.SIGSTOP)
            time.sleep(0.2)  # let the stop land
            s = latest_committed(wd)
            if any(t > s for t, _ in tensorboard_scalars(os.path.join(wd, 'tensorboard'))):
                break
            p.send_signal(signal.SIGCONT)
            runs.wait_for(lambda: max(logged_steps(wd), default=0) > s + 5, p, poll=0.01)
        before = snapshot(wd)
        second = main_run(wd, *FLAGS)
        after = snapshot(wd)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    history = {'rows': logged_steps(wd), 'events': tensorboard_scalars(os.path.join(wd, 'tensorboard')),
               'committed': latest_committed(wd)}
    runs.run(runs.command(wd, *FLAGS), str(base / 'resume.txt'))
    return dict(wd=wd, pid=p.pid, second=second, before=before, after=after, history=history,
                resume_log=open(base / 'resume.txt').read())


def copy_of(run, tmp_path) -> str:
    wd = str(tmp_path / 'copy')
    shutil.copytree(run['wd'], wd)
    return wd


@pytest.mark.faults
def test_a_second_launch_into_a_live_workdir_is_refused_and_touches_nothing(killed_and_resumed):
    r = killed_and_resumed
    out = r['second']
    assert out.returncode != 0
    errors = error_lines(out)
    assert len(errors) == 1, out.stderr[-2000:]
    assert f'host {socket.gethostname()}, pid {r["pid"]}, job' in errors[0] and 'started 20' in errors[0]
    assert 'Traceback' not in out.stderr
    assert r['before'] == r['after']  # checkpoints, metrics, events, latents, record, lock: byte-identical
    assert any(k.startswith('checkpoints/') for k in r['before']) and any(k.startswith('latents/') for k in r['before'])


@pytest.mark.faults
def test_after_a_kill_and_resume_the_history_has_one_row_per_step(killed_and_resumed):
    r = killed_and_resumed
    s = int(re.search(r'resumed from \S+/checkpoints/(\d+)', r['resume_log']).group(1))
    assert s == r['history']['committed']
    # before the resume: the killed run had logged beyond its checkpoint, in both histories
    assert max(r['history']['rows']) > s and max(t for t, _ in r['history']['events']) > s
    # the stale lock of the killed run was taken over, with a message
    assert f'its process {r["pid"]} on this host is dead' in r['resume_log']
    steps = list(range(5, 41, 5))
    assert logged_steps(r['wd']) == steps
    events = tensorboard_scalars(os.path.join(r['wd'], 'tensorboard'))
    assert [t for t, _ in events] == steps
    rows = {json.loads(x)['step']: json.loads(x)['loss'] for x in open(os.path.join(r['wd'], METRICS))}
    assert all(abs(v - rows[t]) <= 1e-6 * abs(rows[t]) for t, v in events)
    moved = [json.loads(json.loads(x)['line'])['step'] for x in open(os.path.join(r['wd'], DROPPED))]
    assert moved and all(t > s for t in moved)


@pytest.mark.faults
def test_the_record_holds_what_reproduces_each_segment(killed_and_resumed):
    r = killed_and_resumed
    run = json.load(open(os.path.join(r['wd'], 'run.json')))
    first, second = run['segments']
    s = second['from_step']
    assert (first['from_step'], first['to_step'], second['to_step'], second['end']) == (0, s, 40, 'finished')
    assert 'interrupted' in first['end'] and first['pid'] == r['pid']
    for seg in (first, second):
        assert seg['host'] == socket.gethostname() and seg['started'] and '--workdir=' in seg['command']
        assert seg['devices']['count'] == 4 and seg['devices']['processes'] == 1 and seg['devices']['kind']
        assert set(seg['git']) == {'commit', 'dirty'} and len(seg['git']['commit']) == 40
        assert all(seg['versions'][k] for k in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ott-jax'))
    assert run['config_changes'] == []
    assert json.load(open(os.path.join(r['wd'], 'config.json')))['model']['model_channels'] == 48
    assert not os.path.exists(os.path.join(r['wd'], LOCK_FILE))


@pytest.mark.faults
def test_a_resume_with_a_changed_key_is_refused_and_lists_it(killed_and_resumed, tmp_path):
    wd = copy_of(killed_and_resumed, tmp_path)
    before = snapshot(wd)
    out = main_run(wd, *FLAGS, '--config.consistency.loss_norm=huber')
    assert out.returncode != 0
    assert 'consistency.loss_norm: "cauchy" -> "huber"' in out.stderr, out.stderr[-2000:]
    assert '--allow_config_change' in out.stderr and 'Traceback' not in out.stderr
    assert snapshot(wd) == before


@pytest.mark.faults
def test_a_failed_start_leaves_the_record_byte_identical(killed_and_resumed, tmp_path):
    wd = copy_of(killed_and_resumed, tmp_path)
    before = snapshot(wd)
    # allowed as a change, but the checkpoints cannot take it: the start fails at the restore
    out = main_run(wd, *FLAGS, '--config.model.model_channels=64', '--allow_config_change')
    assert out.returncode != 0
    assert 'CheckpointMismatchError' in out.stderr and 'does not fit the config' in out.stderr, out.stderr[-3000:]
    assert re.search(r'wrong shapes \(\d+\): params/\S+: checkpoint \(\d+,?.*\), config \(\d+', out.stderr)
    assert 'Event loop is closed' not in out.stdout + out.stderr and 'Traceback' not in out.stderr
    assert snapshot(wd) == before  # config.json, run.json, checkpoints, metrics: nothing written


@pytest.mark.faults
def test_an_allowed_change_proceeds_and_the_history_records_it_with_its_step(killed_and_resumed, tmp_path):
    wd = copy_of(killed_and_resumed, tmp_path)
    shutil.rmtree(os.path.join(wd, 'checkpoints', '40'))  # resume from 30: some steps to train, no new compile
    old = json.load(open(os.path.join(wd, 'config.json')))['train']['max_skips_in_a_row']
    runs.run(runs.command(wd, *FLAGS, f'--config.train.max_skips_in_a_row={old + 1}', '--allow_config_change'),
             str(tmp_path / 'log.txt'))
    run = json.load(open(os.path.join(wd, 'run.json')))
    change = run['config_changes'][-1]
    assert change['step'] == 30 and change['allowed_by'] == '--allow_config_change'
    # (keys new to the code's config since the fixture ran are noted too; not what this test is about)
    assert {k: v for k, v in change['changes'].items() if record.ABSENT not in v} == \
        {'train.max_skips_in_a_row': [old, old + 1]}
    assert (run['segments'][-1]['from_step'], run['segments'][-1]['to_step']) == (30, 40)
    assert json.load(open(os.path.join(wd, 'config.json')))['train']['max_skips_in_a_row'] == old + 1
    assert logged_steps(wd) == list(range(5, 41, 5))


@pytest.mark.faults
def test_sample_uses_the_run_record_takes_no_lock_and_names_a_mismatch(killed_and_resumed, tmp_path):
    wd = copy_of(killed_and_resumed, tmp_path)
    with WorkdirLock(wd):  # a live writer: read-only modes do not need the lock
        out = main_run(wd, '--mode=sample')  # none of the training flags repeated
    assert out.returncode == 0, out.stderr[-3000:]
    assert "config: the run's record" in out.stdout
    grids = glob.glob(os.path.join(wd, 'samples', 'step_40_*.npz'))
    assert grids, os.listdir(os.path.join(wd, 'samples'))
    import numpy as np
    assert all(len(np.load(g)['images']) == 32 for g in grids)  # sampling.num_samples from the record
    out = main_run(wd, '--mode=sample', '--config.model.model_channels=64')
    assert out.returncode != 0
    assert 'ScopeParamShapeError' not in out.stderr and 'Traceback' not in out.stderr, out.stderr[-3000:]
    assert re.search(r'wrong shapes \(\d+\): \S+: checkpoint \(\d+,?.*\), config \(\d+', out.stderr), out.stderr[-3000:]


@pytest.mark.faults
def test_a_launch_on_a_finished_run_says_so_and_writes_nothing(killed_and_resumed, tmp_path):
    wd = copy_of(killed_and_resumed, tmp_path)
    before = snapshot(wd)
    out = main_run(wd, *FLAGS)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'already at step 40 of 40: nothing to train' in out.stdout and '--config.total_steps' in out.stdout
    assert 'nan' not in out.stdout + out.stderr and 'resumed from' not in out.stdout
    assert snapshot(wd) == before  # run.json, metrics.jsonl, checkpoints, events: byte-identical
    assert {'run.json', 'metrics.jsonl', 'config.json'} <= set(before)


def test_encode_is_covered_by_the_lock(tmp_path):
    wd = str(tmp_path / 'run')
    with WorkdirLock(wd):
        out = main_run(wd, '--mode=encode')
    assert out.returncode != 0 and len(error_lines(out)) == 1, out.stderr[-2000:]
    assert f'in use by another job (host {socket.gethostname()}, pid {os.getpid()}' in error_lines(out)[0]
    assert not os.path.exists(os.path.join(wd, 'latents'))
