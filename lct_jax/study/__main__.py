"""python -m lct_jax.study <action> <study file> [--workroot DIR] [...]

  run        prepare, then train + evaluate every run not done (--parallel K at a time, each on its
             own --cpus-per-run CPUs if given), then report
  run-one    one run: --variant V --seed S, or --index i (the i-th of the plan; SLURM arrays)
  prepare    the study's one-off commands only
  status     done / running / trained / partial / missing per run
  report     aggregate whatever has finished into --out (default: the study file's folder)
  launch     print the commands that send each run to its own slice: --target local|slurm|tpu
  pins       the digests of the study's pinned inputs now, against the pinned ones (pins.py)
  export     copy the finished runs without checkpoints to --to (default: the study file's folder),
             a root that `report --workroot` reads and that `cp -r <to>/runs <workroot>/` resumes from

The runs live in --workroot: <workroot>/runs/<variant>/seed_<s>. Default: workdir/study/<name>, or,
for status / report / pins when that holds no runs, the export next to the study file (its folder's
runs/), so the commands a study file's docstring gives work as written on a fresh clone.
A report never replaces one that holds finished runs it lacks: it says which and writes beside it
(results.new.json, results.new.md) unless --replace.
"""
from __future__ import annotations

import argparse
import os
import sys

from lct_jax.study import export, launch, pins, progress, report, runner
from lct_jax.study.spec import ROOT, load_study, plan


def parse(argv):
    p = argparse.ArgumentParser(prog='python -m lct_jax.study', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('action', choices=('run', 'run-one', 'prepare', 'status', 'report', 'launch', 'export', 'pins'))
    p.add_argument('study', help='a study file (.py with a STUDY dict, or .json)')
    p.add_argument('--workroot', default='', help='where the runs live (default workdir/study/<name>; '
                   'for status/report/pins without runs there, the export next to the study file)')
    p.add_argument('--replace', action='store_true', help='report: replace a report that holds finished runs '
                   'this one lacks (default: write beside it)')
    p.add_argument('--out', default='', help='report folder (default: the study file\'s folder)')
    p.add_argument('--to', default='', help='export: where the runs go (default: the study file\'s folder)')
    p.add_argument('--parallel', type=int, default=1, help='run: this many runs at a time')
    p.add_argument('--cpus-per-run', type=int, default=0,
                   help='run: pin each of the --parallel runs to its own this many CPUs (CPU-only machines; '
                        '0 = no pinning). benchmarks/study_throughput.md measures what it buys')
    p.add_argument('--variants', nargs='*', default=None, help='run: only these variants')
    p.add_argument('--seeds', nargs='*', type=int, default=None, help='run: only these seeds')
    p.add_argument('--variant', default=None)
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--index', type=int, default=None)
    p.add_argument('--no-report', action='store_true', help='run: skip the report at the end')
    p.add_argument('--demonstration', default='', help='report: label the output as a demonstration, '
                   'with this explanation')
    p.add_argument('--target', default='local', choices=('local', 'slurm', 'tpu'))
    p.add_argument('--source', default=ROOT, help='slurm: the lct_jax checkout on the shared filesystem')
    p.add_argument('--gpus-per-task', type=int, default=1)
    p.add_argument('--time', default='24:00:00')
    p.add_argument('--partition', default='')
    p.add_argument('--zone', default='us-central2-b')
    p.add_argument('--accelerator', default='v4-8')
    p.add_argument('--bucket', default='')
    return p.parse_args(argv)


READ_ONLY_ACTIONS = ('status', 'report', 'pins')


def default_workroot(study, study_file: str, action: str) -> str:
    """workdir/study/<name>; for the read-only actions, the export next to the study file when that
    live root holds no runs and the export does (a fresh clone has only the export)."""
    live = os.path.abspath(os.path.join('workdir', 'study', study.name))
    export = os.path.dirname(os.path.abspath(study_file))
    if action in READ_ONLY_ACTIONS and not os.path.isdir(os.path.join(live, 'runs')) \
            and os.path.isdir(os.path.join(export, 'runs')):
        return export
    return live


def main(argv=None) -> int:
    """The exit code: 0, 1 (a run failed, pins mismatch) or 2 (bad input: one line on stderr)."""
    a = parse(sys.argv[1:] if argv is None else argv)
    try:
        return _main(a)
    except (ValueError, KeyError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr, flush=True)
        return 2


def _main(a) -> int:
    study = load_study(a.study)
    study_dir = os.path.abspath(a.workroot) if a.workroot else default_workroot(study, a.study, a.action)
    if not a.workroot and a.action != 'launch':
        print(f'work root: {study_dir}', flush=True)
    out = a.out or os.path.dirname(os.path.abspath(a.study))
    runs = plan(study, study_dir)
    if a.action == 'launch':
        kw = {}
        if a.target == 'slurm':
            kw = dict(source=a.source, gpus_per_task=a.gpus_per_task, time=a.time, partition=a.partition)
        elif a.target == 'tpu':
            kw = dict(zone=a.zone, accelerator=a.accelerator, bucket=a.bucket)
        print('\n'.join(launch.commands(study, study_dir, a.target, **kw)))
        return 0
    if a.action == 'status':
        print(progress.progress_table(runs, study.eval_steps)[1])
        return 0
    if a.action == 'export':
        dest = os.path.abspath(a.to or os.path.dirname(os.path.abspath(a.study)))
        outcome = export.export_runs(runs, study_dir, dest, study.eval_steps)
        for key, what in outcome.items():
            print(f'  {key:>24}  {what}')
        print(f'{sum(v == "exported" for v in outcome.values())} exported, '
              f'{sum(v == "up to date" for v in outcome.values())} up to date, '
              f'{sum(v not in ("exported", "up to date") for v in outcome.values())} not done; in {dest}/runs')
        return 0
    if a.action == 'prepare':
        runner.prepare(study, study_dir)
        return 0
    if a.action == 'pins':
        wrong = 0
        for path, digest in pins.actual(study.pins, study_dir).items():
            wrong += digest != study.pins[path]
            print(f'{"MISMATCH" if digest != study.pins[path] else "ok      "} {path}: {digest}')
        if not study.pins:
            print('the study pins no inputs')
        return 1 if wrong else 0
    if a.action == 'run-one':
        if a.index is not None:
            if not 0 <= a.index < len(runs):
                print(f'error: --index {a.index}: the study has {len(runs)} runs', file=sys.stderr)
                return 2
            run = runs[a.index]
        else:
            chosen = runner.select(runs, [a.variant] if a.variant else None, [a.seed] if a.seed is not None else None)
            if len(chosen) != 1:
                print(f'error: --variant/--seed select {len(chosen)} runs; name exactly one', file=sys.stderr)
                return 2
            run = chosen[0]
        try:
            runner.prepare(study, study_dir)
            runner.run_one(run, study.eval_steps, pins=pins.check(study.pins, study_dir))
        except (runner.RunFailed, pins.PinMismatch) as e:
            print(f'error: {e}', file=sys.stderr)
            return 1
        return 0
    if a.action == 'run':
        try:
            outcome = runner.run_study(study, study_dir, a.parallel, a.variants, a.seeds, a.cpus_per_run)
        except (runner.RunFailed, pins.PinMismatch) as e:
            print(f'error: {e}', file=sys.stderr)
            return 1
        failed = [k for k, v in outcome.items() if v.startswith('failed')]
        if not a.no_report:
            _report(study, runs, out, a.demonstration, a.replace)
        return 1 if failed else 0
    if a.action == 'report':
        _report(study, runs, out, a.demonstration, a.replace)
        return 0
    return 2


def _report(study, runs, out, demonstration, replace=False) -> None:
    entries, view = progress.progress_table(runs, study.eval_steps)
    print(view)
    result = report.write_report(study, runs, entries, out, demonstration, replace)
    if result['dropped'] and not replace:
        print(f'kept the report in {out}: it holds {len(result["dropped"])} finished run(s) this one lacks '
              f'({", ".join(result["dropped"])}); this one written beside it: {result["written_to"]} and '
              'results.new.md (pass --replace to replace it, or --workroot to report on the runs it was made from)')
    else:
        print(f'report: {os.path.join(out, "results.md")}, results.json, curves.png, grids/'
              + (f' (replaced one with {len(result["dropped"])} finished runs this one lacks)' if result['dropped'] else ''))


if __name__ == '__main__':
    sys.exit(main())
