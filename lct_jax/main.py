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
flags.DEFINE_integer('heartbeat_timeout_seconds', 60, 'Multi-process: how long to wait for a lost '
                     'process before failing (instead of hanging).')
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
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                    heartbeat_timeout_s=FLAGS.heartbeat_timeout_seconds)
    try:
        run(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.checkpoint)
    except _expected_errors() as e:
        # Bad input: one clear message (the traceback helps nobody), a non-zero exit.
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr, flush=True)
        sys.exit(2)


def _expected_errors():
    from lct_jax.data.tfrecord import CorruptRecordError
    from lct_jax.models.convert import WeightsError
    from lct_jax.train.checkpoints import CheckpointError
    from lct_jax.train.loop import NonFiniteError
    return (ValueError, KeyError, FileNotFoundError, CorruptRecordError, WeightsError, CheckpointError,
            NonFiniteError)


def run(config, workdir, mode, checkpoint=''):
    import jax
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, 'config.json'), 'w') as f:
            f.write(config.to_json_best_effort(indent=1))
        print(f'lct_jax {mode}: {jax.process_count()} process(es), {jax.device_count()} '
              f'{jax.default_backend()} device(s), workdir {workdir}', flush=True)
    if mode == 'train':
        from lct_jax.train.loop import train
        metrics = train(config, workdir)
        if jax.process_index() == 0:
            print(f'done: step {metrics.get("final_step")}, loss {metrics.get("loss", float("nan")):.4g}, '
                  f'compiled train step {metrics.get("trace_count")} time(s)', flush=True)
    elif mode == 'encode':
        from lct_jax.cli import encode
        encode(config, workdir)
    elif mode == 'sample':
        from lct_jax.cli import sample
        sample(config, workdir, checkpoint)
    elif mode == 'evaluate':
        from lct_jax.cli import evaluate
        evaluate(config, workdir, checkpoint)
    elif mode == 'analyze':
        from lct_jax.cli import analyze
        analyze(config, workdir)


def _unknown_key_message(argv) -> str | None:
    """For `--config.a.b=v` overrides naming keys the config lacks: which key, and the valid ones."""
    import importlib.util
    spec_arg = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
    if spec_arg is None and '--config' in argv:
        spec_arg = argv[argv.index('--config') + 1]
    if spec_arg is None:
        return None
    path, _, arg = spec_arg.partition(':')
    spec = importlib.util.spec_from_file_location('_lct_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    for a in argv:
        if not a.startswith('--config.'):
            continue
        node, keys = config, a[len('--config.'):].split('=', 1)[0].split('.')
        for depth, key in enumerate(keys):
            if not hasattr(node, 'keys') or key not in node.keys():
                where = '.'.join(keys[:depth]) or 'the top level'
                valid = sorted(node.keys()) if hasattr(node, 'keys') else []
                return f'unknown config key {".".join(keys)!r}: {where} has no {key!r}; valid keys: {valid}'
            node = node[key]
    return None


def parse_flags(argv):
    """absl's flag parsing, with one-line errors for unknown config keys and bad values."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f'error: {e}', file=sys.stderr)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        try:
            message = _unknown_key_message(argv[1:])
        except Exception:  # noqa: BLE001 - fall back to the library's own message
            message = None
        print(f'error: {message or str(e).strip(chr(39))}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
    app.run(main, flags_parser=parse_flags)
