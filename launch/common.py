"""What every launcher shares: the training command and printing/running it."""
from __future__ import annotations

import shlex
import subprocess
import sys


def main_command(config: str, workdir: str, extra=(), python: str = 'python3') -> list[str]:
    return [python, '-m', 'lct_jax.main', f'--config={config}', f'--workdir={workdir}', *extra]


def show(cmd) -> str:
    return cmd if isinstance(cmd, str) else ' '.join(shlex.quote(c) for c in cmd)


def execute(cmds, dry_run: bool) -> int:
    """Print each command; run them in order unless dry_run. Stops at the first failure."""
    for cmd in cmds:
        print(show(cmd), flush=True)
        if not dry_run:
            rc = subprocess.call(cmd, shell=isinstance(cmd, str))
            if rc:
                print(f'failed ({rc}): {show(cmd)}', file=sys.stderr)
                return rc
    return 0


def split_extra(argv):
    """(launcher args, main flags after '--')."""
    argv = list(argv)
    if '--' in argv:
        i = argv.index('--')
        return argv[:i], argv[i + 1:]
    return argv, []
