"""Entry point: python -m lct_jax.main --config configs/<run>.py[:variant] --workdir <dir> [--mode ...]

Parses flags, sets JAX options, and hands over to the library.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lct_jax import command_line, modes
from lct_jax.cache_dirs import cache_root

MODES = modes.MODES + ('variants',)

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
    """Bad input and refused starts: one line, exit 2. Imported here, with the library: --help and
    --mode=variants run without JAX."""
    from lct_jax.data.tfrecord import CorruptRecordError
    from lct_jax.models.convert import WeightsError
    from lct_jax.train.checkpoints import CheckpointError
    from lct_jax.train.loop import NonFiniteError
    from lct_jax.workdir.lock import WorkdirLockedError
    from lct_jax.workdir.session import StartRefusedError
    return (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, CorruptRecordError,
            WeightsError, CheckpointError, NonFiniteError, WorkdirLockedError, StartRefusedError)


def run(config, workdir, mode, checkpoint='', allow_config_change=False, overrides=None,
        lock_stale_seconds=120.0):
    """One mode on one work directory (lct_jax/modes). The config is checked first, before the work
    directory is made: a value out of range or a sampler the objective cannot use is one line and
    nothing written. train and encode write the directory: they hold its lock, and train keeps its
    record (lct_jax/workdir); sample, evaluate and analyze only read it, take no lock, and start
    from the run's recorded config (`overrides` on top)."""
    import importlib

    import jax

    from lct_jax import builders
    from lct_jax.names import check_workdir, prepare_workdir
    if mode not in modes.MODES:
        raise ValueError(f'--mode={mode!r}; valid: {MODES}')
    builders.check_config(config, device_count=jax.device_count())
    prepare_workdir(workdir)
    # a default latent folder is written when encoded (train, encode): it must stay inside too
    check_workdir(workdir, ('latents',) if not config.data.latent_dir and mode in ('train', 'encode') else ())
    if jax.process_index() == 0:
        print(f'lct_jax {mode}: {jax.process_count()} process(es), {jax.device_count()} '
              f'{jax.default_backend()} device(s), workdir {workdir}', flush=True)
    flags_ = modes.RunFlags(checkpoint, allow_config_change, dict(overrides or {}), lock_stale_seconds)
    # the mode's module, imported by name (the only dispatch: lct_jax/modes/__init__.py lists them)
    importlib.import_module(f'lct_jax.modes.{mode}').run(config, workdir, flags_)


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
