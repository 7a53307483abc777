"""Launcher commands for a study's runs: each run to its own slice of a cluster.

  local  one `python -m lct_jax.study run-one` line per run (train + evaluate);
         run them in any order, on any machines that share the study directory;
  slurm  one sbatch array job, task i = run i of the plan (train + evaluate);
  tpu    one `launch/tpu_pod.py` command per run (training on its own TPU VM, deleted after),
         then one `python -m lct_jax.study run` that evaluates what they trained.
The study's one-off `prepare` commands come first in every case.
"""
from __future__ import annotations

import re
import shlex

from lct_jax.study.spec import Study, plan


def show(cmd) -> str:
    return ' '.join(shlex.quote(c) for c in cmd)


def study_command(action: str, study_file: str, study_dir: str, *extra: str) -> list[str]:
    return ['python', '-m', 'lct_jax.study', action, study_file, f'--workroot={study_dir}', *extra]


def prepare_lines(study: Study, study_dir: str) -> list[str]:
    return [show(study_command('prepare', study.source, study_dir))] if study.prepare else []


def local_lines(study: Study, study_dir: str) -> list[str]:
    return prepare_lines(study, study_dir) + [
        show(study_command('run-one', study.source, study_dir, f'--variant={r.variant}', f'--seed={r.seed}'))
        for r in plan(study, study_dir)]


def slurm_script(study: Study, study_dir: str, source: str, gpus_per_task: int = 1, cpus_per_task: int = 8,
                 time: str = '24:00:00', partition: str = '') -> str:
    n = len(plan(study, study_dir))
    lines = ['#!/bin/bash', f'#SBATCH --job-name=study-{study.name}', f'#SBATCH --array=0-{n - 1}',
             '#SBATCH --ntasks=1', f'#SBATCH --cpus-per-task={cpus_per_task}', f'#SBATCH --time={time}',
             f'#SBATCH --output={study_dir}/slurm/%A_%a.out',
             '#SBATCH --signal=TERM@120   # a checkpoint is saved on SIGTERM; a resubmission resumes']
    if gpus_per_task:
        lines.append(f'#SBATCH --gpus-per-task={gpus_per_task}')
    if partition:
        lines.append(f'#SBATCH --partition={partition}')
    lines += ['set -euo pipefail', f'cd {shlex.quote(source)}',
              '# task i = run i of the plan (`python -m lct_jax.study status` lists them in this order)',
              show(study_command('run-one', study.source, study_dir)) + ' --index="$SLURM_ARRAY_TASK_ID"']
    return '\n'.join(lines) + '\n'


def slurm_lines(study: Study, study_dir: str, source: str, **kw) -> list[str]:
    path = f'{study_dir}/slurm/study.sbatch'
    return (prepare_lines(study, study_dir)
            + [f'mkdir -p {study_dir}/slurm && cat > {path} <<\'EOF\'', slurm_script(study, study_dir, source, **kw)
               + 'EOF', f'sbatch {path}'])


def tpu_name(study: Study, variant: str, seed: int) -> str:
    """TPU VM names: lowercase letters, digits and hyphens, starting with a letter, at most 63."""
    name = re.sub(r'[^a-z0-9-]+', '-', f'study-{study.name}-{variant}-s{seed}'.lower()).strip('-')
    return name[:63]


def tpu_lines(study: Study, study_dir: str, zone: str, accelerator: str = 'v4-8', bucket: str = '') -> list[str]:
    out = prepare_lines(study, study_dir)
    for r in plan(study, study_dir):
        cmd = ['python', 'launch/tpu_pod.py', f'--name={tpu_name(study, r.variant, r.seed)}', f'--zone={zone}',
               f'--accelerator={accelerator}', *([f'--bucket={bucket}'] if bucket else []),
               f'--config={r.config}', f'--workdir={r.workdir}', '--delete', '--', *r.flags]
        out.append(show(cmd) + ' &')
    out += ['wait', '# then evaluate every trained run (on any machine that sees the study directory):',
            show(study_command('run', study.source, study_dir))]
    return out


def commands(study: Study, study_dir: str, target: str, **kw) -> list[str]:
    if target == 'local':
        return local_lines(study, study_dir)
    if target == 'slurm':
        return slurm_lines(study, study_dir, **kw)
    if target == 'tpu':
        return tpu_lines(study, study_dir, **kw)
    raise ValueError(f"launch target {target!r}; valid: ('local', 'slurm', 'tpu')")
