"""The fuzz harness: mutate real files, run the real readers on them, classify every outcome.

The parent (this module) makes each case: a copy of a reader's seed case with one file mutated,
hashes it, hands it to a worker process, and hashes it again afterwards. The worker
(`python -m tests.fuzz.harness --worker`) imports JAX once and runs the entry function
`lct_jax.main` calls for that reader in-process (starting `lct_jax.main` per mutation costs
~10 s of imports), classifying exceptions exactly as `lct_jax.main` does
(`lct_jax.main._expected_errors()`: printed as one line, exit code 2). A case that does not
answer within the timeout is a hang (the worker is killed and restarted); a worker that dies
is a crash.

Outcomes (OK_OUTCOMES are the acceptable ones):
  same             the reader's result equals the unmutated file's
  valid-different  a different result, from a file an independent decoder still accepts
  error            one expected error whose first line names the mutated file (or its folder)
  error-unnamed    an expected error type that does not name the file
  traceback        an unexpected exception type (a raw traceback under lct_jax.main)
  wrong            a different result from a file no independent decoder accepts
  hang / crash     no answer within the timeout / the worker process died
  changed          the reader changed a file of the case other than those it may rewrite
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

OK_OUTCOMES = ('same', 'valid-different', 'error')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def seed_version() -> str:
    """The seed cases' cache key: the code that writes them (the corpus and the project's writers)."""
    h = hashlib.sha256()
    for rel in ('tests/fuzz/corpus.py', 'tests/fuzz/targets.py', 'lct_jax/train/checkpoints.py',
                'lct_jax/data/encode.py', 'lct_jax/data/tfrecord.py', 'lct_jax/workdir/record.py'):
        with open(os.path.join(ROOT, rel), 'rb') as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def tree_hash(folder: str, skip=()) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            rel = os.path.relpath(p, folder)
            if rel not in skip:
                with open(p, 'rb') as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


# --- the worker ------------------------------------------------------------------------

def worker_loop() -> None:
    """Read one JSON request a line ({reader, case, file, seed_root}), answer one JSON line."""
    # Answers go to a private copy of stdout: the readers' own prints go to /dev/null.
    answers = os.fdopen(os.dup(1), 'w', buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, 'w')
    import jax
    jax.config.update('jax_platforms', 'cpu')
    from lct_jax.main import _expected_errors
    from tests.fuzz import targets
    expected = _expected_errors()
    readers, originals = None, {}
    for line in sys.stdin:
        req = json.loads(line)
        if readers is None:
            readers = targets.readers(req['seed_root'])
        reader = readers[req['reader']]
        if reader.name not in originals:
            try:
                originals[reader.name] = reader.run(req['pristine'])
            except BaseException as e:  # noqa: BLE001 - the seed case itself must read: a harness bug
                originals[reader.name] = f'seed case unreadable: {type(e).__name__}: {str(e)[:200]}'
        if originals[reader.name].startswith('seed case unreadable'):
            answer = {'outcome': 'harness-error', 'detail': originals[reader.name]}
        else:
            answer = classify(reader, req['case'], req['file'], originals[reader.name], expected)
        answers.write(json.dumps(answer) + '\n')
        answers.flush()


def classify(reader, case: str, file: str, original: str, expected) -> dict:
    mutated = os.path.join(case, file)
    try:
        got = reader.run(case)
    except expected as e:
        first = f'{type(e).__name__}: {e}'.splitlines()[0]
        names = [mutated] + _ancestors(case, file, reader.name_root)
        return {'outcome': 'error' if any(n in first for n in names) else 'error-unnamed', 'detail': first[:300]}
    except BaseException as e:  # noqa: BLE001 - what would reach the user as a raw traceback
        return {'outcome': 'traceback', 'detail': f'{type(e).__name__}: {str(e)[:300]}'}
    if got == original:
        return {'outcome': 'same', 'detail': ''}
    return {'outcome': 'valid-different' if reader.valid(mutated) else 'wrong', 'detail': ''}


def _ancestors(case: str, file: str, name_root: str) -> list[str]:
    """The mutated file's folders, up to `name_root` (relative to the case), which an error may name."""
    if not name_root:
        return []
    out, d = [], os.path.dirname(file)
    while d and (d + '/').startswith(name_root.rstrip('/') + '/'):
        out.append(os.path.join(case, d))
        d = os.path.dirname(d)
    return out


class Worker:
    """A worker process (`python -m <module> --worker`) that answers one JSON line per request; a
    request with no answer in `timeout` is a hang (the worker is killed and restarted)."""

    def __init__(self, module: str = 'tests.fuzz.harness'):
        self.proc, self.module = None, module

    def ask(self, request: dict, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
            self.proc = subprocess.Popen([sys.executable, '-m', self.module, '--worker'], cwd=ROOT, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, bufsize=1)
        self.proc.stdin.write(json.dumps(request) + '\n')
        self.proc.stdin.flush()
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.close()
            return {'outcome': 'hang', 'detail': f'no answer in {timeout:.0f} s'}
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            self.proc = None
            return {'outcome': 'crash', 'detail': f'worker exited with {rc}'}
        return json.loads(line)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --- the driver ------------------------------------------------------------------------

def seed_root(cache: str | None = None) -> str:
    """The seed cases, built once (by the project's writers, in a subprocess) and kept."""
    cache = cache or os.path.join(os.environ.get('TMPDIR', '/tmp'), f'lct_jax_fuzz_seeds_{seed_version()}')
    done = os.path.join(cache, 'built')
    if not os.path.exists(done):
        tmp = cache + f'.{os.getpid()}.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        subprocess.run([sys.executable, '-c', 'import sys, jax; jax.config.update("jax_platforms", "cpu"); '
                        'from tests.fuzz import targets; targets.build_seeds(sys.argv[1])', tmp],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')))
        open(os.path.join(tmp, 'built'), 'w').close()
        try:
            os.replace(tmp, cache)
        except OSError:  # another test process built it first (pytest-xdist): use theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.exists(done):
                raise
    return cache


def plan(readers: dict, per_reader: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(reader, file, mutator) triples: `per_reader` each, cycling over the reader's files and the
    mutators for their kind, so every file and every mutator is tried."""
    from tests.fuzz import mutate, targets
    out = []
    for name, reader in readers.items():
        combos = [(f, m) for f, kind in reader.files for m in mutate.mutators_for(targets.mutation_kind(kind))]
        rng = np.random.default_rng([seed, len(out)])
        order = rng.permutation(len(combos))
        for i in range(per_reader):
            f, m = combos[order[i % len(combos)]]
            out.append((name, f, m))
    return out


def run_cases(cases, work: str, timeout: float = 60.0, seed: int = 0, log=None) -> list[dict]:
    """Every (reader, file, mutator) case, each on a fresh copy; one result dict per case."""
    from tests.fuzz import mutate, targets
    root = seed_root()
    readers = targets.readers(root)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    worker, results = Worker(), []
    try:
        for i, (name, file, mutator) in enumerate(cases):
            reader = readers[name]
            pristine = os.path.join(work, f'pristine_{reader.seed}')
            if not os.path.isdir(pristine):
                shutil.copytree(os.path.join(root, reader.seed), pristine)
            case = os.path.join(work, f'case_{i}')
            shutil.copytree(os.path.join(root, reader.seed), case)
            path = os.path.join(case, file)
            rng = np.random.default_rng([seed, i])
            kind = targets.mutation_kind(dict(reader.files)[file])
            with open(path, 'rb') as f:
                data = f.read()
            with open(path, 'wb') as f:
                f.write(mutate.mutators_for(kind)[mutator](data, rng))
            before = tree_hash(case, reader.may_change)
            start = time.time()
            answer = worker.ask({'reader': name, 'case': case, 'file': file, 'pristine': pristine, 'seed_root': root},
                                timeout)
            after = tree_hash(case, reader.may_change) if os.path.isdir(case) else {}
            if answer['outcome'] not in ('hang', 'crash') and after != before:
                changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
                answer = {'outcome': 'changed', 'detail': f'changed: {changed[:5]}'}
            results.append({'reader': name, 'file': file, 'mutator': mutator, 'seconds': round(time.time() - start, 3),
                            **answer})
            if log:
                log(results[-1])
            shutil.rmtree(case, ignore_errors=True)
    finally:
        worker.close()
    return results


def outcome_table(results: list[dict]) -> dict[str, dict[str, int]]:
    table = {}
    for r in results:
        row = table.setdefault(r['reader'], {})
        row[r['outcome']] = row.get(r['outcome'], 0) + 1
    return table


if __name__ == '__main__':
    if sys.argv[1:] == ['--worker']:
        worker_loop()


# --- real commands: the exit code and the one line, for real ---------------------------------

def real_commands(work: str, per_command: int = 1, seed: int = 0) -> list[dict]:
    """Run `lct_jax.main` / `lct_jax.study` as a user would on mutated files; each must exit with 2,
    print one `error:` line naming the file, no traceback, and change nothing else.

    The cases: a .pt whose pickle would create a directory (sample), a mutated authors' .pt
    (sample), a mutated Orbax checkpoint file (sample), a mutated manifest.json (train), a
    corrupt image in an image_dir (encode), a mutated study file (study status)."""
    from tests.fuzz import mutate
    root = seed_root()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    main = [sys.executable, '-m', 'lct_jax.main', '--config=configs/default.py:smoke', '--num_cpu_devices=1']
    out = []
    for i in range(per_command):
        rng = np.random.default_rng([seed, i])
        cases = []
        c = os.path.join(work, f'evil_{i}')
        os.makedirs(os.path.join(c, 'wd'))
        marker = os.path.join(c, 'created_by_the_pickle')
        with open(os.path.join(c, 'evil.pt'), 'wb') as f:
            f.write(mutate.evil_pickle_payload(marker))
        cases.append(('evil .pt (sample)', c, 'evil.pt', main + [f'--workdir={c}/wd', '--mode=sample',
                                                              f'--checkpoint={c}/evil.pt'], marker))
        for name, seed_dir, file, mutator, argv in (
                ("authors' .pt (sample)", 'authors', 'authors.pt', 'truncate',
                 lambda c: main + [f'--workdir={c}/wd', '--mode=sample', f'--checkpoint={c}/authors.pt']),
                ('Orbax checkpoint (sample)', 'orbax', _orbax_data_file(root), 'flip_bits',
                 lambda c: main + [f'--workdir={c}/wd', '--mode=sample']),
                ('manifest.json (train)', 'latents', 'lat/manifest.json', 'truncate',
                 lambda c: main + [f'--workdir={c}/wd', f'--config.data.latent_dir={c}/lat']),
                ('image_dir (encode)', 'images', 'img/a_rgb.png', 'random_chunk',
                 lambda c: main + [f'--workdir={c}/wd', '--mode=encode', '--config.data.source=image_dir',
                                   f'--config.data.image_dir={c}/img', f'--config.data.latent_dir={c}/lat_out']),
                ('study file (study status)', 'study', 'study.json', 'json_value',
                 lambda c: [sys.executable, '-m', 'lct_jax.study', 'status', f'{c}/study.json',
                            '--workroot', f'{c}/root'])):
            c = os.path.join(work, f'{seed_dir}_{i}_{len(cases)}')
            shutil.copytree(os.path.join(root, seed_dir), c)
            path = os.path.join(c, file)
            data = open(path, 'rb').read()
            mutated = mutate.mutators_for('json' if mutator.startswith('json') else 'generic')[mutator](data, rng)
            if mutator == 'json_value':  # a value no study accepts: a variant name that is a path
                study = json.loads(data)
                study['variants']['../../escape'] = ''
                mutated = json.dumps(study).encode()
            with open(path, 'wb') as f:
                f.write(mutated)
            cases.append((name, c, file, argv(c), None))
        for name, c, file, argv, marker in cases:
            before = tree_hash(c)
            t = time.time()
            try:
                r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                                   env=dict(os.environ, PYTHONPATH=ROOT))
                rc, err = r.returncode, r.stderr
            except subprocess.TimeoutExpired:
                rc, err = 'hang', ''
            after = tree_hash(c)
            lines = [line for line in err.splitlines() if line.startswith('error:')]
            new = sorted(k for k in set(after) - set(before) if not k.startswith(('wd/', 'root/')))
            changed = sorted(k for k in before if before[k] != after.get(k))
            ok = (rc == 2 and len(lines) == 1 and os.path.join(c, file) in lines[0] and 'Traceback' not in err
                  and not changed and not new and (marker is None or not os.path.exists(marker)))
            out.append({'command': name, 'rc': rc, 'ok': ok, 'error_line': lines[0][:300] if lines else err[-300:],
                        'changed': changed + new, 'seconds': round(time.time() - t, 1),
                        'pickle_ran': bool(marker and os.path.exists(marker))})
    return out


def _orbax_data_file(root: str) -> str:
    """An array file of the seed checkpoint (relative to the case)."""
    base = os.path.join(root, 'orbax')
    d = os.path.join(base, 'wd', 'checkpoints', '1', 'default', 'd')
    return os.path.relpath(os.path.join(d, sorted(os.listdir(d))[0]), base)
