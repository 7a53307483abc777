"""A study: a base config x variants x seeds (x overrides), and the runs it plans.

A study file is Python (a module-level dict `STUDY`) or JSON (the same dict):

    STUDY = dict(
        name='latent',
        config='configs/digits_latent.py',      # file[:variants]; relative to the repository root
        variants={'sLCT': '', 'iLCT': 'ilct',   # name -> the config's own variant argument, or
                  'c_rescaled': {'config': '', 'overrides': ['--config.consistency.c_schedule=scaling_rescaled']}},
        seeds=[0, 1, 2],
        baseline='iLCT',                        # paired differences are taken against this variant
        overrides=['--config.train.keep_period=500'],   # every run (training and evaluation)
        eval_steps=[500, 1000, 1500, 2000, 2500],       # checkpoints to evaluate ([] = the last only)
        eval_overrides=[],                      # evaluation only (e.g. fewer samples)
        prepare=[['python', '-m', 'lct_jax.main', ..., '--workdir={study_dir}/autoencoder']],
        pins={'{root}/docs/study/latent/inputs/vae': '<sha256>'},   # inputs every run reads (pins.py)
    )

Strings may name `{study_dir}` (the runs' root) and `{root}` (the repository).
Each run is an ordinary training run in its own work directory,
`<study_dir>/runs/<variant>/seed_<seed>`, trained with `--config.seed=<seed>`.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys

from lct_jax.names import check_component, join_inside
from lct_jax.untrusted import UnreadableFileError, read_json
from lct_jax.workdir.record import PATH_KEYS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    config_arg: str             # the config file's own variant list ('' = none)
    overrides: tuple = ()       # --config.* flags for this variant only


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    config: str                 # file[:variants]
    variants: tuple             # of Variant
    seeds: tuple
    baseline: str
    overrides: tuple = ()
    eval_steps: tuple = ()
    eval_overrides: tuple = ()
    prepare: tuple = ()         # commands (lists of strings) run once, before any run
    source: str = ''            # the study file
    pins: dict = dataclasses.field(default_factory=dict)  # {path: sha256} of inputs every run reads

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f'study {self.name!r} has no variant {name!r}; it has {[v.name for v in self.variants]}')


@dataclasses.dataclass(frozen=True)
class Run:
    """One (variant, seed): the commands that train and evaluate it, and where it lives."""
    variant: str
    seed: int
    workdir: str
    config: str                 # file[:variants] as passed to lct_jax.main
    flags: tuple                # --config.* flags (seed included), training and evaluation alike
    eval_flags: tuple           # evaluation only

    @property
    def key(self) -> str:
        return f'{self.variant}/seed_{self.seed}'


class StudyFileError(ValueError):
    """A study file that cannot be read or does not describe a study: names the file and why."""


def _strings(value, what: str) -> tuple:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'{what}: expected a list of strings, got {value!r:.80}')
    return tuple(value)


def _as_variant(name: str, value) -> Variant:
    check_component(name, 'variant name')  # it becomes <study_dir>/runs/<name>: nothing may escape
    if isinstance(value, str):
        return Variant(name, value)
    if isinstance(value, dict):
        unknown = set(value) - {'config', 'overrides'}
        if unknown:
            raise ValueError(f'variant {name!r}: unknown keys {sorted(unknown)}; valid: config, overrides')
        config = value.get('config', '')
        if not isinstance(config, str):
            raise ValueError(f'variant {name!r}: config {config!r:.60} is not a string')
        return Variant(name, config, _strings(value.get('overrides', ()), f'variant {name!r}: overrides'))
    raise ValueError(f'variant {name!r}: expected a config variant string or a dict, got {value!r}')


def check_data_overrides(flags: tuple, what: str) -> None:
    """A JSON study file is data (docs/untrusted_files.md): its flags may set config values, never
    move a run or name a file. Only `--config.<key>=<value>` of a key that is not a path."""
    for flag in flags:
        name = flag.split('=', 1)[0]
        if not name.startswith('--config.'):
            raise ValueError(f'{what}: {flag!r:.80} is refused in a JSON study file: its overrides may only '
                             'set --config.<key>=<value> (a flag that moves a run or names a file, such as '
                             '--workdir or --checkpoint, belongs in a .py study file, which is your code)')
        key = name[len('--config.'):]
        if key in PATH_KEYS or '{' in flag:
            raise ValueError(f'{what}: {flag!r:.80} is refused in a JSON study file: it names a path (a .py '
                             'study file, which is your code, may)')


def study_from_dict(d: dict, source: str = '', trusted: bool = True) -> Study:
    """A Study from its dict, every field checked (a study file is made by hand, or copied from
    elsewhere): a wrong type, a name that would become a path outside the study's root. With
    `trusted=False` (a JSON file: data), no `prepare` commands and no flag that moves a run or
    names a path."""
    try:
        study = _study_from_dict(d, source)
        if not trusted:
            if study.prepare:
                raise ValueError('`prepare` runs commands: it is refused in a JSON study file, which is data; '
                                 'put it in a .py study file (your code)')
            check_data_overrides(study.overrides, 'overrides')
            check_data_overrides(study.eval_overrides, 'eval_overrides')
            for v in study.variants:
                check_data_overrides(v.overrides, f'variant {v.name!r}: overrides')
        return study
    except (ValueError, KeyError, TypeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, KeyError):
            message = f'no {message!r}: a study needs name, config, variants and seeds'
        raise StudyFileError(f'{source or "study"}: {message}') from None


def _ints(value, what: str) -> tuple:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                      for v in value):
        raise ValueError(f'{what}: expected a list of integers, got {value!r:.80}')
    return tuple(value)


def _study_from_dict(d: dict, source: str = '') -> Study:
    if not isinstance(d, dict):
        raise ValueError(f'STUDY must be a dict, got a {type(d).__name__}')
    known = {'name', 'config', 'variants', 'seeds', 'baseline', 'overrides', 'eval_steps', 'eval_overrides',
             'prepare', 'notes', 'pins'}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f'{source or "study"}: unknown keys {sorted(unknown)}; valid: {sorted(known)}')
    name = d['name']
    check_component(name, 'study name')  # it becomes workdir/study/<name>
    if not isinstance(d['config'], str) or not d['config']:
        raise ValueError(f"config {d['config']!r:.60}: expected a config file[:variants] string")
    if not isinstance(d['variants'], dict) or not d['variants']:
        raise ValueError(f"variants: expected a non-empty dict of name -> variant, got {d['variants']!r:.80}")
    variants = tuple(_as_variant(k, v) for k, v in d['variants'].items())
    names = [v.name for v in variants]
    baseline = d.get('baseline', names[0])
    if baseline not in names:
        raise ValueError(f'{source or "study"}: baseline {baseline!r} is not a variant; variants: {names}')
    if not d.get('seeds'):
        raise ValueError(f'{source or "study"}: no seeds')
    seeds = _ints(d['seeds'], 'seeds')
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds {list(seeds)}: a seed is listed twice')
    prepare = d.get('prepare', ())
    if not isinstance(prepare, (list, tuple)):
        raise ValueError(f'prepare: expected a list of commands, got {prepare!r:.80}')
    pins = d.get('pins', {})
    if not isinstance(pins, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in pins.items()):
        raise ValueError(f'pins: expected {{path: sha256}} strings, got {pins!r:.80}')
    return Study(name=name, config=d['config'], variants=variants, seeds=seeds,
                 baseline=baseline, overrides=_strings(d.get('overrides', ()), 'overrides'),
                 eval_steps=_ints(d.get('eval_steps', ()), 'eval_steps'),
                 eval_overrides=_strings(d.get('eval_overrides', ()), 'eval_overrides'),
                 prepare=tuple(_strings(c, 'a prepare command') for c in prepare), source=source,
                 pins=dict(pins))


def load_study(path: str) -> Study:
    """A study from a .py file (its `STUDY` dict) or a .json file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'study file not found: {path}')
    if path.endswith('.json'):
        try:
            return study_from_dict(read_json(path, 'a study file', expect=dict), path, trusted=False)
        except UnreadableFileError as e:
            raise StudyFileError(str(e)) from None
    # A .py study file is code, like a config file: it is run (only name study files you trust).
    spec = importlib.util.spec_from_file_location(f'_lct_study_{abs(hash(path))}', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise StudyFileError(f'{path}: not valid Python: {e.msg} (line {e.lineno})') from None
    except Exception as e:  # noqa: BLE001 - whatever the file's own code raises, name the file
        raise StudyFileError(f'{path}: running the study file failed: {type(e).__name__}: '
                             f'{str(e).splitlines()[0] if str(e) else ""}') from None
    if not hasattr(module, 'STUDY'):
        raise StudyFileError(f'{path} defines no STUDY dict')
    return study_from_dict(module.STUDY, path)


def substitute(text: str, study_dir: str) -> str:
    return text.replace('{study_dir}', study_dir).replace('{root}', ROOT)


def config_with_variant(config: str, variant_arg: str) -> str:
    """'configs/x.py:smoke' + 'ilct' -> 'configs/x.py:smoke,ilct'."""
    path, _, base_arg = config.partition(':')
    args = [a for a in (base_arg.split(',') + variant_arg.split(',')) if a]
    return path + (':' + ','.join(args) if args else '')


def plan(study: Study, study_dir: str) -> list[Run]:
    """Every (variant, seed) of the study, variant-major, in the study file's order. Each run's
    directory is confined to the study's root: no name, and no symlink among its folders, leads
    outside it (names.join_inside)."""
    runs = []
    for v in study.variants:
        for seed in study.seeds:
            flags = tuple(substitute(f, study_dir) for f in study.overrides + v.overrides) + (f'--config.seed={seed}',)
            runs.append(Run(variant=v.name, seed=seed,
                            workdir=join_inside(study_dir, 'runs', v.name, f'seed_{seed}', what='a run directory'),
                            config=config_with_variant(study.config, v.config_arg), flags=flags,
                            eval_flags=tuple(substitute(f, study_dir) for f in study.eval_overrides)))
    return runs


def prepare_commands(study: Study, study_dir: str) -> list[list[str]]:
    return [[sys.executable if c == 'python' else substitute(c, study_dir) for c in cmd] for cmd in study.prepare]
