"""Cloud TPU pod launcher: create the TPU VM, install, run on all workers, follow, delete.

  python launch/tpu_pod.py --name slct --zone us-central2-b --accelerator v4-32 \
      --config configs/celebahq256.py --workdir /mnt/bucket/celebahq256 [--delete] [--dry-run] \
      -- --config.autoencoder.weights=/mnt/bucket/weights/sd-vae-ft-ema.safetensors

On a pod every worker runs the same command; `jax.distributed.initialize()`
finds the other workers by itself. The workdir (checkpoints, latents, logs)
must be visible to every worker under the same path: `--bucket` mounts a GCS
bucket there with gcsfuse first.
"""
from __future__ import annotations

import argparse
import sys

if __package__ in (None, ''):
    import os
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launch.common import split_extra, execute, main_command, show  # noqa: E402


def commands(a, extra) -> list:
    where = ['--zone', a.zone] + (['--project', a.project] if a.project else [])
    ssh = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', a.name, *where, '--worker=all', '--command']
    setup = 'cd ~/lct_jax && python3 -m pip install -q -r requirements.txt "jax[tpu]==0.10.2"'
    if a.bucket:
        setup += f' && mkdir -p {a.mount} && (mountpoint -q {a.mount} || gcsfuse --implicit-dirs {a.bucket} {a.mount})'
    run = 'cd ~/lct_jax && ' + show(main_command(a.config, a.workdir, extra)) + ' 2>&1 | tee -a ~/lct_jax_run.log'
    cmds = [
        ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', a.name, *where, f'--accelerator-type={a.accelerator}',
         f'--version={a.runtime}'] + (['--spot'] if a.spot else []),
        ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', '--recurse', a.source, f'{a.name}:~/lct_jax', *where,
         '--worker=all'],
        ssh + [setup],
        ssh + [run],   # streams every worker's output: the logs are followed until the run ends
    ]
    if a.delete:
        cmds.append(['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', a.name, *where, '--quiet'])
    return cmds


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--name', required=True)
    p.add_argument('--zone', required=True)
    p.add_argument('--project', default='')
    p.add_argument('--accelerator', default='v4-32')
    p.add_argument('--runtime', default='tpu-ubuntu2204-base')
    p.add_argument('--spot', action='store_true')
    p.add_argument('--source', default='.', help='the lct_jax checkout to copy')
    p.add_argument('--bucket', default='', help='GCS bucket to mount with gcsfuse at --mount')
    p.add_argument('--mount', default='/mnt/bucket')
    p.add_argument('--config', required=True)
    p.add_argument('--workdir', required=True)
    p.add_argument('--delete', action='store_true', help='delete the TPU VM when the run ends')
    p.add_argument('--dry-run', action='store_true', help='print the commands, run nothing')
    own, extra = split_extra(argv)
    return p.parse_args(own), extra


def main(argv=None):
    a, extra = parse(sys.argv[1:] if argv is None else argv)
    return execute(commands(a, extra), a.dry_run)


if __name__ == '__main__':
    sys.exit(main())
