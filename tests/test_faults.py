"""The fault suite: what happens on a cluster, tried here (`python -m pytest -m faults`).

Bad configs, bad weights, a corrupted or unwritable checkpoint, signals and a
lost process. The slow ones (several real processes) are also marked `slow`.
"""
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from lct_jax.train import checkpoints, loop
from lct_jax.train.metric_writer import MetricsWriteError
from tests import runs
from tests.test_train import smoke_config

pytestmark = pytest.mark.faults


@pytest.mark.parametrize('flag, message', [
    ('--config.batch_sise=16', 'batch_sise'),
    ('--config.batch_size=sixteen', 'batch_size'),
    ('--config.batch_size=18', 'batch_size=18 must be divisible by the 4 devices'),
    ('--config.model.img_resolution=9', 'img_resolution=9 must be divisible by'),
    ('--config.consistency.loss_norm=cauchi', "consistency.loss_norm='cauchi' is out of range"),
    ('--config.coupling.method=hungarian', "coupling.method='hungarian' is out of range"),
])
def test_bad_config_is_a_short_error_before_compiling(tmp_path, flag, message):
    t0 = time.time()
    out = subprocess.run(runs.command(str(tmp_path / 'w'), flag), cwd=runs.ROOT, env=runs.env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    err = [l for l in out.stderr.strip().splitlines() if l.strip()]
    assert message in out.stderr, out.stderr[-2000:]
    assert 'Traceback' not in out.stderr, out.stderr[-2000:]
    assert len(err) <= 3, err  # a short message, not a stack
    assert not os.path.exists(tmp_path / 'w' / 'checkpoints')
    assert time.time() - t0 < 120


def test_corrupted_latest_checkpoint_is_named_and_fallback_resumes(tmp_path):
    wd = str(tmp_path / 'run')
    loop.train(smoke_config(), wd, show_progress=False)          # checkpoints 10 and 20
    ocdbt = os.path.join(wd, 'checkpoints', '20', 'default')
    for name in os.listdir(ocdbt):                             # damage the array store of step 20
        path = os.path.join(ocdbt, name)
        if name.startswith('ocdbt.process') or name == 'd':
            shutil.rmtree(path)
    longer = smoke_config(total_steps=30)
    with pytest.raises(checkpoints.CheckpointError, match=r'(?s)checkpoints/20.*restore_fallback=True'):
        loop.train(longer, wd, show_progress=False)
    m = loop.train(smoke_config(total_steps=30, **{'train.restore_fallback': True}), wd, show_progress=False)
    assert m['final_step'] == 30
    assert 30 in [int(s) for s in os.listdir(os.path.join(wd, 'checkpoints')) if s.isdigit()]


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / 'small_disk'
    mnt.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=28m', 'tmpfs', str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f'cannot mount a tmpfs here: {r.stderr.decode().strip()}')
    yield str(mnt)
    subprocess.run(['umount', '-l', str(mnt)])


def test_disk_full_during_save_keeps_the_previous_checkpoint(small_disk, tmp_path):
    wd = os.path.join(small_disk, 'run')
    latents = str(tmp_path / 'latents')
    cfg = smoke_config(total_steps=40, **{'data.latent_dir': latents, 'sample_every': 1000})
    # The full disk surfaces either in the next checkpoint save or in the metric files (both live in
    # the work directory); which one first is a race, the error is clear either way.
    with pytest.raises((checkpoints.CheckpointError, MetricsWriteError),
                       match=r'(?s)failed.*(No space left|ENOSPC|Errno 28)'):
        loop.train(cfg, wd, show_progress=False)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(('lct-input', 'lct-pairing'))]
    mngr = checkpoints.make_manager(wd)
    assert mngr.latest_step() == 10
    restored = checkpoints.load_numpy(os.path.join(wd, 'checkpoints', '10'))
    assert int(restored['step']) == 10
    assert all(np.isfinite(x).all() for x in runs.flat(restored['params']))


def test_a_metric_row_that_cannot_be_written_is_an_error_naming_the_file(tmp_path):
    from lct_jax.train.metric_writer import MetricWriter
    writer = MetricWriter(str(tmp_path), enabled=True)
    writer._jsonl.close()
    writer._jsonl = open('/dev/full', 'a')  # every write fails with ENOSPC, as on a full disk
    with pytest.raises(MetricsWriteError, match=r'/dev/full failed \(OSError: \[Errno 28\] No space left'):
        writer.scalars(10, {'loss': 1.0})
    with pytest.raises(MetricsWriteError, match='/dev/full'):  # the row is still buffered; TB closes first
        writer.close()


def test_every_closer_runs_and_none_hides_the_error_that_ended_the_loop(capsys):
    ran = []

    def closer(name, error=None):
        def close():
            ran.append(name)
            if error:
                raise error
        return name, close

    closers = [closer('a'), closer('b', OSError('disk full')), closer('c', ValueError('late')), closer('d')]
    # nothing in flight: all four run, then the first closer's error is raised, the later one printed
    with pytest.raises(OSError, match='disk full'):
        loop.close_all(closers, None)
    assert ran == ['a', 'b', 'c', 'd'] and 'c failed also: ValueError: late' in capsys.readouterr().out
    # an error in flight: all run, nothing raised here (the caller re-raises its own), both printed
    ran.clear()
    loop.close_all(closers, checkpoints.CheckpointError('save failed'))
    out = capsys.readouterr().out
    assert ran == ['a', 'b', 'c', 'd']
    assert 'b failed after CheckpointError: OSError: disk full' in out and 'c failed after' in out
    ran.clear()
    loop.close_all(closers[:1] + closers[3:], None)
    assert ran == ['a', 'd']


LONG = ['--config.total_steps=40', '--config.checkpoint_every=10', '--config.sample_every=1000',
        '--config.log_every=10']


@pytest.mark.slow
@pytest.mark.parametrize('delay', [0.0, 1.5])
def test_sigterm_at_arbitrary_steps(tmp_path, delay):
    wd = str(tmp_path / 'term')
    p = runs.start(runs.command(wd, *LONG), str(tmp_path / 'log.txt'))
    runs.wait_for(lambda: runs.checkpoint_done(wd, 10), p)
    time.sleep(delay)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 0
    steps = sorted(int(s) for s in os.listdir(os.path.join(wd, 'checkpoints')) if s.isdigit())
    assert 'stopped by signal at step %d' % steps[-1] in open(tmp_path / 'log.txt').read() or steps[-1] == 40
    runs.run(runs.command(wd, *LONG), str(tmp_path / 'log2.txt'))
    assert runs.checkpoint_done(wd, 40)


@pytest.mark.slow
def test_lost_process_fails_the_other_in_bounded_time_then_resumes(tmp_path):
    wd = str(tmp_path / 'two')
    port = runs.free_port()
    flags = lambda i: [f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
                       '--heartbeat_timeout_seconds=10', *LONG, '--config.total_steps=400']
    procs = [runs.start(runs.command(wd, *flags(i), devices=2), str(tmp_path / f'log{i}.txt')) for i in range(2)]
    runs.wait_for(lambda: runs.checkpoint_done(wd, 10), procs[0])
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    rc = procs[0].wait(timeout=180)
    waited = time.time() - t0
    assert rc != 0 and waited < 120, (rc, waited)
    # the job restarts (a new coordinator port, as a scheduler would) and finishes; shortening the
    # run is a change of its recorded config, so it is said explicitly
    port = runs.free_port()
    procs = [runs.start(runs.command(wd, *flags(i)[:-1], '--config.total_steps=40', '--allow_config_change',
                                     devices=2),
                        str(tmp_path / f'again{i}.txt')) for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=600) == 0, open(tmp_path / f'again{i}.txt').read()[-3000:]
    assert 'resumed from' in open(tmp_path / 'again0.txt').read()
    assert runs.checkpoint_done(wd, 40)
