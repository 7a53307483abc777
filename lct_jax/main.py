"""Entry point: python -m lct_jax.main --config configs/<run>.py[:variant] --workdir <dir> [--mode ...]

Parses flags, sets JAX options, and hands over to the library.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ('train', 'encode', 'sample', 'evaluate', 'analyze')

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:variant]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs, samples and latents go.')
flags.DEFINE_enum('mode', 'train', MODES, 'What to do.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process runs '
                    'outside TPU pods / SLURM, where JAX finds it itself).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')
flags.DEFINE_integer('num_cpu_devices', None, 'Simulate this many CPU devices (testing).')
flags.DEFINE_string('checkpoint', '', 'sample/evaluate: a step dir of ours or an authors\' .pt file '
                    '(default: the latest checkpoint in --workdir).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    import jax
    if FLAGS.num_cpu_devices:
        jax.config.update('jax_num_cpu_devices', FLAGS.num_cpu_devices)
    from lct_jax import parallel
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    config = FLAGS.config
    workdir = FLAGS.workdir
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, 'config.json'), 'w') as f:
            f.write(config.to_json_best_effort(indent=1))
        print(f'lct_jax {FLAGS.mode}: {jax.process_count()} process(es), {jax.device_count()} '
              f'{jax.default_backend()} device(s), workdir {workdir}', flush=True)
    if FLAGS.mode == 'train':
        from lct_jax.train.loop import NonFiniteError, train
        try:
            metrics = train(config, workdir)
        except NonFiniteError as e:
            print(f'error: {e}', file=sys.stderr, flush=True)
            sys.exit(3)
        if jax.process_index() == 0:
            print(f'done: step {metrics.get("final_step")}, loss {metrics.get("loss", float("nan")):.4g}, '
                  f'compiled train step {metrics.get("trace_count")} time(s)', flush=True)
    elif FLAGS.mode == 'encode':
        from lct_jax.cli import encode
        encode(config, workdir)
    elif FLAGS.mode == 'sample':
        from lct_jax.cli import sample
        sample(config, workdir, FLAGS.checkpoint)
    elif FLAGS.mode == 'evaluate':
        from lct_jax.cli import evaluate
        evaluate(config, workdir, FLAGS.checkpoint)
    elif FLAGS.mode == 'analyze':
        from lct_jax.cli import analyze
        analyze(config, workdir)


if __name__ == '__main__':
    app.run(main)
