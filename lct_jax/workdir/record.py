"""The run record: what a work directory's checkpoints were trained with, and how.

Two files, written by process 0 and only once a start has succeeded (after
the checkpoint restore), never by a start that fails:
  config.json  the config in effect: written by the first start, rewritten
               only by a start whose config change was accepted;
  run.json     the history: every accepted config change (old -> new) with
               the step it took effect at, and every segment of training
               (from step, to step, when, where, with what code, libraries,
               devices and command line).
A later start compares its config with config.json (`config_changes`) and
is refused unless the change is allowed explicitly (--allow_config_change).
Settings that say where files are or how often to report, not what is
trained (`NOT_TRAINING_KEYS`), and keys that a newer version of the code
added to the config (or removed) are noted in the history without the flag:
the documented remedies (e.g. --config.train.restore_fallback=True) and a
code update must not need it.
"""
from __future__ import annotations

import json
import os
import time

from lct_jax import writer
from lct_jax.names import is_inside
from lct_jax.untrusted import UnreadableFileError
from lct_jax.untrusted import read_json as read_untrusted
from lct_jax.workdir.lock import now_iso

CONFIG_FILE = 'config.json'
RUN_FILE = 'run.json'
ABSENT = '<absent>'
ALLOW_FLAG = '--allow_config_change'

# Prefixes of keys that do not change what is trained (paths, cadence of logs, checkpoints and
# samples, checkpoint retention, the sampling/evaluation settings used outside the train step).
NOT_TRAINING_KEYS = (
    'log_every', 'checkpoint_every', 'sample_every',
    'train.keep_checkpoints', 'train.keep_period', 'train.prefetch', 'train.reader_processes',
    'train.restore_fallback',
    'data.latent_dir', 'data.image_dir', 'data.encode_batch_size', 'autoencoder.weights',
    'sampling.', 'evaluation.',
)


# Config keys whose value is a path. A run's config.json is data from whoever made the run (a copied
# work directory): a path read there never widens where a command writes (`apply_recorded`), and a
# JSON study file may not set one (study/spec.py).
PATH_KEYS = ('data.latent_dir', 'data.image_dir', 'data.tfds_data_dir', 'data.tfds_name', 'autoencoder.weights',
             'evaluation.inception_weights', 'evaluation.vgg16_weights', 'evaluation.reference_stats',
             'evaluation.save_reference_stats', 'evaluation.reference_dir', 'evaluation.comparison_dir')
# ... and of those, the ones sample / evaluate write to
WRITE_PATH_KEYS = ('evaluation.comparison_dir', 'evaluation.save_reference_stats')


class ConfigChangedError(ValueError):
    """A resume asked for a config other than the recorded one; lists the changed keys."""


# --- configs as flat tables (pure) -------------------------------------------

def config_as_dict(config) -> dict:
    """A ConfigDict as plain JSON data (tuples become lists), as config.json holds it."""
    return json.loads(config.to_json_best_effort())


def flatten(tree: dict, prefix: str = '') -> dict:
    """{'model.model_channels': 32, ...}: nested dicts to dotted keys; other values are leaves."""
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def config_changes(recorded: dict, current: dict) -> dict[str, tuple]:
    """{dotted key: (recorded value, current value)} for every key that differs (ABSENT if missing)."""
    old, new = flatten(recorded), flatten(current)
    return {k: (old.get(k, ABSENT), new.get(k, ABSENT)) for k in sorted(set(old) | set(new))
            if old.get(k, ABSENT) != new.get(k, ABSENT)}


def is_training_key(key: str) -> bool:
    return not any(key == p or (p.endswith('.') and key.startswith(p)) for p in NOT_TRAINING_KEYS)


def needs_permission(key: str, old, new) -> bool:
    """Does this change alter what is trained? A key new to the code's config (or gone from it)
    does not count: new settings come with defaults that keep the old behaviour, and the
    segment's git commit records the code."""
    return is_training_key(key) and ABSENT not in (old, new)


def format_changes(changes: dict[str, tuple]) -> str:
    def show(v):
        return v if v == ABSENT else json.dumps(v)
    return '\n'.join(f'  {k}: {show(old)} -> {show(new)}' for k, (old, new) in changes.items())


def apply_recorded(config, recorded: dict, overrides: dict, workdir: str | None = None) -> tuple[object, list[str]]:
    """(a copy of `config` with every value the record holds, then `overrides` on top; the keys of
    the record that `config` cannot take, e.g. from an older version of the code, or may not: a
    path the command would write to (WRITE_PATH_KEYS) outside `workdir`, which only the command
    line can give)."""
    merged = config.copy_and_resolve_references()
    current = flatten(config_as_dict(config))
    skipped = []
    for key, value in flatten(recorded).items():
        if key in overrides:
            continue
        if key not in current:
            skipped.append(key)
            continue
        if key in WRITE_PATH_KEYS and value and value != current[key] and not (
                workdir is not None and isinstance(value, str) and is_inside(workdir, os.path.join(workdir, value))):
            skipped.append(f'{key} (a path outside the work directory: give it on the command line to use it)')
            continue
        *path, leaf = key.split('.')
        node = merged
        for part in path:
            node = node[part]
        if isinstance(node[leaf], tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError):  # the field's type changed since the run was recorded
            skipped.append(key)
    for key, value in overrides.items():
        *path, leaf = key.split('.')
        node = merged
        for part in path:
            node = node[part]
        node[leaf] = value
    return merged, skipped


def config_of_run(config, workdir: str, overrides: dict):
    """The run's recorded config (<workdir>/config.json) with `overrides` (the command line's
    --config.* flags, {dotted key: value}) on top, so sampling and evaluating a run need not repeat
    its training flags; `config` as given if the work directory has no record. Process 0 says which."""
    import jax
    recorded = recorded_config(workdir)
    if recorded is None:
        return config
    merged, skipped = apply_recorded(config, recorded, overrides, workdir)
    if jax.process_index() == 0:
        print(f'config: the run\'s record {os.path.join(workdir, CONFIG_FILE)}'
              + (f', with {sorted(overrides)} from the command line' if overrides else '')
              + (f'; keys this code\'s config does not have, ignored: {skipped}' if skipped else ''), flush=True)
    return merged


# --- the files ---------------------------------------------------------------

def _write_atomically(path: str, data) -> None:
    writer.write_json(path, data)


def read_json(path: str, what: str = 'a run record file'):
    """A record file's content (a JSON object), None if absent; a damaged one is an error naming it."""
    if not os.path.exists(path):
        return None
    return read_untrusted(path, what, expect=dict)


def recorded_config(workdir: str) -> dict | None:
    return read_json(os.path.join(workdir, CONFIG_FILE), "the run's recorded config")


def read_run(path: str) -> dict | None:
    """run.json, its lists checked (every writer and reader of it relies on them)."""
    run = read_json(path, "the run's history")
    if run is None:
        return None
    for key in ('config_changes', 'segments'):
        value = run.setdefault(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise UnreadableFileError(f'{path}: the run\'s history: {key!r} is not a list of JSON objects; '
                                      'the file is damaged: restore it (or move it aside to start a new history)')
    return run


def latest_checkpoint_step(workdir: str) -> int | None:
    d = os.path.join(workdir, 'checkpoints')
    steps = [int(s) for s in os.listdir(d) if s.isdigit()] if os.path.isdir(d) else []
    return max(steps) if steps else None


class RunRecord:
    """config.json + run.json of one work directory (process 0 calls these)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.config_path = os.path.join(workdir, CONFIG_FILE)
        self.run_path = os.path.join(workdir, RUN_FILE)

    def check_start(self, current: dict, allow_change: bool) -> dict[str, tuple]:
        """The changes from the recorded config that this start would make; raises
        ConfigChangedError if any of them changes training and `allow_change` is not set.
        Writes nothing."""
        recorded = recorded_config(self.workdir)
        if recorded is None:
            self._check_unrecorded_checkpoints(allow_change)
        changes = config_changes(recorded, current) if recorded is not None else {}
        refused = {k: v for k, v in changes.items() if needs_permission(k, *v)}
        if refused and not allow_change:
            raise ConfigChangedError(
                f'the config differs from the one this run was recorded with ({self.config_path}):\n'
                f'{format_changes(refused)}\n'
                f'Resume with the recorded config, or pass {ALLOW_FLAG} to continue with this one '
                f'(the change is then recorded in {self.run_path} with the step it takes effect at).')
        return changes

    def _check_unrecorded_checkpoints(self, allow_change: bool) -> None:
        """Checkpoints with no config.json beside them (a run from before the record existed, or a
        directory whose record was deleted): nothing says what they were trained with, so resuming
        them with whatever config is given is refused unless the user takes that config as the record."""
        step = latest_checkpoint_step(self.workdir)
        if step is not None and not allow_change:
            raise ConfigChangedError(
                f'{self.workdir} holds checkpoints (latest: step {step}) but no record of the config they '
                f'were trained with ({self.config_path} is missing), so this config cannot be compared with '
                f'theirs. Start in an empty work directory, or pass {ALLOW_FLAG} to resume them with this '
                f'config (it becomes the record, and {self.run_path} notes that it was adopted at step {step}).')

    def begin_segment(self, current: dict, step: int, changes: dict[str, tuple], environment: dict) -> None:
        """Record a start that has succeeded at `step` (the restored checkpoint, 0 if fresh)."""
        run = read_run(self.run_path) or {'created': now_iso(), 'config_changes': [], 'segments': []}
        if step > 0 and not os.path.exists(self.config_path):  # resumed unrecorded checkpoints (allowed)
            run['config_changes'].append({
                'step': step, 'when': now_iso(), 'changes': {},
                'allowed_by': f'{ALLOW_FLAG}: checkpoints without a record; this config adopted as the record'})
        segments = run['segments']
        if segments and 'ended' not in segments[-1]:  # the last one never reached its end (SIGKILL, lost host)
            segments[-1].update(to_step=step, ended=None,
                                end=f'interrupted (no clean exit); resumed from checkpoint {step}')
        if changes:
            training = any(needs_permission(k, *v) for k, v in changes.items())
            run['config_changes'].append({
                'step': step, 'when': now_iso(),
                'changes': {k: [old, new] for k, (old, new) in changes.items()},
                'allowed_by': ALLOW_FLAG if training else 'no flag needed: no setting of training changed'})
        segments.append({'from_step': step, 'started': now_iso(), **environment})
        if changes or not os.path.exists(self.config_path):
            _write_atomically(self.config_path, current)
        _write_atomically(self.run_path, run)

    def end_segment(self, to_step: int | None, end: str) -> None:
        run = read_run(self.run_path)
        if not run or not run['segments']:
            return
        started = run['segments'][-1].get('started')
        seconds = round(time.time() - _parse_iso(started), 1) if isinstance(started, str) else None
        seconds = None if seconds != seconds else seconds  # NaN: an unreadable start time
        run['segments'][-1].update(to_step=to_step, ended=now_iso(), end=end, seconds=seconds)
        _write_atomically(self.run_path, run)


def _parse_iso(text: str) -> float:
    import datetime
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:  # a damaged record: the duration is unknown, the end is still worth recording
        return float('nan')
