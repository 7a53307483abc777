"""Helpers to run `python -m lct_jax.main` in subprocesses, as a user or a cluster would."""
import os
import socket
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, *flags, config='configs/default.py:smoke', devices=4):
    return [sys.executable, '-m', 'lct_jax.main', f'--config={config}', f'--workdir={workdir}',
            f'--num_cpu_devices={devices}', *flags]


def env():
    e = dict(os.environ)
    e['PYTHONPATH'] = ROOT + os.pathsep + e.get('PYTHONPATH', '')
    e['JAX_PLATFORMS'] = 'cpu'
    return e


def start(cmd, log_path):
    log = open(log_path, 'w')
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT)


def run(cmd, log_path, timeout=600):
    p = start(cmd, log_path)
    rc = p.wait(timeout=timeout)
    assert rc == 0, open(log_path).read()[-3000:]


def wait_for(predicate, proc, timeout=300, poll=0.02):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(poll)
    raise TimeoutError('condition not met in time')


def checkpoint_done(workdir, step):
    return os.path.exists(os.path.join(workdir, 'checkpoints', str(step), 'commit_success.txt')) or \
        os.path.exists(os.path.join(workdir, 'checkpoints', str(step), '_CHECKPOINT_METADATA'))


def load_params(workdir, step):
    from lct_jax.train.checkpoints import load_numpy
    return load_numpy(os.path.join(workdir, 'checkpoints', str(step)))['params']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def flat(tree):
    import jax
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
