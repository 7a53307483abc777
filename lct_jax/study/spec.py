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
import json
import os
import sys

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


def _as_variant(name: str, value) -> Variant:
    if isinstance(value, str):
        return Variant(name, value)
    if isinstance(value, dict):
        unknown = set(value) - {'config', 'overrides'}
        if unknown:
            raise ValueError(f'variant {name!r}: unknown keys {sorted(unknown)}; valid: config, overrides')
        return Variant(name, value.get('config', ''), tuple(value.get('overrides', ())))
    raise ValueError(f'variant {name!r}: expected a config variant string or a dict, got {value!r}')


def study_from_dict(d: dict, source: str = '') -> Study:
    known = {'name', 'config', 'variants', 'seeds', 'baseline', 'overrides', 'eval_steps', 'eval_overrides',
             'prepare', 'notes', 'pins'}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f'{source or "study"}: unknown keys {sorted(unknown)}; valid: {sorted(known)}')
    variants = tuple(_as_variant(k, v) for k, v in d['variants'].items())
    names = [v.name for v in variants]
    baseline = d.get('baseline', names[0])
    if baseline not in names:
        raise ValueError(f'{source or "study"}: baseline {baseline!r} is not a variant; variants: {names}')
    if not d.get('seeds'):
        raise ValueError(f'{source or "study"}: no seeds')
    return Study(name=d['name'], config=d['config'], variants=variants, seeds=tuple(int(s) for s in d['seeds']),
                 baseline=baseline, overrides=tuple(d.get('overrides', ())),
                 eval_steps=tuple(int(s) for s in d.get('eval_steps', ())),
                 eval_overrides=tuple(d.get('eval_overrides', ())),
                 prepare=tuple(tuple(c) for c in d.get('prepare', ())), source=source,
                 pins=dict(d.get('pins', {})))


def load_study(path: str) -> Study:
    """A study from a .py file (its `STUDY` dict) or a .json file."""
    if path.endswith('.json'):
        with open(path) as f:
            return study_from_dict(json.load(f), path)
    spec = importlib.util.spec_from_file_location(f'_lct_study_{abs(hash(path))}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, 'STUDY'):
        raise ValueError(f'{path} defines no STUDY dict')
    return study_from_dict(module.STUDY, path)


def substitute(text: str, study_dir: str) -> str:
    return text.replace('{study_dir}', study_dir).replace('{root}', ROOT)


def config_with_variant(config: str, variant_arg: str) -> str:
    """'configs/x.py:smoke' + 'ilct' -> 'configs/x.py:smoke,ilct'."""
    path, _, base_arg = config.partition(':')
    args = [a for a in (base_arg.split(',') + variant_arg.split(',')) if a]
    return path + (':' + ','.join(args) if args else '')


def plan(study: Study, study_dir: str) -> list[Run]:
    """Every (variant, seed) of the study, variant-major, in the study file's order."""
    runs = []
    for v in study.variants:
        for seed in study.seeds:
            flags = tuple(substitute(f, study_dir) for f in study.overrides + v.overrides) + (f'--config.seed={seed}',)
            runs.append(Run(variant=v.name, seed=seed,
                            workdir=os.path.join(study_dir, 'runs', v.name, f'seed_{seed}'),
                            config=config_with_variant(study.config, v.config_arg), flags=flags,
                            eval_flags=tuple(substitute(f, study_dir) for f in study.eval_overrides)))
    return runs


def prepare_commands(study: Study, study_dir: str) -> list[list[str]]:
    return [[sys.executable if c == 'python' else substitute(c, study_dir) for c in cmd] for cmd in study.prepare]
