"""Our step against a PyTorch step of the same UNet, one subprocess per XLA flag set (`vs_pytorch`;
the measurement itself is benchmarks/vs_pytorch.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# XLA CPU options tried against PyTorch (see the notes of benchmarks/README.md).
VS_PYTORCH_FLAG_SETS = {
    'default': '',
    'one_thread_each': '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1',  # torch too
    'onednn': '--xla_cpu_use_onednn=true',
    'xnnpack': '--xla_cpu_use_xnnpack=true',
}


def vs_pytorch(r, mesh, quick):
    """One subprocess per XLA flag set (XLA reads its flags once per process)."""
    flag_sets = {'default': ''} if quick else VS_PYTORCH_FLAG_SETS
    out = {}
    for name, flags in flag_sets.items():
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu')
        threads = ['--threads', '1'] if 'intra_op_parallelism_threads=1' in flags else []
        proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, 'vs_pytorch.py'), *threads],
                              env=env, capture_output=True, text=True, timeout=1800)
        lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
        out[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else \
            {'xla_flags': flags, 'error': (proc.stderr or proc.stdout)[-600:]}
        print('vs_pytorch', name, out[name], flush=True)
    return {'vs_pytorch': out}


SECTIONS = {'vs_pytorch': (vs_pytorch, False)}
