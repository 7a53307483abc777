"""The hostile-work-directory fuzz: a real run and a real exported study, received from someone else.

A seed is made once by the project's own commands (a JSON study of one smoke run, trained with
checkpoints, FID during training and an evaluation, then exported; tests/fuzz/hostile.py:build).
Each case copies it, mutates ONE thing in it, and runs ONE command that reads it, in a worker
process that imports JAX once (as the reader fuzz does, tests/fuzz/harness.py), classifying errors
as `lct_jax.main` does. Mutations (`MUTATIONS`) inject into a JSON value (config.json, run.json,
lock.json, metrics.jsonl, results.json, evaluations.jsonl, best_checkpoints.json, the checkpoint
seal and Orbax metadata, pins.json, the study file, the export's report and records):
`..` paths (aimed at the user's folder beside the roots, and at /tmp), absolute paths, NaN,
Infinity, huge and negative numbers, wrong types; or replace a file or folder with a symlink to the
user's folder. The commands (`COMMANDS`): train (resume as is, and train two more steps), sample,
evaluate, and `study run-one / report / compare / pool` on the export.

What a case must show: no file written outside the roots the command was given (the run's work
directory and, for evaluate, the comparison table in its parent; the study's work root and report
folder), the user's files unchanged (`user/`, beside the roots: notes, a table of their own, the
targets of the symlinks), no raw traceback (every error is one of lct_jax.main's expected kinds:
one line, exit 2), no hang.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = 'configs/default.py:smoke'
RUN = 'work/runs/sLCT/seed_0'          # the run, relative to a case
EXPORT = 'export'                       # the exported study
STUDY_FILE = 'study.json'
USER = 'user'                           # the user's own files, beside the roots
EVAL_FLAGS = ['--config.sampling.num_samples=16', '--config.evaluation.pr_max_real=64']
STUDY = {'name': 'hostile', 'config': SMOKE, 'variants': {'sLCT': ''}, 'seeds': [0], 'baseline': 'sLCT',
         'overrides': ['--config.total_steps=4', '--config.checkpoint_every=2', '--config.log_every=2',
                       '--config.sample_every=4', '--config.evaluation.every=2',
                       '--config.evaluation.num_samples=16', '--config.train.keep_period=2'],
         'eval_steps': [4], 'eval_overrides': EVAL_FLAGS}
OK_OUTCOMES = ('ran', 'error')


def seed_version() -> str:
    h = hashlib.sha256()
    for rel in ('tests/fuzz/hostile.py', 'lct_jax/train/checkpoints.py', 'lct_jax/workdir/record.py',
                'lct_jax/study/export.py', 'lct_jax/evaluation/results.py', 'lct_jax/train/in_training_evaluation.py'):
        with open(os.path.join(ROOT, rel), 'rb') as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def build(seed: str) -> None:
    """The seed, by the project's own commands (~1 min): study run (train + in-training FID +
    evaluate), export, report."""
    os.makedirs(os.path.join(seed, USER))
    os.makedirs(os.path.join(seed, 'work'))
    with open(os.path.join(seed, 'work', 'pinned.txt'), 'w') as f:   # an input every run reads, pinned
        f.write('the study\'s pinned input\n')
    study = dict(STUDY, pins={'{study_dir}/pinned.txt': hashlib.sha256(b"the study's pinned input\n").hexdigest()})
    with open(os.path.join(seed, STUDY_FILE), 'w') as f:
        json.dump(study, f, indent=1)
    cli = [sys.executable, '-m', 'lct_jax.study']
    for args in (['run', os.path.join(seed, STUDY_FILE), '--workroot', os.path.join(seed, 'work'), '--no-report'],
                 ['export', os.path.join(seed, STUDY_FILE), '--workroot', os.path.join(seed, 'work'),
                  '--to', os.path.join(seed, EXPORT)],
                 ['report', os.path.join(seed, STUDY_FILE), '--workroot', os.path.join(seed, EXPORT),
                  '--out', os.path.join(seed, EXPORT)]):
        subprocess.run(cli + args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=_env())
    shutil.copyfile(os.path.join(seed, 'work', 'pinned.txt'), os.path.join(seed, EXPORT, 'pinned.txt'))
    # a lock left by a job that died (a pid that cannot exist, an old heartbeat), as a copied run may hold
    with open(os.path.join(seed, RUN, 'lock.json'), 'w') as f:
        json.dump({'host': 'elsewhere', 'pid': 2 ** 22 + 1, 'job': None, 'started': '2026-01-01T00:00:00+00:00',
                   'heartbeat': time.time() - 86_400, 'heartbeat_every_s': 15.0, 'stale_after_s': 120.0,
                   'command': 'python -m lct_jax.main ...', 'token': 'f' * 32}, f, indent=1)
    # the user's own files: notes named like our table, a file a symlink will point at
    with open(os.path.join(seed, USER, 'comparison_digits.md'), 'w') as f:
        f.write('# my notes on the digits runs\n\nno table here, and nothing to lose\n')
    with open(os.path.join(seed, USER, 'results.json'), 'w') as f:
        f.write('{"mine": true}\n')
    os.makedirs(os.path.join(seed, USER, 'folder'))
    with open(os.path.join(seed, USER, 'folder', 'keep.txt'), 'w') as f:
        f.write('keep me\n')


def seed_root(cache: str | None = None) -> str:
    cache = cache or os.path.join(os.environ.get('TMPDIR', '/tmp'), f'lct_jax_hostile_seed_{seed_version()}')
    if not os.path.exists(os.path.join(cache, 'built')):
        tmp = f'{cache}.{os.getpid()}.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        open(os.path.join(tmp, 'built'), 'w').close()
        try:
            os.replace(tmp, cache)
        except OSError:   # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


# --- the files and what is injected ------------------------------------------------------------------

def targets(seed: str) -> list[str]:
    """Every file of the run and of the export that a command reads, relative to the case."""
    out = [STUDY_FILE]
    for base in (RUN, EXPORT):
        for d, dirs, files in os.walk(os.path.join(seed, base)):
            dirs[:] = sorted(x for x in dirs if x not in ('tensorboard', 'ocdbt.process_0', 'd'))
            for f in sorted(files):
                rel = os.path.relpath(os.path.join(d, f), seed)
                if f.endswith(('.json', '.jsonl')) or f in ('_CHECKPOINT_METADATA', '_METADATA'):
                    out.append(rel)
    return out


SYMLINK_TARGETS = (RUN + '/samples', RUN + '/checkpoints', RUN + '/results.json', RUN + '/results.md',
                   RUN + '/metrics.jsonl', RUN + '/evaluations.jsonl', RUN + '/best_checkpoints.json',
                   RUN + '/study_logs', 'work/runs/sLCT', EXPORT + '/runs/sLCT', EXPORT + '/results.md',
                   EXPORT + '/grids', RUN + '/lock.json')


def hostile_values(case: str, depth: int) -> list:
    """What a value may become: paths out (to the user's folder, `depth` levels up being the case;
    to /tmp), and numbers and types no writer of ours produces."""
    ups = '../' * depth
    return [f'{ups}{USER}/ESCAPED', f'x/{ups}{ups}{USER}/ESCAPED', '../../../../../../../../../../tmp/lct_escape',
            os.path.join(case, USER, 'ESCAPED'), os.path.join(case, USER), os.path.join(case, USER, 'comparison_digits.md'),
            float('nan'), float('inf'), -1, -1e300, 1e300, 10 ** 30, 0, '', [], {}, 'text', True, None]


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value[:8]):
            yield from _leaves(v, path + (i,))
    yield path


def _set(value, path, new):
    if not path:
        return new
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


def mutate(case: str, file: str, rng) -> str:
    """Inject one hostile value into one JSON leaf (or line of a .jsonl) of `file`; what was done."""
    path = os.path.join(case, file)
    text = open(path, encoding='utf-8', errors='replace').read()
    lines = text.splitlines() if file.endswith('.jsonl') else [text]
    i = int(rng.integers(0, len(lines))) if lines else 0
    try:
        value = json.loads(lines[i]) if lines else {}
    except ValueError:
        value = {}
    leaves = list(_leaves(value))
    where = leaves[int(rng.integers(0, len(leaves)))]
    depth = file.count('/')
    choices = hostile_values(case, depth)
    new = choices[int(rng.integers(0, len(choices)))]
    value = _set(value, where, new)
    if lines:
        lines[i] = json.dumps(value)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + ('\n' if file.endswith('.jsonl') else ''))
    return f'{file}:{"/".join(map(str, where)) or "(whole)"} = {new!r:.60}'


def symlink_out(case: str, target: str, rng) -> str:
    """Replace a file or folder of the case by a symlink into the user's folder."""
    path = os.path.join(case, target)
    dest = os.path.join(case, USER, 'folder' if rng.integers(0, 2) else 'results.json')
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
        dest = os.path.join(case, USER, 'folder')
    elif os.path.lexists(path):
        os.remove(path)
    os.symlink(dest, path)
    return f'{target} -> {os.path.relpath(dest, case)}'


# --- the commands ------------------------------------------------------------------------------------

COMMANDS = ('train', 'train_more', 'sample', 'evaluate', 'study_run_one', 'study_report', 'study_compare',
            'study_pool')


def roots_of(command: str) -> list[str]:
    """Where `command` may write, relative to a case."""
    if command in ('train', 'train_more', 'sample'):
        return [RUN]
    if command == 'evaluate':
        return [RUN, os.path.dirname(RUN) + '/comparison_digits.md', os.path.dirname(RUN) + '/comparison_digits.new.md']
    if command == 'study_run_one':
        return [EXPORT]
    return ['out']


def run_command(command: str, case: str) -> None:
    """In the worker: the command on the case, as `lct_jax.main` / `lct_jax.study` run it."""
    from ml_collections import config_flags  # noqa: F401  (the configs' own imports)

    from lct_jax import main as entry
    from lct_jax.study import __main__ as study_cli
    from lct_jax.study import compare, pool
    workdir = os.path.join(case, RUN)
    if command.startswith('study_'):
        study = os.path.join(case, STUDY_FILE)
        if command == 'study_run_one':
            rc = study_cli.main(['run-one', study, '--workroot', os.path.join(case, EXPORT), '--variant=sLCT', '--seed=0'])
        elif command == 'study_report':
            rc = study_cli.main(['report', study, '--workroot', os.path.join(case, EXPORT), '--out',
                                 os.path.join(case, 'out')])
        else:
            module = compare if command == 'study_compare' else pool
            try:
                rc = module.main([os.path.join(case, EXPORT, 'results.json')] * 2 + ['--out',
                                 os.path.join(case, 'out', 'table.md')])
            except SystemExit as e:
                rc = e.code
        if rc not in (0, 1, 2, None):
            raise RuntimeError(f'exit code {rc}')
        if rc == 2:
            raise ValueError('exit 2')   # one line on stderr: an expected refusal
        return
    import configs.default as default
    config = default.get_config('smoke')
    overrides = {}
    config.unlock()
    for flag in STUDY['overrides'] + ['--config.seed=0']:
        key, value = flag[len('--config.'):].split('=')
        node = config
        for part in key.split('.')[:-1]:
            node = node[part]
        node[key.split('.')[-1]] = type(node[key.split('.')[-1]])(value)
    mode = 'train'
    allow = False
    if command == 'train_more':
        config.total_steps = 6
        config.evaluation.every = 0   # not a training key: the two more steps without building an evaluator
        allow = True
    elif command in ('sample', 'evaluate'):
        mode = command
        config.sampling.num_samples = 16
        config.evaluation.pr_max_real = 64
        overrides = {'sampling.num_samples': 16, 'evaluation.pr_max_real': 64}
    config.lock()
    entry.run(config, workdir, mode, '', allow, overrides, 120.0)


def tree_state(folder: str) -> dict:
    """{relative path: sha256 or 'link -> target' or 'dir'} of everything under `folder`."""
    out = {}
    for d, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(d, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[rel] = 'link -> ' + os.readlink(p)
            elif os.path.isfile(p):
                with open(p, 'rb') as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
            else:
                out[rel] = 'dir'
    return out


def outside_changes(before: dict, after: dict, roots: list[str]) -> list[str]:
    """Paths (relative to the case) new, changed or removed outside `roots`."""
    def inside(rel):
        return any(rel == r or rel.startswith(r.rstrip('/') + '/') for r in roots)
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k) and not inside(k))


# --- the worker (one process, JAX imported once) ---------------------------------------------------

def worker_loop() -> None:
    answers = os.fdopen(os.dup(1), 'w', buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = open(os.devnull, 'w')
    import jax
    jax.config.update('jax_platforms', 'cpu')
    from absl import logging
    logging.set_verbosity(logging.ERROR)
    sys.path.insert(0, ROOT)
    from lct_jax.main import _expected_errors
    expected = _expected_errors()
    import io
    for line in sys.stdin:
        req = json.loads(line)
        sys.stderr = captured = io.StringIO()   # a study command's `error:` line
        try:
            run_command(req['command'], req['case'])
            answer = {'outcome': 'ran', 'detail': ''}
        except expected as e:
            said = [x for x in captured.getvalue().splitlines() if x.startswith('error:')]
            first = said[-1] if said and str(e) == 'exit 2' else f'{type(e).__name__}: {e}'.splitlines()[0]
            answer = {'outcome': 'error', 'detail': first[:300]}
        except SystemExit as e:   # absl / argparse exits: a clean refusal if 2, else a failure
            answer = {'outcome': 'error' if e.code in (0, 2, None) else 'traceback', 'detail': f'SystemExit {e.code}'}
        except BaseException as e:  # noqa: BLE001 - a raw traceback under lct_jax.main
            answer = {'outcome': 'traceback', 'detail': f'{type(e).__name__}: {str(e)[:300]}'}
        answers.write(json.dumps(answer) + '\n')


def Worker():
    """The reader fuzz's worker (tests/fuzz/harness.py), running this module's `worker_loop`."""
    from tests.fuzz.harness import Worker as ReaderWorker
    return ReaderWorker('tests.fuzz.hostile')


# --- the driver ---------------------------------------------------------------------------------------

def plan(count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(kind, target, command) cases: JSON injections into every target file and symlinks, each
    with the commands that read it, cycled so every file, every command and every kind is tried."""
    root = seed_root()
    run_cmds = ('train', 'train_more', 'sample', 'evaluate')
    study_cmds = ('study_run_one', 'study_report', 'study_compare', 'study_pool')
    combos = []
    for f in targets(root):
        cmds = study_cmds if f.startswith(EXPORT) or f == STUDY_FILE else run_cmds
        combos += [('json', f, c) for c in cmds]
    for t in SYMLINK_TARGETS:
        cmds = study_cmds if t.startswith(EXPORT) or t.startswith('work/runs/sLCT') and t.count('/') == 2 else run_cmds
        combos += [('symlink', t, c) for c in cmds]
    # round robin over the commands, each cycling through its own shuffled cases: any 8 in a row try
    # every command
    rng = np.random.default_rng(seed)
    by_command = {c: [x for x in combos if x[2] == c] for c in COMMANDS}
    for c in by_command:
        by_command[c] = [by_command[c][i] for i in rng.permutation(len(by_command[c]))]
    return [by_command[COMMANDS[i % len(COMMANDS)]][(i // len(COMMANDS)) % len(by_command[COMMANDS[i % len(COMMANDS)]])]
            for i in range(count)]


def run_cases(cases, work: str, timeout: float = 240.0, seed: int = 0, log=None, first: int = 0) -> list[dict]:
    """Each case in a fresh copy of the seed; case i's mutation draws from rng([seed, first + i]), so
    a plan resumed at `first` (cases[first:]) runs exactly the cases an uninterrupted run would."""
    root = seed_root()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    worker, results = Worker(), []
    escape = '/tmp/lct_escape'
    try:
        for i, (kind, target, command) in enumerate(cases, start=first):
            case = os.path.join(work, f'case_{i}')
            shutil.rmtree(case, ignore_errors=True)   # a case left by an interrupted run
            shutil.copytree(root, case, symlinks=True)
            rng = np.random.default_rng([seed, i])
            what = mutate(case, target, rng) if kind == 'json' else symlink_out(case, target, rng)
            before = tree_state(case)
            escaped_before = os.path.exists(escape)
            t = time.time()
            answer = worker.ask({'command': command, 'case': case}, timeout)
            after = tree_state(case)
            outside = outside_changes(before, after, roots_of(command))
            user = sorted(k for k in set(before) | set(after) if k.startswith(USER + '/') and before.get(k) != after.get(k))
            if os.path.exists(escape) and not escaped_before:
                outside.append(escape)
            results.append({'kind': kind, 'target': target, 'command': command, 'mutation': what,
                            'seconds': round(time.time() - t, 2), **answer,
                            'outside_writes': outside[:8], 'user_files_changed': user[:8]})
            if log:
                log(results[-1])
            shutil.rmtree(case, ignore_errors=True)
            shutil.rmtree(escape, ignore_errors=True) if os.path.isdir(escape) else None
    finally:
        worker.close()
    return results


def bad(result: dict) -> bool:
    return result['outcome'] not in OK_OUTCOMES or bool(result['outside_writes']) or bool(result['user_files_changed'])


def table(results: list[dict]) -> dict:
    out = {}
    for r in results:
        row = out.setdefault(r['command'], {'inputs': 0, 'ran': 0, 'error': 0, 'traceback': 0, 'hang': 0, 'crash': 0,
                                            'outside_writes': 0, 'user_files_changed': 0})
        row['inputs'] += 1
        row[r['outcome']] = row.get(r['outcome'], 0) + 1
        row['outside_writes'] += bool(r['outside_writes'])
        row['user_files_changed'] += bool(r['user_files_changed'])
    return out


if __name__ == '__main__':
    if sys.argv[1:] == ['--worker']:
        worker_loop()
