"""The study tool (lct_jax/study): plan, progress, bootstrap and paired differences, report, launcher
commands on fixed numbers; and (slow) a tiny real study that is killed, resumed and aggregated."""
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lct_jax.study import aggregate, launch, progress, report
from lct_jax.study.spec import load_study, plan, study_from_dict
from tests.runs import ROOT, env

TINY = dict(name='tiny', config='configs/default.py:smoke', variants={'sLCT': '', 'iLCT': 'ilct'}, seeds=[0, 1],
            baseline='iLCT',
            overrides=['--config.total_steps=10', '--config.checkpoint_every=10', '--config.sample_every=10',
                       '--config.log_every=5', '--config.sampling.num_grid=4'],
            eval_overrides=['--config.sampling.num_samples=64'])


# --- statistics on fixed numbers -------------------------------------------------------------

def test_bootstrap_two_values_is_their_range():
    # n = 2: the resampled mean is a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% points are exactly a and b.
    assert aggregate.bootstrap_interval([3.0, 7.0]) == (3.0, 7.0)


def test_bootstrap_exact_enumeration_matches_a_brute_force_distribution():
    v = np.array([1.0, 2.0, 4.0, 8.0])
    means = sorted(np.mean([v[i], v[j], v[k], v[l]]) for i in range(4) for j in range(4)
                   for k in range(4) for l in range(4))        # all 256 equally likely resamples
    lo = means[int(np.ceil(0.025 * 256)) - 1]
    hi = means[int(np.ceil(0.975 * 256)) - 1]
    assert aggregate.bootstrap_interval(v) == (lo, hi) == (1.5, 6.5)  # 7th and 250th of 256


def test_bootstrap_monte_carlo_equals_numpy_and_the_normal_closed_form():
    v = np.random.default_rng(1).normal(10.0, 2.0, size=50)
    lo, hi = aggregate.bootstrap_interval(v)
    idx = np.random.default_rng(0).integers(0, 50, size=(aggregate.NUM_RESAMPLES, 50))
    assert (lo, hi) == tuple(np.quantile(v[idx].mean(1), [0.025, 0.975], method='inverted_cdf'))
    half = 1.959964 * v.std(ddof=0) / np.sqrt(50)   # the bootstrap distribution of a mean is ~ N(mean, s^2/n)
    assert abs(lo - (v.mean() - half)) < 0.06 * half and abs(hi - (v.mean() + half)) < 0.06 * half


def test_summary_pairs_seeds_with_the_baseline():
    rows = [dict(variant=v, seed=s, sampler='1-step', step=10, fd=fd) for v, s, fd in
            [('base', 0, 1.0), ('base', 1, 2.0), ('base', 2, 3.0),
             ('new', 0, 1.5), ('new', 1, 2.1), ('new', 2, 3.9), ('half', 0, 5.0), ('half', 3, 9.0)]]
    summary = {e['variant']: e for e in aggregate.summarise(rows, ['base', 'new', 'half'], 'base')}
    new = summary['new']
    assert new['n'] == 3 and new['mean'] == pytest.approx(2.5) and new['std'] == pytest.approx(np.std([1.5, 2.1, 3.9], ddof=1))
    d = new['vs_baseline']
    assert d['seeds'] == [0, 1, 2] and d['mean'] == pytest.approx(0.5) and d['std'] == pytest.approx(0.4)
    assert d['ci95'] == pytest.approx(list(aggregate.bootstrap_interval([0.5, 0.1, 0.9])))
    # n = 3: each of the 27 resamples has probability 1/27 > 2.5%, so the interval is [min, max] exactly
    assert d['ci95'] == pytest.approx([0.1, 0.9])
    # Student-t: 0.5 ± t_{2, 0.975} (4.302653) * 0.4 / sqrt(3)
    assert d['t95'] == pytest.approx([0.5 - 4.302653 * 0.4 / 3 ** 0.5, 0.5 + 4.302653 * 0.4 / 3 ** 0.5], rel=1e-6)
    assert 't95' not in aggregate.describe([1.0])
    assert summary['half']['vs_baseline']['seeds'] == [0] and summary['half']['vs_baseline']['mean'] == 4.0
    assert 'vs_baseline' not in summary['base']


# --- plan, progress, report, launch on fake work directories ---------------------------------

def fake_run(workdir, total=10, ckpts=(10,), evaluated=(10,), lock=None):
    os.makedirs(workdir, exist_ok=True)
    json.dump({'total_steps': total}, open(os.path.join(workdir, 'config.json'), 'w'))
    for s in ckpts:
        os.makedirs(os.path.join(workdir, 'checkpoints', str(s)), exist_ok=True)
    rows = [dict(checkpoint=f'step {s}:ema_0.99', sampler=smp, fid=float(s) + (smp == '2-step'), nfe=1)
            for s in evaluated for smp in ('1-step', '2-step')]
    json.dump(rows, open(os.path.join(workdir, 'results.json'), 'w'))
    if lock is not None:
        json.dump(lock, open(os.path.join(workdir, 'lock.json'), 'w'))


def test_plan_and_progress_states(tmp_path):
    study = study_from_dict(TINY, 'tiny.json')
    runs = plan(study, str(tmp_path))
    assert [r.key for r in runs] == ['sLCT/seed_0', 'sLCT/seed_1', 'iLCT/seed_0', 'iLCT/seed_1']
    assert runs[2].config == 'configs/default.py:smoke,ilct' and runs[2].flags[-1] == '--config.seed=0'
    assert runs[3].workdir == os.path.join(str(tmp_path), 'runs', 'iLCT', 'seed_1')
    fake_run(runs[0].workdir)                                              # done
    fake_run(runs[1].workdir, ckpts=(5,), evaluated=())                    # partial (killed at 5)
    fake_run(runs[2].workdir, evaluated=())                                # trained, not evaluated
    import socket
    fake_run(runs[3].workdir, ckpts=(5,), evaluated=(), lock={'host': socket.gethostname(), 'pid': os.getpid(),
                                                              'heartbeat': time.time()})
    entries, view = progress.progress_table(runs, ())
    assert [e['state'] for e in entries] == ['done', 'partial', 'trained', 'running']
    assert entries[2]['to_evaluate'] == [10]
    assert '1 done, 1 running, 1 trained, 1 partial' in view and 'lock.json' in view
    # a lock left by a dead process is not a running job
    json.dump({'host': socket.gethostname(), 'pid': 2 ** 22 + 12345, 'heartbeat': time.time()},
              open(os.path.join(runs[3].workdir, 'lock.json'), 'w'))
    assert progress.run_state(runs[3].workdir)['state'] == 'partial'
    assert progress.run_state(str(tmp_path / 'nothing'))['state'] == 'missing'


def test_report_uses_finished_runs_and_names_the_rest(tmp_path):
    study = study_from_dict(TINY, 'tiny.json')
    runs = plan(study, str(tmp_path / 'w'))
    for r in runs[:3]:
        fake_run(r.workdir)
    entries, _ = progress.progress_table(runs, ())
    result = report.write_report(study, runs, entries, str(tmp_path / 'out'))
    assert len(result['runs']) == 6 and set(result['runs'][0]) >= {'variant', 'seed', 'sampler', 'step', 'fd'}
    md = open(tmp_path / 'out' / 'results.md').read()
    assert 'iLCT/seed 1 (missing)' in md and '| sLCT | 1-step | 2 | 10.000 ± 0.000 |' in md
    assert '| iLCT | 1-step | 1 | 10.000 ± – |' in md          # one seed: no spread to show
    assert os.path.getsize(tmp_path / 'out' / 'curves.png') > 1000
    assert json.load(open(tmp_path / 'out' / 'results.json'))['final_step'] == 10


def test_launch_commands(tmp_path):
    path = tmp_path / 'tiny.json'
    path.write_text(json.dumps(TINY))
    # `prepare` (commands) only in a .py study file, which is the user's code (docs/untrusted_files.md)
    study = dataclasses.replace(load_study(str(path)), prepare=(('python', '-m', 'lct_jax.main', '--workdir={study_dir}/ae'),))
    local = launch.commands(study, '/w', 'local')
    assert shlex.split(local[0]) == ['python', '-m', 'lct_jax.study', 'prepare', str(path), '--workroot=/w']
    assert shlex.split(local[1])[3:] == ['run-one', str(path), '--workroot=/w', '--variant=sLCT', '--seed=0']
    assert len(local) == 5
    slurm = '\n'.join(launch.commands(study, '/w', 'slurm', source='/src'))
    assert '#SBATCH --array=0-3' in slurm and '--index="$SLURM_ARRAY_TASK_ID"' in slurm and 'cd /src' in slurm
    tpu = launch.commands(study, '/w', 'tpu', zone='us-central2-b')
    first = shlex.split(tpu[1].rstrip(' &'))
    assert first[:3] == ['python', 'launch/tpu_pod.py', '--name=study-tiny-slct-s0']
    assert '--workdir=/w/runs/sLCT/seed_0' in first and first[-1] == '--config.seed=0'
    assert tpu[-1].startswith('python -m lct_jax.study run ')
    # the CLI prints the same
    out = subprocess.run([sys.executable, '-m', 'lct_jax.study', 'launch', str(path), '--workroot=/w', '--target=slurm'],
                         cwd=ROOT, env=env(), capture_output=True, text=True, check=True).stdout
    assert '#SBATCH --array=0-3' in out


def test_runner_skips_done_work_leaves_locked_runs_and_runs_k_at_a_time(tmp_path, monkeypatch):
    """The scheduling logic with `lct_jax.main` replaced by a fake that writes what a run writes."""
    import socket
    import threading

    from lct_jax.study import runner
    study = study_from_dict(dict(TINY, prepare=[['python', '-c', 'pass']]), 'tiny.json')
    runs = plan(study, str(tmp_path))
    fake_run(runs[0].workdir)                                              # done before we start
    fake_run(runs[1].workdir, ckpts=(), evaluated=(),                      # held by a live job
             lock={'host': socket.gethostname(), 'pid': os.getpid(), 'heartbeat': time.time()})
    calls, active, peak, guard = [], [0], [0], threading.Lock()

    def fake_call(cmd, log_path, cpus=None):
        with guard:
            calls.append(cmd)
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)
        wd = next((a.split('=', 1)[1] for a in cmd if a.startswith('--workdir=')), None)
        if '--mode=evaluate' in cmd:
            rows = json.load(open(os.path.join(wd, 'results.json')))
            rows += [dict(checkpoint='step 10:ema_0.99', sampler=smp, fid=1.0, nfe=1) for smp in ('1-step', '2-step')]
            json.dump(rows, open(os.path.join(wd, 'results.json'), 'w'))
        elif wd is not None:
            fake_run(wd, evaluated=())                                     # trained to step 10
        with guard:
            active[0] -= 1
        return 0

    monkeypatch.setattr(runner, '_call', fake_call)
    outcome = runner.run_study(study, str(tmp_path), parallel=2)
    assert outcome == {'sLCT/seed_0': 'done', 'sLCT/seed_1': 'running', 'iLCT/seed_0': 'done', 'iLCT/seed_1': 'done'}
    touched = [next((a for a in c if a.startswith('--workdir=')), 'prepare') for c in calls]
    assert touched.count('prepare') == 1 and f'--workdir={runs[0].workdir}' not in touched
    assert f'--workdir={runs[1].workdir}' not in touched and peak[0] == 2   # two at a time
    assert len(calls) == 1 + 2 * 2                                         # prepare + (train, evaluate) x 2
    calls.clear()
    assert runner.run_study(study, str(tmp_path), parallel=2)['iLCT/seed_1'] == 'done' and calls == []
    # a chosen checkpoint that was not kept is an error naming the fix
    lost = study_from_dict(dict(TINY, eval_steps=[5, 10]), 'tiny.json')
    with pytest.raises(runner.RunFailed, match='keep_period'):
        runner.run_one(plan(lost, str(tmp_path))[2], lost.eval_steps)


def finish_record(workdir, step=10):
    """The run record of a training segment that finished at `step` (what main.py writes)."""
    json.dump({'segments': [{'from_step': 0, 'to_step': step, 'end': 'finished'}]},
              open(os.path.join(workdir, 'run.json'), 'w'))


def test_a_finished_run_whose_checkpoints_were_pruned_is_still_done(tmp_path):
    wd = str(tmp_path / 'r')
    fake_run(wd, ckpts=(), evaluated=(10,))
    assert progress.run_state(wd)['state'] == 'partial'        # no checkpoint, no record: cannot tell
    finish_record(wd)
    assert progress.run_state(wd)['state'] == 'done'
    assert progress.run_state(wd, (5, 10))['state'] == 'trained'   # step 5 never evaluated
    finish_record(wd, step=5)                                  # a segment stopped early is not the end
    assert progress.run_state(wd)['state'] == 'partial'


def test_export_keeps_records_not_checkpoints_and_a_copy_of_it_resumes_the_study(tmp_path, monkeypatch):
    from lct_jax.study import export, runner
    study = study_from_dict(TINY, 'tiny.json')
    root, dest, fresh = str(tmp_path / 'root'), str(tmp_path / 'export'), str(tmp_path / 'fresh')
    runs = plan(study, root)
    for r in runs[:3]:
        fake_run(r.workdir)
        finish_record(r.workdir)
        os.makedirs(os.path.join(r.workdir, 'samples'))
        open(os.path.join(r.workdir, 'samples', 'step_10_1step.png'), 'wb').write(b'png')
        np.savez(os.path.join(r.workdir, 'samples', 'samples_10.npz'), x=np.zeros(3))
        json.dump({'pid': 1}, open(os.path.join(r.workdir, 'lock.json'), 'w'))
    fake_run(runs[3].workdir, ckpts=(5,), evaluated=())                 # partial: not exported
    outcome = export.export_runs(runs, root, dest)
    assert outcome == {'sLCT/seed_0': 'exported', 'sLCT/seed_1': 'exported', 'iLCT/seed_0': 'exported',
                       'iLCT/seed_1': 'partial'}
    got = sorted(os.path.relpath(os.path.join(dp, f), dest) for dp, _, fs in os.walk(dest) for f in fs)
    assert got == sorted(os.path.join('runs', v, f'seed_{s}', f) for v, s in (('sLCT', 0), ('sLCT', 1), ('iLCT', 0))
                         for f in ('config.json', 'results.json', 'run.json', os.path.join('samples', 'step_10_1step.png')))
    assert export.export_runs(runs, root, dest)['sLCT/seed_0'] == 'up to date'
    # the export reports the same numbers as the root it came from
    exported = plan(study, dest)
    a = report.write_report(study, runs, progress.progress_table(runs, ())[0], str(tmp_path / 'a'))
    b = report.write_report(study, exported, progress.progress_table(exported, ())[0], str(tmp_path / 'b'))
    assert a['summary'] == b['summary'] and len(b['runs']) == 6
    # copied into a fresh root, it leaves only the missing run to train
    shutil.copytree(os.path.join(dest, 'runs'), os.path.join(fresh, 'runs'))
    calls = []
    monkeypatch.setattr(runner, '_call', lambda cmd, log, cpus=None: calls.append(cmd) or 1)
    outcome = runner.run_study(study, fresh)
    assert [k for k, v in outcome.items() if v == 'done'] == ['sLCT/seed_0', 'sLCT/seed_1', 'iLCT/seed_0']
    assert outcome['iLCT/seed_1'].startswith('failed') and len(calls) == 1
    assert f'--workdir={plan(study, fresh)[3].workdir}' in calls[0]


def test_parallel_runs_are_pinned_to_disjoint_cpu_slices(tmp_path, monkeypatch):
    import threading

    from lct_jax.study import runner
    assert runner.cpu_slices(2, 1, cpus={0, 1}) == [frozenset({0}), frozenset({1})]
    assert runner.cpu_slices(2, 2, cpus={0, 1, 2, 3, 5}) == [frozenset({0, 1}), frozenset({2, 3})]
    with pytest.raises(ValueError, match='need 4 CPUs; this process may use 2'):
        runner.cpu_slices(2, 2, cpus={0, 1})
    # a real subprocess started by _call runs on its slice, with BLAS pools sized to it
    cpu = min(os.sched_getaffinity(0))
    log = tmp_path / 'log.txt'
    probe = 'import os; print(sorted(os.sched_getaffinity(0)), os.environ["OMP_NUM_THREADS"])'
    assert runner._call([sys.executable, '-c', probe], str(log), frozenset({cpu})) == 0
    assert f'[{cpu}] 1' in log.read_text() and f'# on CPUs [{cpu}]' in log.read_text()
    # run_study hands each concurrent run its own slice and never two runs the same one
    study = study_from_dict(TINY, 'tiny.json')
    held, seen, guard = set(), [], threading.Lock()

    def fake_run_one(run, eval_steps=(), cpus=None, pins=None):
        with guard:
            assert cpus not in held
            held.add(cpus)
            seen.append(cpus)
        time.sleep(0.2)
        with guard:
            held.discard(cpus)
        return 'done'

    monkeypatch.setattr(runner, 'run_one', fake_run_one)
    monkeypatch.setattr(runner, 'cpu_slices', lambda parallel, per_run: [frozenset({0}), frozenset({1})])
    outcome = runner.run_study(study, str(tmp_path / 'w'), parallel=2, cpus_per_run=1)
    assert set(outcome.values()) == {'done'} and len(outcome) == 4
    assert sorted(seen, key=sorted) == [frozenset({0})] * 2 + [frozenset({1})] * 2


# --- a tiny real study: killed, resumed, aggregated -----------------------------------------

def study_cli(*args):
    return [sys.executable, '-m', 'lct_jax.study', *args]


def segments(workdir):
    return json.load(open(os.path.join(workdir, 'run.json')))['segments']


@pytest.mark.slow
def test_tiny_study_runs_resumes_after_a_kill_and_aggregates(tmp_path):
    spec = tmp_path / 'tiny.json'
    spec.write_text(json.dumps(TINY))
    work, out = tmp_path / 'w', tmp_path / 'out'
    runs = plan(load_study(str(spec)), str(work))
    log = open(tmp_path / 'first.log', 'w')
    first = subprocess.Popen(study_cli('run', str(spec), f'--workroot={work}', f'--out={out}'), cwd=ROOT, env=env(),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while progress.run_state(runs[0].workdir)['state'] != 'done':   # the first run finished and evaluated
        assert first.poll() is None, open(tmp_path / 'first.log').read()[-3000:]
        assert time.time() - t0 < 900
        time.sleep(0.5)
    time.sleep(3)  # into the second run
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_rows = progress.evaluation_rows(runs[0].workdir)
    assert len(done_rows) == 2 and len(segments(runs[0].workdir)) == 1
    # the progress view and a report on what has finished so far, naming the rest
    status = subprocess.run(study_cli('status', str(spec), f'--workroot={work}'), cwd=ROOT, env=env(),
                            capture_output=True, text=True, check=True).stdout
    assert status.startswith('4 runs: 1 done') and 'running' not in status.splitlines()[0], status
    subprocess.run(study_cli('report', str(spec), f'--workroot={work}', f'--out={tmp_path / "partial"}'), cwd=ROOT,
                   env=env(), capture_output=True, text=True, check=True)
    partial = json.load(open(tmp_path / 'partial' / 'results.json'))
    assert {(r['variant'], r['seed']) for r in partial['runs']} == {('sLCT', 0)}
    assert 'iLCT/seed 1 (missing)' in (tmp_path / 'partial' / 'results.md').read_text()
    second = subprocess.run(study_cli('run', str(spec), f'--workroot={work}', f'--out={out}'), cwd=ROOT, env=env(),
                            capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # the finished run was neither retrained nor re-evaluated
    assert 'sLCT/seed_0: training' not in second.stdout and 'sLCT/seed_0: evaluating' not in second.stdout
    assert len(segments(runs[0].workdir)) == 1 and progress.evaluation_rows(runs[0].workdir) == done_rows
    assert all(progress.run_state(r.workdir)['state'] == 'done' for r in runs)
    result = json.load(open(out / 'results.json'))
    assert len(result['runs']) == 8 and {(r['variant'], r['seed']) for r in result['runs']} == \
        {(v, s) for v in ('sLCT', 'iLCT') for s in (0, 1)}
    slct = next(e for e in result['summary'] if e['variant'] == 'sLCT' and e['sampler'] == '1-step')
    fds = sorted(r['fd'] for r in result['runs'] if r['variant'] == 'sLCT' and r['sampler'] == '1-step')
    assert slct['n'] == 2 and slct['ci95'] == pytest.approx(fds) and slct['vs_baseline']['seeds'] == [0, 1]
    assert (out / 'curves.png').exists() and '95% interval' in (out / 'results.md').read_text()
    assert sorted(os.listdir(out / 'grids')) == [f'{v}_seed0_{k}.png' for v in ('iLCT', 'sLCT') for k in ('1step', '2step')]
    print(second.stdout[-1500:])


def test_the_table_reads_a_difference_by_its_t_interval():
    from lct_jax.study import report
    assert report._verdict({'n': 3, 't95': [-2.0, -0.1]}) == 'lower FD'
    assert report._verdict({'n': 3, 't95': [0.2, 3.0]}) == 'higher FD'
    assert report._verdict({'n': 3, 't95': [-1.0, 0.5]}) == 'no evidence'
    assert report._verdict({'n': 1}) == '–' and report._verdict(None) == '–'
    # consistent across seeds but spread: the bootstrap ([min, max]) excludes 0, the t interval does not
    d = aggregate.describe([-0.2, -1.0, -3.0])
    assert d['ci95'][1] < 0 and d['t95'][0] < 0 < d['t95'][1] and report._verdict(d) == 'no evidence'


def test_late_average_rows_average_each_seed_over_its_last_checkpoints():
    rows = [dict(variant='a', seed=s, sampler='1-step', step=st, fd=fd) for s, st, fd in
            [(0, 10, 9.0), (0, 20, 2.0), (0, 30, 4.0), (1, 20, 1.0), (1, 30, 3.0), (2, 30, 5.0)]]
    late, steps = aggregate.late_average_rows(rows, last=2)
    assert steps == [20, 30]
    # seed 2 lacks step 20: left out rather than averaged over fewer checkpoints
    assert sorted((r['seed'], r['step'], r['fd']) for r in late) == [(0, 30, 3.0), (1, 30, 2.0)]


def test_compare_puts_the_same_variants_of_two_studies_side_by_side(tmp_path):
    from lct_jax.study import compare

    def result(name, deltas, final=2500):
        summary = [{'variant': 'sLCT', 'sampler': '1-step', 'step': final, 'n': 3, 'mean': 4.0, 'std': 0.5,
                    'ci95': [3.5, 4.5], 't95': [2.8, 5.2]}]
        for v, (mean, lo, hi) in deltas.items():
            summary.append({'variant': v, 'sampler': '1-step', 'step': final, 'n': 3, 'mean': 4.0 + mean, 'std': 0.4,
                            'ci95': [0, 9], 't95': [0, 9], 'vs_baseline': {'mean': mean, 'n': 3, 'std': 0.2,
                                                                           'ci95': [lo, hi], 't95': [lo, hi]}})
        return {'study': name, 'baseline': 'sLCT', 'final_step': final, 'variants': {'sLCT': {}, **deltas},
                'summary': summary, 'summary_late_average': {'steps': [final - 500, final], 'summary': summary}}

    pixel = result('pixel', {'iLCT': (-2.0, -3.0, -1.0), 'no_ot': (0.5, -1.0, 2.0)})
    latent = result('latent', {'iLCT': (1.5, 0.5, 2.5)})
    text = compare.side_by_side({'pixel': pixel, 'latent': latent})
    lines = text.splitlines()
    assert lines[0].startswith('FD at step pixel: 2500, latent: 2500; baseline pixel: sLCT, latent: sLCT')
    assert '| sLCT | 1-step | 4.00 ± 0.50 (3) | – | 4.00 ± 0.50 (3) | – |' in lines
    assert '| iLCT | 1-step | 2.00 ± 0.40 (3) | -2.00 [-3.00, -1.00] lower FD | 5.50 ± 0.40 (3) | ' \
           '+1.50 [+0.50, +2.50] higher FD |' in lines
    assert '| no_ot | 1-step | 4.50 ± 0.40 (3) | +0.50 [-1.00, +2.00] no evidence | – | – |' in lines
    out = tmp_path / 'side.md'
    for i, r in enumerate((pixel, latent)):
        json.dump(r, open(tmp_path / f'{i}.json', 'w'))
    assert compare.main([str(tmp_path / '0.json'), str(tmp_path / '1.json'), '--late', '--out', str(out)]) == 0
    assert open(out).read().startswith('each seed\'s FD averaged over steps pixel: [2000, 2500], latent: [2000, 2500]')
    # two reports of one study (e.g. on two autoencoders), told apart by --labels
    # ... a table with fewer numbers than the one at --out goes beside it, unless --replace
    before = out.read_bytes()
    args = [str(tmp_path / '1.json'), str(tmp_path / '1.json'), '--labels', 'first', 'second', '--out', str(out)]
    assert compare.main(args) == 0
    assert out.read_bytes() == before
    assert '| variant | sampler | first FD (seeds) | first Δ vs baseline [t 95%] | second FD (seeds) |' in \
        (tmp_path / 'side.new.md').read_text()
    assert compare.main(args + ['--replace']) == 0
    assert out.read_text() == (tmp_path / 'side.new.md').read_text()


def test_compare_pairs_against_another_baseline_from_the_per_run_rows(tmp_path):
    """--baseline iLCT: the paired differences made again from the report's runs, seed by seed."""
    from lct_jax.study import compare
    fds = {'sLCT': [20.0, 18.0, 17.0], 'iLCT': [10.0, 9.0, 11.0], 'meanflow': [3.0, 2.0, 5.0]}
    runs = [{'variant': v, 'seed': s, 'sampler': '2-step', 'step': step, 'fd': fd + (step == 2000)}
            for v, values in fds.items() for s, fd in enumerate(values) for step in (2000, 2500)]
    result = {'study': 'latent', 'baseline': 'sLCT', 'final_step': 2500, 'variants': {v: {} for v in fds},
              'runs': runs, 'summary': [], 'summary_late_average': {'steps': [2000, 2500], 'summary': []}}
    json.dump(result, open(tmp_path / 'r.json', 'w'))
    out = tmp_path / 'vs_ilct.md'
    assert compare.main([str(tmp_path / 'r.json'), '--baseline', 'iLCT', '--out', str(out)]) == 0
    text = out.read_text()
    assert 'baseline latent: iLCT' in text
    d = np.array([3.0, 2.0, 5.0]) - np.array([10.0, 9.0, 11.0])          # -7, -7, -6
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)
    assert f'| meanflow | 2-step | 3.33 ± 1.53 (3) | {d.mean():+.2f} [{d.mean() - half:+.2f}, ' \
           f'{d.mean() + half:+.2f}] lower FD |' in text
    assert '| iLCT | 2-step | 10.00 ± 1.00 (3) | – |' in text
    with pytest.raises(Exception, match="no run of that variant"):
        compare.main([str(tmp_path / 'r.json'), '--baseline', 'ldm'])


# --- pinned inputs ---------------------------------------------------------------------------

def test_a_directory_digest_sees_a_flipped_byte_a_new_file_and_a_rename(tmp_path):
    from lct_jax.models.autoencoder import file_sha256
    from lct_jax.study import pins
    d = tmp_path / 'inputs'
    (d / 'sub').mkdir(parents=True)
    (d / 'a.bin').write_bytes(b'\x00\x01\x02')
    (d / 'sub' / 'b.txt').write_text('b')
    first = pins.tree_sha256(str(d))
    assert pins.tree_sha256(str(d)) == first and len(first) == 64
    assert pins.tree_sha256(str(d / 'a.bin')) == file_sha256(str(d / 'a.bin'))
    (d / 'a.bin').write_bytes(b'\x00\x01\x03')
    flipped = pins.tree_sha256(str(d))
    (d / 'a.bin').write_bytes(b'\x00\x01\x02')
    assert flipped != first and pins.tree_sha256(str(d)) == first
    (d / 'sub' / 'b.txt').rename(d / 'sub' / 'c.txt')
    assert pins.tree_sha256(str(d)) not in (first, flipped)
    (d / 'sub' / 'c.txt').rename(d / 'sub' / 'b.txt')
    (d / 'extra').write_text('')
    assert pins.tree_sha256(str(d)) != first
    with pytest.raises(FileNotFoundError, match='nothing'):
        pins.tree_sha256(str(tmp_path / 'nothing'))


@pytest.mark.faults
def test_runs_start_only_on_the_pinned_inputs_and_the_report_leaves_out_the_others(tmp_path, monkeypatch):
    """A study pins an input: the runner refuses when it differs (naming it, before any command), records
    the verified pins in each run it starts, refuses to resume a run started on other inputs, and the
    report averages only runs that recorded the study's pins."""
    from lct_jax.study import pins, runner
    inputs = tmp_path / 'w' / 'inputs'
    inputs.mkdir(parents=True)
    (inputs / 'weights').write_bytes(b'weights v1')
    digest = pins.tree_sha256(str(inputs))
    study = study_from_dict(dict(TINY, pins={'{study_dir}/inputs': digest}), 'tiny.json')
    runs = plan(study, str(tmp_path / 'w'))
    calls = []

    def fake_call(cmd, log_path, cpus=None):
        calls.append(cmd)
        wd = next(a.split('=', 1)[1] for a in cmd if a.startswith('--workdir='))
        if '--mode=evaluate' in cmd:
            fake_run(wd)
        else:
            fake_run(wd, evaluated=())
        return 0

    monkeypatch.setattr(runner, '_call', fake_call)
    (inputs / 'weights').write_bytes(b'weights v2')                      # remade: not the study's input
    with pytest.raises(pins.PinMismatch, match=r'(?s)inputs.*pinned ' + digest):
        runner.run_study(study, str(tmp_path / 'w'))
    assert calls == []
    (inputs / 'weights').write_bytes(b'weights v1')
    pins.record(runs[3].workdir, {'{study_dir}/inputs': 'f' * 64})       # started earlier on other inputs
    outcome = runner.run_study(study, str(tmp_path / 'w'))
    assert [outcome[r.key] for r in runs[:3]] == ['done'] * 3
    assert outcome[runs[3].key].startswith('failed') and 'other inputs' in outcome[runs[3].key]
    assert pins.recorded(runs[0].workdir) == {'{study_dir}/inputs': digest}
    fake_run(runs[3].workdir)                                            # finished on the other inputs
    shutil.rmtree(os.path.join(runs[2].workdir, 'study_logs'))           # finished, with no record
    entries, _ = progress.progress_table(runs, ())
    result = report.write_report(study, runs, entries, str(tmp_path / 'out'))
    assert {(r['variant'], r['seed']) for r in result['runs']} == {('sLCT', 0), ('sLCT', 1)}
    assert set(result['excluded_runs']) == {'iLCT/seed_0', 'iLCT/seed_1'}
    md = open(tmp_path / 'out' / 'results.md').read()
    assert 'iLCT/seed_1: trained on other inputs' in md and 'iLCT/seed_0: no record of its inputs' in md


# --- the committed studies -------------------------------------------------------------------

@pytest.mark.parametrize('name', ['pixel', 'latent'])
def test_the_committed_study_files_plan_runs_whose_configs_build(name, tmp_path):
    """docs/study/{pixel,latent}: every variant names a config that builds (a typo in a variant would
    otherwise surface an hour into a study), and the latent study keeps the pixel study's seeds and
    variants, so the two stay side by side."""
    import importlib.util

    from lct_jax.study.spec import ROOT as SPEC_ROOT
    study = load_study(os.path.join(SPEC_ROOT, 'docs', 'study', name, f'study_{name}.py'))
    runs = plan(study, str(tmp_path))
    assert {(r.variant, r.seed) for r in runs} == {(v.name, s) for v in study.variants for s in study.seeds}
    for r in runs:
        path, _, arg = r.config.partition(':')
        spec = importlib.util.spec_from_file_location('_cfg', os.path.join(SPEC_ROOT, path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(arg)      # raises on an unknown variant name
        for flag in r.flags + r.eval_flags:  # and every --config.a.b=v names a field that exists
            node = config
            for part in flag.split('=', 1)[0].removeprefix('--config.').split('.'):
                assert part in node, f'{r.key}: {flag} names no config field'
                node = node[part]
    if name == 'latent':
        pixel = load_study(os.path.join(SPEC_ROOT, 'docs', 'study', 'pixel', 'study_pixel.py'))
        assert study.seeds == pixel.seeds and study.eval_steps == pixel.eval_steps
        assert [v.name for v in study.variants][:len(pixel.variants)] == [v.name for v in pixel.variants]
        assert [v.name for v in study.variants][len(pixel.variants):] == ['fixed_c', 'meanflow', 'ldm', 'sct', 'imf']


def test_pool_pairs_within_each_report_and_puts_every_replicate_in_one_interval(tmp_path):
    """Two reports of one study with the same seeds 0-2: 6 replicates, not 3; each difference taken
    within its own report (report b's +100 offset cancels); one t interval over the 6."""
    from lct_jax.study import pool

    def report_of(offset, deltas):
        runs = []
        for seed, d in enumerate(deltas):
            for step, extra in ((500, 50.0), (1000, 0.0)):
                runs.append(dict(variant='base', seed=seed, sampler='1-step', step=step, fd=offset + seed + extra))
                runs.append(dict(variant='new', seed=seed, sampler='1-step', step=step, fd=offset + seed + extra + d))
        return {'study': 'one', 'baseline': 'base', 'variants': {'base': {}, 'new': {}}, 'runs': runs}

    a, b = report_of(0.0, [1.0, 2.0, 3.0]), report_of(100.0, [2.0, 3.0, 4.0])
    deltas = np.array([1.0, 2.0, 3.0, 2.0, 3.0, 4.0])
    rows, step = pool.pooled_rows({'a': a, 'b': b})
    assert step == 1000 and len({r['seed'] for r in rows}) == 6
    text = pool.pooled_table({'a': a, 'b': b})
    half = 2.570582 * deltas.std(ddof=1) / np.sqrt(6)              # t_{5, 0.975}
    row = next(line for line in text.splitlines() if line.startswith('| new |'))
    assert row == (f'| new | 1-step | 6 | {np.mean([1, 3, 5, 102, 104, 106]):.2f} ± '
                   f'{np.std([1, 3, 5, 102, 104, 106], ddof=1):.2f} | +2.50 | '
                   f'[{2.5 - half:+.2f}, {2.5 + half:+.2f}] | higher FD | +2.00 (3) | +3.00 (3) |')
    assert pool.pooled_table({'a': a, 'b': b}, step=500).startswith('FD at step 500')
    json.dump(a, open(tmp_path / 'a.json', 'w'))
    json.dump(b, open(tmp_path / 'b.json', 'w'))
    assert pool.main([str(tmp_path / 'a.json'), str(tmp_path / 'b.json'), '--late', '--out', str(tmp_path / 'p.md')]) == 0
    assert '| new | 1-step | 6 |' in open(tmp_path / 'p.md').read()   # the late average keeps the offsets paired
