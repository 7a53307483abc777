"""Every number we publish, checked against the command that makes it: the README's and the docs'
measured figures, regenerated where that takes minutes, read from their committed source where
it does not (a study's report, a fuzz table), and compared with what the text says.

    python benchmarks/figures.py                       # everything (about an hour on 2 CPU cores)
    python benchmarks/figures.py --only help,variants,tests,committed   # the cheap ones (~1 min)
    python benchmarks/figures.py --only default        # the README's default run (train + evaluate)

Each figure names the file and sentence it is printed in (a pattern with one group per number),
the command that measures it, and how it is compared: `exact` to the printed digits for the
deterministic ones (training and evaluation are bit-for-bit repeatable on a machine), `timing`
at most a stated factor slower for wall times (this machine is shared: the text says the load). It prints
a table of claimed against measured with a verdict per figure, writes benchmarks/figures.json and
.md, and exits 1 on any drift. tests/test_figures.py (slow) runs the cheap sources and the default
run. Run it before a change that touches sampling, evaluation or training lands.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_FACTOR = 2.5   # a wall time on this shared machine: at most this factor of the printed one


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str
    file: str           # relative to the repository
    pattern: str        # a regex matching once in the file; group i is the i-th number of `keys`
    source: str         # which measurement makes it (SOURCES)
    keys: tuple         # the measurement's keys, one per group
    kind: str = 'exact'


def _digits(printed: str) -> int:
    return len(printed.split('.')[1]) if '.' in printed else 0


def _number(printed: str) -> float:
    return float(printed.replace(',', '').replace('−', '-'))


def _minutes(printed: str) -> float:
    m = re.match(r'(\d+) min (\d+) s', printed)
    return 60 * int(m.group(1)) + int(m.group(2)) if m else _number(printed)


# --- the measurements ---------------------------------------------------------------------------

def _run(cmd: list[str], timeout: int = 7200) -> tuple[str, float]:
    t = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f'{" ".join(cmd)} exited {out.returncode}: {out.stderr[-800:]}')
    return out.stdout + out.stderr, time.time() - t


def _main(*args) -> list[str]:
    return [sys.executable, '-m', 'lct_jax.main', *args]


def train_and_evaluate(config: str, workroot: str, evaluate_flags=(), fresh: bool = False) -> dict:
    """Train `config` into its own folder of `workroot` (or find it trained), evaluate its newest
    checkpoint; the evaluation rows and the training's metrics and times."""
    name = config.split(':')[-1] if ':' in config else 'default'
    workdir = os.path.join(workroot, name)
    out = {}
    if fresh or not os.path.exists(os.path.join(workdir, 'run.json')):
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
        log, out['train_seconds'] = _run(_main(f'--config={config}', f'--workdir={workdir}'))
        rates = re.findall(r'train 2500/2500 \(100.0%\) ([\d.]+) steps/s', log)
        out['steps_per_second'] = float(rates[-1]) if rates else None
    results = os.path.join(workdir, 'results.json')
    if os.path.exists(results):
        os.remove(results)
    _, out['evaluate_seconds'] = _run(_main(f'--config={config}', f'--workdir={workdir}', '--mode=evaluate',
                                            *evaluate_flags))
    for row in json.load(open(results)):
        out[f'fd_{row["sampler"]}'] = row['fid']
        if row.get('recall') is not None:
            out[f'recall_{row["sampler"]}'] = row['recall']
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    for key in ('loss', 'ct_loss_per_weight'):
        for n in (21, 41, 81, 161):
            vals = [r[key] for r in rows if key in r and r.get('num_scales') == n]
            if vals:
                out[f'{key}_stage_mean_N{n}'] = sum(vals) / len(vals)
    return out


def help_and_variants(_workroot) -> dict:
    text, _ = _run(_main('--help'))
    listing, _ = _run(_main('--config=configs/celebahq256.py', '--mode=variants'))
    return {'help_modes': sum(m in text for m in ('train', 'encode', 'sample', 'evaluate', 'analyze')),
            'celebahq_variants': sum(1 for line in listing.splitlines() if line.startswith('  '))}


def test_counts(_workroot) -> dict:
    text, _ = _run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '-n', '0', '-p', 'no:randomly'])
    m = re.search(r'(\d+)/(\d+) tests collected \((\d+) deselected\)', text) or \
        re.search(r'(\d+) tests collected', text)
    return {'tests_selected': int(m.group(1)), 'tests_collected': int(m.group(2)), 'tests_slow': int(m.group(3))}


def committed(_workroot) -> dict:
    """Figures whose source is a committed artefact: read, not regenerated here (they take hours)."""
    out = {}
    fuzz = json.load(open(os.path.join(ROOT, 'benchmarks', 'fuzz.json')))
    out['reader_fuzz_inputs'] = sum(sum(row.values()) for row in fuzz['table'].values())
    hostile_path = os.path.join(ROOT, 'benchmarks', 'fuzz_hostile.json')
    if os.path.exists(hostile_path):
        hostile = json.load(open(hostile_path))
        out['hostile_fuzz_inputs'] = len(hostile['cases'])
    latent = json.load(open(os.path.join(ROOT, 'docs', 'study', 'latent', 'results.json')))
    for s in latent['summary']:
        if s['step'] == 2500 and s['sampler'] in ('1-step', '2-step') and \
                s['variant'] in ('sLCT', 'iLCT', 'meanflow', 'sct', 'imf'):
            out[f'latent_{s["variant"]}_{s["sampler"].replace("-", "")}_mean'] = s['mean']
    return out


SOURCES = {
    'default': lambda root: train_and_evaluate('configs/default.py', root, fresh=True),
    'ilct': lambda root: train_and_evaluate('configs/default.py:ilct', root),
    'ldm': lambda root: train_and_evaluate('configs/default.py:ldm', root),
    'ldm_heun': lambda root: {**{k + '_h10': v for k, v in train_and_evaluate(
        'configs/default.py:ldm', root, ('--config.sampling.sampler=heun', '--config.sampling.ode_steps=10')).items()},
        **{k + '_h5': v for k, v in train_and_evaluate(
            'configs/default.py:ldm', root, ('--config.sampling.sampler=heun', '--config.sampling.ode_steps=5')).items()}},
    'meanflow': lambda root: train_and_evaluate('configs/default.py:meanflow', root, fresh=True),
    'sct': lambda root: train_and_evaluate('configs/default.py:sct', root, fresh=True),
    'imf': lambda root: train_and_evaluate('configs/default.py:imf', root, fresh=True),
    'dit': lambda root: train_and_evaluate('configs/default.py:dit', root, fresh=True),
    'help': help_and_variants,
    'tests': test_counts,
    'committed': committed,
}

# --- the figures --------------------------------------------------------------------------------

FD = r'(\d+\.\d+)'
FIGURES = [
    Figure('default run: FD 1 / 2 steps', 'README.md', rf'is {FD} \(1 step\) and {FD} \(2 steps\)', 'default',
           ('fd_1-step', 'fd_2-step')),
    Figure('default run: recall 1 / 2 steps', 'README.md', rf'recall {FD} / {FD} \(', 'default',
           ('recall_1-step', 'recall_2-step')),
    Figure('default run: wall time of training', 'README.md', r'load [^)]*\): \*\*(\d+ min \d+ s)\*\*', 'default',
           ('train_seconds',), 'timing'),
    Figure('default run: evaluation time', 'README.md', r'recall [\d.]+ / [\d.]+ \(([\d.]+) s:', 'default',
           ('evaluate_seconds',), 'timing'),
    Figure('default run: loss stage means', 'README.md', r'stage means (\d+) / (\d+) / (\d+) / (\d+) at N', 'default',
           tuple(f'loss_stage_mean_N{n}' for n in (21, 41, 81, 161))),
    Figure('default run: ct/w stage means', 'README.md', r'stays comparable \(stage means ([\d.]+) / ([\d.]+) / '
           r'([\d.]+) / ([\d.]+)\)', 'default', tuple(f'ct_loss_per_weight_stage_mean_N{n}' for n in (21, 41, 81, 161))),
    Figure('results table: sLCT digits', 'README.md', rf'\| sLCT digits \(`default.py`\) \| 1 / 2 \| – \| FD {FD} / {FD} \|',
           'default', ('fd_1-step', 'fd_2-step')),
    Figure('results table: iLCT digits', 'README.md', rf'\| iLCT digits \(`default.py:ilct`\) \| 1 / 2 \| – \| FD {FD} / {FD} \|',
           'ilct', ('fd_1-step', 'fd_2-step')),
    Figure('results table: LDM-8† digits, Euler 250', 'README.md', rf'Euler \| 250 \| – \| FD {FD} \|', 'ldm',
           ('fd_euler-250',)),
    Figure('results table: LDM-8† digits, Heun 19 / 9', 'README.md', rf'Heun \| 19 / 9 \| – \| FD {FD} / {FD} \|',
           'ldm_heun', ('fd_heun-10_h10', 'fd_heun-5_h5')),
    Figure('results table: MeanFlow digits', 'README.md', rf'\| MeanFlow digits \(`default.py:meanflow`\) \| 1 / 2 \| – \| '
           rf'FD {FD} / {FD} \|', 'meanflow', ('fd_1-step', 'fd_2-step')),
    Figure('results table: sCT digits', 'README.md', rf'\| sCT digits \(`default.py:sct`\) \| 1 / 2 \| – \| FD {FD} / {FD}[^|]*\|',
           'sct', ('fd_1-step', 'fd_2-step')),
    Figure('results table: iMF digits', 'README.md', rf'\| iMF digits \(`default.py:imf`\) \| 1 / 2 \| – \| FD {FD} / {FD} \|',
           'imf', ('fd_1-step', 'fd_2-step')),
    Figure('sCT digits: wall time of training', 'docs/sct_imf.md', r'default\.py:sct` \| (\d+ min \d+ s) \|', 'sct',
           ('train_seconds',), 'timing'),
    Figure('iMF digits: wall time of training', 'docs/sct_imf.md', r'default\.py:imf` \| (\d+ min \d+ s) \|', 'imf',
           ('train_seconds',), 'timing'),
    Figure('docs: the default run, FD 1 / 2 NFE on its curve', 'docs/evaluation.md',
           rf'at step 2,500: {FD} / {FD} / [\d.]+ / [\d.]+ at 1 / 2 / 3 / 4', 'default', ('fd_1-step', 'fd_2-step')),
    Figure('docs: MeanFlow digits FD and recall', 'docs/meanflow.md', rf'FD {FD} \(1 step\) / {FD} \(2 steps\), '
           rf'recall {FD} / {FD}', 'meanflow', ('fd_1-step', 'fd_2-step', 'recall_1-step', 'recall_2-step')),
    Figure('docs: LDM-8† digits, Heun 19 NFE', 'docs/ldm_baseline.md', r'\| heun-10 \| 19 \| 1,024 \| ([\d.]+) \|',
           'ldm_heun', ('fd_heun-10_h10',)),
    Figure('docs: DiT digits FD and recall', 'docs/configs.md', rf'digits-MLP FD {FD} \(1 step\) and {FD} \(2 steps\), '
           rf'recall {FD} / {FD}', 'dit', ('fd_1-step', 'fd_2-step', 'recall_1-step', 'recall_2-step')),
    Figure('docs: the UNet default beside the DiT', 'docs/configs.md', rf'the UNet default: {FD} / {FD}\)', 'default',
           ('fd_1-step', 'fd_2-step')),
    Figure('--help names the modes', 'README.md', r'`python -m lct_jax.main --help`: the (modes)', 'help', ('help_modes',),
           'present'),
    Figure('readers fuzzed', 'README.md', r'fuzzed with ([\d,]+) mutated inputs', 'committed', ('reader_fuzz_inputs',)),
    Figure('hostile work directories fuzzed', 'README.md', r'([\d,]+) hostile work directories', 'committed',
           ('hostile_fuzz_inputs',)),
    Figure('tests collected / slow', 'docs/testing.md', r'\*\*Collected:\*\* (\d+) tests; (\d+) deselected as slow',
           'tests', ('tests_collected', 'tests_slow')),
    Figure('latent study: sLCT / iLCT 2-step FD', 'README.md', r'latent digits, 3 seeds: 2-step FD ([\d.]+) \(sLCT\) '
           r'against ([\d.]+) \(iLCT\)', 'committed', ('latent_sLCT_2step_mean', 'latent_iLCT_2step_mean')),
    Figure('latent study: sCT 1 / 2-step FD', 'README.md', r'sCT ahead of both \(([\d.]+) at 1 step, ([\d.]+) at 2\)',
           'committed', ('latent_sct_1step_mean', 'latent_sct_2step_mean')),
    Figure('docs: latent study, sCT 1 / 2-step FD', 'docs/sct_imf.md', r'\| sCT \| 1-step \| \*\*([\d.]+) ± [\d.]+\*\* .*?'
           r'\| sCT \| 2-step \| \*\*([\d.]+) ±', 'committed', ('latent_sct_1step_mean', 'latent_sct_2step_mean')),
    Figure('docs: sCT digits FD and recall', 'docs/sct_imf.md', rf'default\.py:sct` \| [^|]+ \| {FD} / {FD} \| '
           rf'{FD} / {FD} \|', 'sct', ('fd_1-step', 'fd_2-step', 'recall_1-step', 'recall_2-step')),
]


def text_of(file: str) -> str:
    """A doc's text with every run of whitespace made one space: a figure's sentence may wrap."""
    return re.sub(r'\s+', ' ', open(os.path.join(ROOT, file)).read())


def verdict(figure: Figure, printed: str, measured) -> tuple[bool, str]:
    if measured is None:
        return False, 'not measured'
    if figure.kind == 'present':
        return bool(measured), 'present' if measured else 'missing'
    if figure.kind == 'timing':
        claimed = _minutes(printed)
        ratio = measured / claimed if claimed else float('inf')
        # one-sided: a printed wall time is a measurement at the load the text states, which a quieter
        # machine beats (the slow test once measured the evaluation at x0.34 of it, idle against load 5);
        # taking more than TIMING_FACTOR times as long is the drift worth failing on
        return ratio <= TIMING_FACTOR, f'x{ratio:.2f}'
    if isinstance(measured, int) or not '.' in printed:
        return _number(printed) == round(measured), 'equal' if _number(printed) == round(measured) else 'drift'
    ok = f'{measured:.{_digits(printed)}f}' == f'{_number(printed):.{_digits(printed)}f}'
    return ok, 'equal' if ok else 'drift'


def check(sources: list[str], workroot: str, measured: dict | None = None) -> tuple[list[dict], dict]:
    """(rows, measurements): each source measured (unless `measured` holds it already: a previous
    run's, --from-json), every figure of those sources compared."""
    measured = dict(measured or {})
    for s in [s for s in sources if s not in measured]:
        print(f'measuring {s} ...', flush=True)
        t = time.time()
        try:
            measured[s] = SOURCES[s](workroot)
        except Exception as e:  # noqa: BLE001 - a source that fails is a failed figure, reported
            measured[s] = {'error': f'{type(e).__name__}: {str(e)[:300]}'}
        measured[s].update(source_seconds=round(time.time() - t), commit=head_commit(),
                           load=', '.join(f'{x:.1f}' for x in os.getloadavg()))
        print(f'  {s}: {time.time() - t:.0f} s {json.dumps(measured[s])[:300]}', flush=True)
    rows = []
    for f in FIGURES:
        if f.source not in measured:
            continue
        found = re.findall(f.pattern, text_of(f.file))
        if len(found) != 1:
            rows.append({'figure': f.name, 'file': f.file, 'claimed': None, 'measured': None, 'ok': False,
                         'verdict': f'pattern found {len(found)} times'})
            continue
        printed = found[0] if isinstance(found[0], tuple) else (found[0],)
        for key, p in zip(f.keys, printed):
            value = measured[f.source].get(key)
            ok, how = verdict(f, p, value)
            shown = value if not isinstance(value, float) else round(value, 4)
            rows.append({'figure': f.name, 'file': f.file, 'key': key, 'claimed': p, 'measured': shown, 'ok': ok,
                         'verdict': how, 'kind': f.kind})
    return rows, measured


def head_commit() -> str:
    return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def markdown(rows: list[dict], sources: list[str], seconds: float, commit: str, load: str,
             measured: dict | None = None) -> str:
    lines = ['# Published figures, regenerated', '',
             f'`python benchmarks/figures.py --only {",".join(sources)}`, compared at commit {commit} '
             f'({seconds / 60:.0f} min of measuring). exact: equal to the printed digits; timing: '
             f'no more than x{TIMING_FACTOR} the printed wall time, measured at the load the text states (a shared '
             'machine: quieter is faster). Each source was measured at:', '',
             '| source | commit | machine load (1, 5, 15 min) | seconds |', '|---|---|---|---|']
    for s in sources:
        m = (measured or {}).get(s, {})
        lines.append(f'| {s} | {m.get("commit", commit)} | {m.get("load", load)} | {m.get("source_seconds", "–")} |')
    lines += ['', '| figure | where | claimed | measured | verdict |', '|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["figure"]} ({r.get("key", "")}) | {r["file"]} | {r["claimed"]} | {r["measured"]} | '
                     f'{"ok" if r["ok"] else "**" + r["verdict"] + "**"} ({r["verdict"]}) |')
    bad = sum(not r['ok'] for r in rows)
    lines += ['', f'{len(rows)} figures, {bad} drifted.', '']
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', default=','.join(SOURCES), help=f'sources: {",".join(SOURCES)}')
    p.add_argument('--workroot', default=os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lct_jax_figures'))
    p.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'figures'))
    p.add_argument('--from-json', default='', help='take the measurements of an earlier run (its .json): '
                   'compare them with the text as it is now, measuring only the sources it lacks')
    a = p.parse_args(argv)
    sources = [s for s in a.only.split(',') if s]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        print(f'unknown sources {unknown}; valid: {list(SOURCES)}', file=sys.stderr)
        return 2
    os.makedirs(a.workroot, exist_ok=True)
    t = time.time()
    earlier = json.load(open(a.from_json)) if a.from_json else {}
    rows, measured = check(sources, a.workroot, earlier.get('measured'))
    # the time measuring took, summed over the sources (a source read from --from-json kept its own)
    seconds = sum(measured[x].get('source_seconds', 0) for x in sources if x in measured) or time.time() - t
    commit = head_commit()
    load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
    text = markdown(rows, sources, seconds, commit, load, measured)
    print(text)
    if a.out:
        with open(a.out + '.json', 'w') as f:
            json.dump({'commit': commit, 'seconds': round(seconds), 'load': load, 'sources': sources, 'rows': rows,
                       'measured': measured}, f, indent=1)
        with open(a.out + '.md', 'w') as f:
            f.write(text)
    return 0 if all(r['ok'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
