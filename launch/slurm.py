"""SLURM launcher for GPU clusters: one process per GPU, `jax.distributed` finds its peers.

  python launch/slurm.py --nodes 2 --gpus-per-node 8 --config configs/lsun_church256.py \
      --workdir /shared/runs/church [--partition gpu] [--time 72:00:00] [--dry-run] -- <extra main flags>

Writes <workdir>/launch/slurm.sbatch and submits it with sbatch (--dry-run prints
it instead). Under srun, `jax.distributed.initialize()` reads SLURM's
environment (coordinator = first node, one process per task); each task sees
its own GPU. The workdir must be on a filesystem all nodes share.
"""
from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch.common import split_extra, execute, main_command, show  # noqa: E402


def sbatch_script(a, extra) -> str:
    lines = ['#!/bin/bash', f'#SBATCH --job-name={a.name}', f'#SBATCH --nodes={a.nodes}',
             f'#SBATCH --ntasks-per-node={a.gpus_per_node}', f'#SBATCH --gpus-per-node={a.gpus_per_node}',
             '#SBATCH --gpus-per-task=1', f'#SBATCH --cpus-per-task={a.cpus_per_task}',
             f'#SBATCH --time={a.time}', f'#SBATCH --output={a.workdir}/launch/%j.out',
             '#SBATCH --signal=TERM@120   # SIGTERM 2 minutes before the limit: a checkpoint is saved']
    if a.partition:
        lines.append(f'#SBATCH --partition={a.partition}')
    lines += ['set -euo pipefail', f'cd {a.source}',
              'srun ' + show(main_command(a.config, a.workdir, extra))]
    return '\n'.join(lines) + '\n'


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--name', default='lct_jax')
    p.add_argument('--nodes', type=int, default=1)
    p.add_argument('--gpus-per-node', type=int, default=8)
    p.add_argument('--cpus-per-task', type=int, default=8)
    p.add_argument('--partition', default='')
    p.add_argument('--time', default='72:00:00')
    p.add_argument('--source', default=os.getcwd(), help='the lct_jax checkout on the shared filesystem')
    p.add_argument('--config', required=True)
    p.add_argument('--workdir', required=True)
    p.add_argument('--dry-run', action='store_true', help='print the sbatch script, submit nothing')
    own, extra = split_extra(argv)
    return p.parse_args(own), extra


def main(argv=None):
    a, extra = parse(sys.argv[1:] if argv is None else argv)
    script = sbatch_script(a, extra)
    if a.dry_run:
        print(script, end='')
        print(show(['sbatch', os.path.join(a.workdir, 'launch', 'slurm.sbatch')]))
        return 0
    path = os.path.join(a.workdir, 'launch', 'slurm.sbatch')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(script)
    return execute([['sbatch', path]], dry_run=False)


if __name__ == '__main__':
    sys.exit(main())
