"""Local launcher: K processes on 127.0.0.1, the same code path as a pod or a cluster.

  python launch/local.py --num-processes 2 --devices-per-process 2 \
      --config configs/default.py --workdir workdir/local [--dry-run] -- <extra main flags>

Each process gets --coordinator_address/--num_processes/--process_id (CPU
devices simulated with --num_cpu_devices, collectives through gloo). If one
process fails, the others are stopped (SIGTERM, then SIGKILL after a grace
period), so nothing hangs; the exit code is the first failure's.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch.common import split_extra, main_command, show  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def commands(a, extra, port: int) -> list[list[str]]:
    out = []
    for i in range(a.num_processes):
        flags = [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={a.num_processes}',
                 f'--process_id={i}']
        if a.devices_per_process:
            flags.append(f'--num_cpu_devices={a.devices_per_process}')
        out.append(main_command(a.config, a.workdir, flags + list(extra), python=sys.executable))
    return out


def supervise(procs, grace: float = 30.0) -> int:
    """Wait for all; on the first failure stop the rest. Returns the first non-zero code."""
    failed = 0
    while True:
        codes = [p.poll() for p in procs]
        bad = [c for c in codes if c not in (None, 0)]
        if bad and not failed:
            failed = bad[0]
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.time() + grace
            while time.time() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.2)
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if all(c is not None for c in [p.poll() for p in procs]):
            return failed
        time.sleep(0.2)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--num-processes', type=int, default=2)
    p.add_argument('--devices-per-process', type=int, default=0, help='simulated CPU devices (0 = real ones)')
    p.add_argument('--port', type=int, default=0, help='coordinator port (0 = a free one)')
    p.add_argument('--config', required=True)
    p.add_argument('--workdir', required=True)
    p.add_argument('--dry-run', action='store_true')
    own, extra = split_extra(argv)
    return p.parse_args(own), extra


def main(argv=None):
    a, extra = parse(sys.argv[1:] if argv is None else argv)
    cmds = commands(a, extra, a.port or (12345 if a.dry_run else free_port()))
    for c in cmds:
        print(show(c), flush=True)
    if a.dry_run:
        return 0
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu' if a.devices_per_process else ''))
    procs = [subprocess.Popen(c, env=env) for c in cmds]
    return supervise(procs)


if __name__ == '__main__':
    sys.exit(main())
