"""Real processes: SIGKILL + resume is bit-exact, SIGTERM saves, 2 hosts equal 1 host.

Each test launches `python -m lct_jax.main` like a user does (about 20-60 s each).
"""
import os
import re
import signal

import numpy as np
import pytest

from tests import runs

LONG = ['--config.total_steps=40', '--config.checkpoint_every=10', '--config.sample_every=1000',
        '--config.log_every=10']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp('full'))
    runs.run(runs.command(wd, *LONG), os.path.join(wd, 'log.txt'))
    return wd


def test_sigkill_then_resume_is_bit_identical(uninterrupted, tmp_path):
    wd = str(tmp_path / 'killed')
    p = runs.start(runs.command(wd, *LONG), str(tmp_path / 'log1.txt'))
    runs.wait_for(lambda: runs.checkpoint_done(wd, 10), p)
    assert p.poll() is None, 'the run ended before it could be killed; make it longer'
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not runs.checkpoint_done(wd, 40)
    runs.run(runs.command(wd, *LONG), str(tmp_path / 'log2.txt'))
    assert 'resumed from' in open(tmp_path / 'log2.txt').read()
    for a, b in zip(runs.flat(runs.load_params(uninterrupted, 40)), runs.flat(runs.load_params(wd, 40))):
        np.testing.assert_array_equal(a, b)


# slow (~65 s); SIGTERM at arbitrary steps is also in the fault suite (`-m faults`)
@pytest.mark.slow
def test_sigterm_saves_the_step_it_stopped_at(tmp_path):
    wd = str(tmp_path / 'term')
    log = str(tmp_path / 'log.txt')
    p = runs.start(runs.command(wd, *LONG), log)
    runs.wait_for(lambda: runs.checkpoint_done(wd, 10), p)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 0
    text = open(log).read()
    m = re.search(r'stopped by signal at step (\d+)', text)
    assert m, text[-2000:]
    step = int(m.group(1))
    assert 10 <= step < 40 and runs.checkpoint_done(wd, step)
    runs.run(runs.command(wd, *LONG), str(tmp_path / 'log2.txt'))
    assert f'resumed from {wd}/checkpoints/{step}' in open(tmp_path / 'log2.txt').read()
    assert runs.checkpoint_done(wd, 40)


def test_two_processes_equal_one_process(uninterrupted, tmp_path):
    """2 processes x 2 devices against the same run in 1 process x 4 devices (the fixture's)."""
    two = str(tmp_path / 'two')
    port = runs.free_port()
    procs = [runs.start(runs.command(two, *LONG, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                                     f'--process_id={i}', devices=2), str(tmp_path / f'two{i}.txt'))
             for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=600) == 0, open(tmp_path / f'two{i}.txt').read()[-3000:]
    assert '2 process(es), 4 cpu device(s)' in open(tmp_path / 'two0.txt').read()
    assert os.path.exists(os.path.join(two, 'samples', 'step_0000040_2step.png'))  # gathered over both
    for a, b in zip(runs.flat(runs.load_params(uninterrupted, 40)), runs.flat(runs.load_params(two, 40))):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


# Process 1 as if its compile took LATE_S longer than process 0's: longer than the 30 s Gloo gives
# a collective's peers to meet, so without the barrier after compile_for process 0 fails with
# "Gloo context initialization failed: DEADLINE_EXCEEDED" at the first step.
LATE_S = 45
LATE_PEER = ('import runpy, sys, time\n'
             'from lct_jax.train import step\n'
             'compile_for = step.CompiledStep.compile_for\n'
             'def late(self, state, batch):\n'
             '    compile_for(self, state, batch)\n'
             f'    time.sleep({LATE_S})\n'
             'step.CompiledStep.compile_for = late\n'
             "runpy.run_module('lct_jax.main', run_name='__main__')\n")


@pytest.mark.slow
def test_a_peer_that_compiles_long_after_the_other_does_not_stop_the_run(tmp_path):
    two = str(tmp_path / 'two')
    port = runs.free_port()
    cmds = [runs.command(two, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
                         '--config.sample_every=10', devices=2) for i in range(2)]
    cmds[1] = [cmds[1][0], '-c', LATE_PEER] + cmds[1][3:]     # python -c <late peer> <main's flags>
    procs = [runs.start(c, str(tmp_path / f'two{i}.txt')) for i, c in enumerate(cmds)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=600) == 0, open(tmp_path / f'two{i}.txt').read()[-3000:]
    assert runs.checkpoint_done(two, 20)
    assert os.path.exists(os.path.join(two, 'samples', 'step_0000020_1step.png'))
