"""Entry point: python -m lct_jax.main --config configs/<run>.py[:variant] --workdir <dir> [--mode ...]

Parses flags, sets JAX options, and hands over to the library.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lct_jax import command_line
from lct_jax.cache_dirs import cache_root

MODES = ('train', 'encode', 'sample', 'evaluate', 'analyze', 'train_autoencoder', 'variants')

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
flags.DEFINE_string('checkpoints', '', 'evaluate: "all" or steps separated by commas (e.g. 500,1000): '
                    'each not yet evaluated is evaluated, resumably, and FID is drawn over the steps and over '
                    'the samplers\' NFE (docs/evaluation.md, "Curves"). --checkpoint=all and --checkpoint=500,1000 '
                    'do the same.')
flags.DEFINE_bool('allow_config_change', False, 'train: resume with a config that differs from the run\'s '
                  'recorded one (config.json); the change is recorded in run.json with its step.')
flags.DEFINE_float('lock_stale_seconds', 120.0, 'train/encode: take over a work directory lock whose '
                   'heartbeat is older than this (a dead pid on the same host is taken over at once).')
flags.DEFINE_string('compilation_cache_dir', None, 'JAX\'s persistent compilation cache: programs compiled '
                    'once are reused by later runs, resumes and evaluations of the same shapes. Default: '
                    '$JAX_COMPILATION_CACHE_DIR if set, else <lct_jax cache>/xla (lct_jax/cache_dirs.py); '
                    '"" turns it off.')
flags.mark_flags_as_required(['config'])  # --workdir too, except for --mode=variants (parse_flags)


def set_compilation_cache(value: str | None) -> str:
    """Point JAX's persistent compilation cache at `value` (None: the default above); the directory used.

    Why on by default: an evaluation spends about half its CPU time compiling the
    samplers (measured: 23.2 s -> 11.8 s user time for one pixel-study evaluation), and a
    study compiles the same programs for ~100 evaluations and 21 trainings."""
    import jax
    if value is None:
        value = os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join(cache_root(), 'xla')
    if value:
        jax.config.update('jax_compilation_cache_dir', value)
    else:  # off, even if the environment names a directory
        jax.config.update('jax_enable_compilation_cache', False)
    return value


def main(argv):
    del argv
    if FLAGS.mode == 'variants':  # a listing: no JAX, no work directory
        print(command_line.variants_listing(command_line.config_arg(sys.argv[1:]).partition(':')[0]))
        return
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    import jax
    if FLAGS.num_cpu_devices:
        jax.config.update('jax_num_cpu_devices', FLAGS.num_cpu_devices)
    set_compilation_cache(FLAGS.compilation_cache_dir)
    from lct_jax import parallel
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                    heartbeat_timeout_s=FLAGS.heartbeat_timeout_seconds)
    try:
        run(FLAGS.config, FLAGS.workdir, FLAGS.mode, checkpoint_arg(FLAGS.checkpoint, FLAGS.checkpoints, FLAGS.mode),
            FLAGS.allow_config_change,
            config_flags.get_override_values(FLAGS['config']), FLAGS.lock_stale_seconds)
    except _expected_errors() as e:
        # Bad input: one clear message (the traceback helps nobody), a non-zero exit.
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr, flush=True)
        sys.exit(2)


def checkpoint_arg(checkpoint: str, checkpoints: str, mode: str) -> str:
    """--checkpoint, or --checkpoints as the curves' form of it: 'all', or the steps with a trailing
    comma, so that a single step listed is still a curve (evaluation/curves.py:wants_curves)."""
    if not checkpoints:
        return checkpoint
    if checkpoint:
        raise ValueError('give --checkpoint (one checkpoint) or --checkpoints (curves), not both')
    if mode != 'evaluate':
        raise ValueError(f'--checkpoints is for --mode=evaluate, not --mode={mode}')
    return checkpoints if checkpoints == 'all' else checkpoints.rstrip(',') + ','


def _expected_errors():
    from lct_jax.data.tfrecord import CorruptRecordError
    from lct_jax.models.convert import WeightsError
    from lct_jax.train.checkpoints import CheckpointError
    from lct_jax.train.loop import NonFiniteError
    from lct_jax.workdir.lock import WorkdirLockedError
    from lct_jax.workdir.session import StartRefusedError
    return (ValueError, KeyError, FileNotFoundError, CorruptRecordError, WeightsError, CheckpointError,
            NonFiniteError, WorkdirLockedError, StartRefusedError)


def run(config, workdir, mode, checkpoint='', allow_config_change=False, overrides=None,
        lock_stale_seconds=120.0):
    """One mode on one work directory. train and encode write it: they hold its lock, and train
    keeps its record (lct_jax/workdir); sample, evaluate and analyze only read it, take no lock,
    and sample/evaluate start from the run's recorded config (`overrides` on top)."""
    import jax
    from lct_jax.workdir.session import WriterSession
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        print(f'lct_jax {mode}: {jax.process_count()} process(es), {jax.device_count()} '
              f'{jax.default_backend()} device(s), workdir {workdir}', flush=True)
    if mode == 'train':
        from lct_jax.train.loop import finished_step, train
        done = finished_step(config, workdir)
        if done is not None:  # nothing to do: write nothing
            if jax.process_index() == 0:
                print(f'{workdir}: already at step {done} of {config.total_steps}: nothing to train; '
                      f'to continue, raise --config.total_steps (with {"--allow_config_change"}, '
                      'which records the change in run.json)', flush=True)
            return
        with WriterSession(workdir, config, allow_config_change, lock_stale_seconds) as session:
            metrics = train(config, workdir, on_start=session.on_start)
            final = metrics.get('final_step')
            session.finish(final, 'finished' if final == config.total_steps else 'stopped by signal')
        if jax.process_index() == 0:
            loss = f', loss {float(metrics["loss"]):.4g}' if 'loss' in metrics else ''
            print(f'done: step {final}{loss}, compiled train step {metrics.get("trace_count")} time(s)',
                  flush=True)
    elif mode == 'encode':
        from lct_jax.cli import encode
        with WriterSession(workdir, None, stale_after_s=lock_stale_seconds):
            encode(config, workdir)
    elif mode in ('sample', 'evaluate'):
        from lct_jax import cli
        config = cli.config_of_run(config, workdir, overrides or {})
        (cli.sample if mode == 'sample' else cli.evaluate)(config, workdir, checkpoint)
    elif mode == 'analyze':
        from lct_jax.cli import analyze
        analyze(config, workdir)
    elif mode == 'train_autoencoder':  # lct_jax/autoencoder_training.py (e.g. configs/digits_latent.py)
        from lct_jax.autoencoder_training import train_autoencoder
        with WriterSession(workdir, None, stale_after_s=lock_stale_seconds):
            train_autoencoder(config, workdir)


def parse_flags(argv):
    """absl's flag parsing, with a help that exits 0 and one-line errors (with the nearest valid
    name) for unknown config keys and variants, and for bad values."""
    args = argv[1:]
    command_line.make_config_package_importable(args)
    if command_line.wants_help(args):
        print(command_line.help_text(FLAGS))
        sys.exit(0)
    try:
        message = command_line.unknown_variant_message(args)
    except Exception:  # noqa: BLE001 - the config file's own error comes from the parse below
        message = None
    if message:
        print(f'error: {message}', file=sys.stderr)
        sys.exit(2)
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        print(f'error: {_first_paragraph(str(e))}', file=sys.stderr)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        try:
            message = command_line.unknown_key_message(args)
        except Exception:  # noqa: BLE001 - fall back to the library's own message
            message = None
        print(f'error: {message or str(e).strip(chr(39))}', file=sys.stderr)
    else:
        if FLAGS.mode != 'variants' and not FLAGS.workdir:
            print(f'error: --workdir is required for --mode={FLAGS.mode} (see --help)', file=sys.stderr)
            sys.exit(2)
        return rest
    sys.exit(2)


def _first_paragraph(text: str) -> str:
    """absl's message without a traceback that ml_collections may have pasted into it (a config
    file's own error): its first line and, if there is one, the exception's last line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if any(line.startswith('Traceback') for line in lines):
        return f'{lines[0]} {lines[-1]}'
    return text


if __name__ == '__main__':
    app.run(main, flags_parser=parse_flags)
