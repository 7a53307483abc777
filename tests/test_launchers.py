"""The launchers' --dry-run output for the three paper configs."""
import shlex
import subprocess
import sys

import pytest

from tests.runs import ROOT

PAPER = ['configs/celebahq256.py', 'configs/ffhq256.py', 'configs/lsun_church256.py']


def dry(script, *args):
    out = subprocess.run([sys.executable, f'launch/{script}', '--dry-run', *args], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize('config', PAPER)
def test_tpu_pod_dry_run(config):
    out = dry('tpu_pod.py', '--name', 'slct', '--zone', 'us-central2-b', '--accelerator', 'v4-32',
              '--config', config, '--workdir', '/mnt/bucket/run', '--bucket', 'my-bucket', '--delete',
              '--', '--config.autoencoder.weights=/mnt/bucket/vae.safetensors')
    lines = [shlex.split(l) for l in out.strip().splitlines()]
    assert lines[0][:9] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'slct', '--zone', 'us-central2-b',
                            '--accelerator-type=v4-32']
    assert lines[1][4:8] == ['scp', '--recurse', '.', 'slct:~/lct_jax'] and '--worker=all' in lines[1]
    assert 'jax[tpu]==0.10.2' in lines[2][-1] and 'gcsfuse --implicit-dirs my-bucket /mnt/bucket' in lines[2][-1]
    run = lines[3][-1]
    assert f'python3 -m lct_jax.main --config={config} --workdir=/mnt/bucket/run' in run
    assert '--config.autoencoder.weights=/mnt/bucket/vae.safetensors' in run and '--worker=all' in lines[3]
    assert lines[4] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'slct', '--zone', 'us-central2-b', '--quiet']


@pytest.mark.parametrize('config', PAPER)
def test_slurm_dry_run(config):
    out = dry('slurm.py', '--nodes', '2', '--gpus-per-node', '4', '--config', config, '--workdir', '/shared/w',
              '--source', '/shared/lct_jax')
    assert '#SBATCH --nodes=2' in out and '#SBATCH --ntasks-per-node=4' in out and '#SBATCH --gpus-per-task=1' in out
    assert '#SBATCH --signal=TERM@120' in out
    assert f'srun python3 -m lct_jax.main --config={config} --workdir=/shared/w' in out
    assert out.strip().endswith('sbatch /shared/w/launch/slurm.sbatch')


@pytest.mark.parametrize('config', PAPER)
def test_local_dry_run(config):
    out = dry('local.py', '--num-processes', '2', '--devices-per-process', '2', '--port', '4321',
              '--config', config, '--workdir', 'w')
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):
        assert f'-m lct_jax.main --config={config} --workdir=w --coordinator_address=127.0.0.1:4321 ' \
               f'--num_processes=2 --process_id={i} --num_cpu_devices=2' in line
