"""What reproduces a run segment: code version, library versions, hardware, command line."""
from __future__ import annotations

import importlib.metadata
import os
import shlex
import socket
import subprocess
import sys

# The libraries whose versions change the numbers a run produces.
LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ott-jax', 'numpy', 'ml-collections')
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git_state(root: str = CODE_ROOT) -> dict | None:
    """{'commit', 'dirty'} of the code's git checkout, or None outside one (e.g. a pip install)."""
    def git(*args):
        return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, timeout=30)
    try:
        head = git('rev-parse', 'HEAD')
        if head.returncode:
            return None
        status = git('status', '--porcelain')  # untracked files count: new code changes a run too
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {'commit': head.stdout.strip(), 'dirty': bool(status.stdout.strip())}


def library_versions(names=LIBRARIES) -> dict:
    versions = {'python': sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def devices() -> dict:
    import jax
    return {'backend': jax.default_backend(), 'kind': jax.devices()[0].device_kind,
            'count': jax.device_count(), 'local_count': jax.local_device_count(),
            'processes': jax.process_count()}


def command_line() -> str:
    return shlex.join(getattr(sys, 'orig_argv', [sys.executable, *sys.argv]))


def describe() -> dict:
    """Everything above, for one segment of the run record (process 0's view)."""
    return {'host': socket.gethostname(), 'pid': os.getpid(), 'command': command_line(),
            'git': git_state(), 'versions': library_versions(), 'devices': devices()}
