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

The runs live in --workroot (default workdir/study/<name>): <workroot>/runs/<variant>/seed_<s>.
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
    p.add_argument('--workroot', default='', help='where the runs live (default workdir/study/<name>)')
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


def main(argv=None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    study = load_study(a.study)
    study_dir = os.path.abspath(a.workroot or os.path.join('workdir', 'study', study.name))
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
            _report(study, runs, out, a.demonstration)
        return 1 if failed else 0
    if a.action == 'report':
        _report(study, runs, out, a.demonstration)
        return 0
    return 2


def _report(study, runs, out, demonstration) -> None:
    entries, view = progress.progress_table(runs, study.eval_steps)
    print(view)
    report.write_report(study, runs, entries, out, demonstration)
    print(f'report: {os.path.join(out, "results.md")}, results.json, curves.png, grids/')


if __name__ == '__main__':
    sys.exit(main())
