"""Where a train step's time goes: `python benchmarks/run.py` -> benchmarks/results.json + README.md.

A small runner over one module per measurement (benchmarks/sections/*.py, each a SECTIONS table of
name -> (function of (results so far, mesh, quick) -> dict merged into the results, slow)),
measured in one run, side by side (this machine is shared and noisy: compare ratios, not absolute
times). `--quick` skips the slow sections; `--only a,b` re-measures some into the existing
results.json. Sections, in the order they run:
  matmul, default, reduced_paper   the step's device program / the network's own work, MFU (step_breakdown)
  while_loops                      data-dependent `while` ops in the step's programs, per placement
  hungarian_iterations             loop iterations of one exact matching, per-device batch 16..256
  host_pairing, headroom           noise + exact OT on the host; its rate / an accelerator host's need
  ot_seconds, ot_fraction          the OT coupling per solver; its share of the paper step (ot_solvers)
  compiles                         traces of the step over a run crossing all curriculum stages
  loop                             the whole training loop against the compiled step alone
  remat_cpu                        whether this backend's compiler keeps jax.checkpoint's recomputation
  peak_memory_paper                XLA's memory analysis of the paper step at per-device batch 32 / 64 / 128
  input_pipeline, host_pipeline    the reader alone; the whole host pipeline per core and with all busy
  vs_pytorch                       our step against a PyTorch step of the same UNet, per XLA flag set
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks', 'sections'))

MODULES = ('step_breakdown', 'pairing_off_device', 'ot_solvers', 'compiles', 'loop_vs_step', 'remat_cpu',
           'peak_memory', 'input_pipeline', 'vs_pytorch_flags')


def sections() -> dict:
    """name -> (fn, slow), in the order they run."""
    out = {}
    for name in MODULES:
        out.update(importlib.import_module(name).SECTIONS)
    return out


def main():
    if any(a in ('-h', '--help') for a in sys.argv[1:]):  # the whole run takes ~40 minutes: never by accident
        print(__doc__)
        return
    import jax
    from report import write_markdown  # benchmarks/report.py

    from lct_jax import parallel
    table = sections()
    mesh = parallel.make_mesh()
    out = os.path.join(ROOT, 'benchmarks', 'results.json')
    quick = '--quick' in sys.argv
    only = None
    if '--only' in sys.argv:  # re-measure some sections into the existing results.json
        only = sys.argv[sys.argv.index('--only') + 1].split(',')
        unknown = set(only) - set(table)
        if unknown:
            raise SystemExit(f'unknown sections {sorted(unknown)}; valid: {list(table)}')
    results = json.load(open(out)) if only and os.path.exists(out) else {}
    results['machine'] = {'platform': platform.platform(), 'processor': platform.processor(),
                          'cpus': os.cpu_count(), 'jax': jax.__version__, 'devices': jax.device_count(),
                          'backend': jax.default_backend()}
    for name, (fn, slow) in table.items():
        if (only and name not in only) or (quick and slow):
            continue
        t0 = time.perf_counter()
        results.update(fn(results, mesh, quick))
        print(f'[{name}: {time.perf_counter() - t0:.0f} s]', flush=True)
        json.dump(results, open(out, 'w'), indent=1)   # a partial run keeps what it measured
    for k in ('default', 'reduced_paper'):
        if k in results and 'matmul_peak_flops_per_s' in results:
            results[k]['mfu_cpu'] = results[k]['achieved_flops_per_s'] / results['matmul_peak_flops_per_s']
    json.dump(results, open(out, 'w'), indent=1)
    write_markdown(results, os.path.join(ROOT, 'benchmarks', 'README.md'))
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
