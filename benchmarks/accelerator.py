"""The accelerator check: everything we claim about TPUs and GPUs, measured in one command.

  python benchmarks/accelerator.py            # on one GPU/TPU: <= 8 minutes, compiles included
  python benchmarks/accelerator.py --smoke    # every part at toy sizes on the CPU (the test suite runs it)

Writes benchmarks/accelerator/<device_kind>.json and .md (device kind and count, jax / jaxlib
versions, commit, date), after every part (a part that fails or is cut keeps the others), and a
copy under $OUT when that is set. Parts, in the order they run (each guarded, each with a time
budget it checks between measurements; a watchdog writes what was measured and exits if the
whole run overruns):
  numerics         8. loss and gradient norm of a fixed problem against this CPU's committed values
  update_step      1. the paper step (celebahq256, 32x32x4) at per-device batch 128 and 32: float32,
                      bfloat16, remat; median of >= 20 steps, XLA's FLOPs, MFU against the chip's peak
  memory           2. the device's measured peak beside XLA's estimate and the CPU-made table
  compile_cache    3. compile time, cold and from the persistent compilation cache
  placement        4. coupling.placement 'device' vs 'host'; the Hungarian alone at 128 and 256
  training_loop    5. the real loop (reader processes, pairing threads, prefetch): loop_over_step, the
                      input wait, the whole host pipeline per core on this machine
  sampling         6. 1-/2-step sampling + SD-VAE decode + Inception features, images/s, FID-50k time
  default_run      9. configs/default.py trained to the end and evaluated (FD), beside the CPU's
  dit_fsdp         7. a DiT-B/2 step at its recipe's batch, then the FSDP path on this mesh
  meanflow_step   10. the JVP-based updates (MeanFlow, sCT, improved MeanFlow) against part 1's sLCT
                      update, same UNet and per-device batch 32, float32 and bfloat16: time and
                      memory ratios
Run instructions for a machine without network (wheels to carry): benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, 'benchmarks', 'accelerator')

# name -> (module, function, issue part number, seconds of the full run's budget); order = run order.
PARTS = {
    'numerics': ('steps', 'numerics', 8, 25),
    'update_step': ('steps', 'update_step', 1, 140),
    'memory': ('steps', 'memory', 2, 5),
    'compile_cache': ('steps', 'compile_cache', 3, 20),
    'placement': ('placement', 'placement', 4, 45),
    'training_loop': ('training_loop', 'training_loop', 5, 70),
    'sampling': ('sampling_rate', 'sampling_rate', 6, 40),
    'default_run': ('default_run', 'default_run', 9, 60),
    'dit_fsdp': ('steps', 'dit_and_fsdp', 7, 45),
    'meanflow_step': ('steps', 'meanflow_step', 10, 30),
}
FULL_BUDGET_S = 480


def commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or os.environ.get('LCT_COMMIT', 'unknown')
    except (OSError, subprocess.SubprocessError):
        return os.environ.get('LCT_COMMIT', 'unknown')


def header(smoke: bool) -> dict:
    import jax
    import jaxlib
    devices = jax.devices()
    return {'device_kind': devices[0].device_kind, 'device_count': len(devices), 'backend': jax.default_backend(),
            'platform_version': getattr(devices[0].client, 'platform_version', ''),
            'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'python': platform.python_version(),
            'host_cpus': os.cpu_count(), 'host_cpus_usable': len(os.sched_getaffinity(0)),
            'commit': commit(), 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'smoke': smoke, 'load_average_1min': os.getloadavg()[0],
            # None: XLA's default, which on a GPU may run float32 matmuls and convolutions as tf32
            'default_matmul_precision': getattr(jax.config, 'jax_default_matmul_precision', None)}


def file_stem(kind: str, smoke: bool) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '_', kind).strip('_') + ('_smoke' if smoke else '')


def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


# Per part, the fields its row of the markdown shows (dotted paths into the part's result).
SUMMARY = {
    'numerics': ('float32_highest_worst_relative_difference', 'float32_agrees'),
    'update_step': (),  # a row per variant instead
    'memory': (),
    'compile_cache': ('cold_compile_seconds', 'cached_compile_seconds', 'cache_speedup'),
    'placement': ('host_placement_step_seconds', 'device_placement_step_seconds', 'device_over_host_step',
                  'device_pair_noise_seconds', 'hungarian_alone.128.seconds', 'hungarian_alone.256.seconds'),
    'training_loop': ('loop_over_step', 'input_wait_fraction_of_loop', 'step_seconds_alone',
                      'host_pipeline.examples_per_s_per_busy_core', 'host_pipeline.examples_per_s_all_cores_busy',
                      'host_pipeline.measured_headroom_all_cores', 'host_pipeline.measured_headroom_16_cores'),
    'sampling': ('sampler_1-step.images_per_s', 'sampler_2-step.images_per_s', 'vae_decode.images_per_s',
                 'inception_features.images_per_s', 'fid_50k_wall_seconds.1-step', 'fid_50k_wall_seconds.2-step'),
    'default_run': ('train_wall_seconds', 'steps_per_s_last_interval', 'fd_1step', 'fd_2step'),
    'dit_fsdp': ('dit_b2.step_seconds_median', 'dit_b2.mfu_vs_bf16_peak', 'dit_b2_fsdp.step_seconds_median'),
    'meanflow_step': ('variants.b32_float32.time_ratio', 'variants.b32_float32.xla_memory_ratio',
                      'variants.b32_bfloat16.time_ratio', 'variants.b32_bfloat16.xla_memory_ratio',
                      'variants.b32_float32.sct_time_ratio', 'variants.b32_float32.sct_xla_memory_ratio',
                      'variants.b32_float32.imf_time_ratio', 'variants.b32_float32.imf_xla_memory_ratio'),
}


def _get(d, path):
    for key in path.split('.'):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def markdown(results: dict) -> str:
    h = results['header']
    lines = [f"# Accelerator check: {h['device_kind']} x {h['device_count']}" + (' (smoke, CPU)' if h['smoke'] else ''),
             '', f"`python benchmarks/accelerator.py{' --smoke' if h['smoke'] else ''}` at commit {h['commit']}, "
             f"{h['date']}; jax {h['jax']}, jaxlib {h['jaxlib']}, python {h['python']}, backend {h['backend']}; "
             f"host {h['host_cpus_usable']} cores; total {results.get('total_seconds', 0):.0f} s.", '',
             '| part | status | seconds | numbers |', '|---|---|---|---|']
    for name, part in results['parts'].items():
        status = part.get('status')
        numbers = '; '.join(f'{p} {_fmt(_get(part, p))}' for p in SUMMARY.get(name, ()) if _get(part, p) is not None)
        if status == 'failed':
            numbers = part.get('error', '')[:200].replace('|', '/').replace('\n', ' ')
        lines.append(f"| {PARTS[name][2]}. {name} | {status} | {part.get('seconds', 0):.0f} | {numbers} |")
    variants = _get(results['parts'].get('update_step', {}), 'variants') or {}
    if variants:
        lines += ['', '## Update step (part 1) and memory (part 2)', '',
                  '| variant | step s (median) | examples/s | XLA TFLOP | TFLOP/s | MFU (bf16 peak) | compile s | '
                  'XLA estimate GB | device peak GB so far |', '|---|---|---|---|---|---|---|---|---|']
        for name, v in variants.items():
            if 'step_seconds_median' not in v:
                lines.append(f"| {name} | {(v.get('skipped') or v.get('error', ''))[:120]} | | | | | | | |")
                continue
            lines.append(f"| {name} | {v['step_seconds_median']:.4f} | {v['examples_per_s']:.0f} | "
                         f"{v['xla_flops'] / 1e12:.3f} | {v['achieved_flops_per_s'] / 1e12:.1f} | "
                         f"{_fmt(v.get('mfu_vs_bf16_peak', '-'))} | {v['compile_seconds']:.1f} | "
                         f"{_fmt(v['xla_memory'].get('estimate_gb', '-'))} | "
                         f"{_fmt(v['device_memory_after'].get('peak_gb_in_use', '-'))} |")
    lines += ['', 'Every number is in the JSON beside this file; MFU counts XLA\'s FLOPs of the compiled program '
              'against the dense bf16 peak of the chip (benchmarks/device_check/basics.py, PEAKS, with sources).']
    return '\n'.join(lines) + '\n'


def write(results: dict, out_dirs: list[str], stem: str) -> None:
    for d in out_dirs:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, stem + '.json'), 'w') as f:
            json.dump(results, f, indent=1, default=str)
        with open(os.path.join(d, stem + '.md'), 'w') as f:
            f.write(markdown(results))


def start_watchdog(limit_s: float, results: dict, out_dirs, stem) -> None:
    """If the run outlasts limit_s (a compile or a step that never ends), write what it has and exit."""
    def watch():
        time.sleep(limit_s)
        running = results.get('running')
        if running:
            results['parts'][running] = {'status': 'failed', 'error': f'watchdog: still running after {limit_s:.0f} s'}
        results['watchdog'] = f'exited after {limit_s:.0f} s'
        write(results, out_dirs, stem)
        print(f'watchdog: {limit_s:.0f} s passed; results written, exiting', flush=True)
        os._exit(3)
    threading.Thread(target=watch, daemon=True, name='lct-check-watchdog').start()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--smoke', action='store_true', help='every part at toy sizes on the CPU')
    p.add_argument('--out', default=None, help=f'results folder (default {RESULTS_DIR}; --smoke: a temporary one)')
    p.add_argument('--budget', type=float, default=None, help=f'seconds for the whole run (default {FULL_BUDGET_S})')
    p.add_argument('--cache-dir', default=None,
                   help='persistent compilation cache (default: a fresh one, so part 3 measures a cold compile)')
    p.add_argument('--only', default='', help=f'comma-separated parts of {list(PARTS)}')
    p.add_argument('--write-reference', action='store_true',
                   help='recompute the CPU values of the numerics part (benchmarks/device_check/cpu_reference.json)')
    args = p.parse_args(argv)
    sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]
    if args.smoke or args.write_reference:
        from device_check.basics import SMOKE_XLA_FLAGS
        os.environ['JAX_PLATFORMS'] = 'cpu'
        if args.smoke and 'XLA_FLAGS' not in os.environ:  # read once, when XLA starts
            os.environ['XLA_FLAGS'] = SMOKE_XLA_FLAGS
    import jax
    if args.smoke or args.write_reference:
        jax.config.update('jax_platforms', 'cpu')
    # A fresh persistent compilation cache: part 3 times a cold compile, then the same from the cache.
    jax.config.update('jax_compilation_cache_dir', args.cache_dir or tempfile.mkdtemp(prefix='lct_check_xla_cache_'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    import importlib

    from device_check.basics import FULL, SMOKE, Budget

    from lct_jax import parallel
    if args.write_reference:
        from device_check.steps import write_cpu_reference
        print(json.dumps(write_cpu_reference(), indent=1))
        return 0
    sizes = SMOKE if args.smoke else FULL
    # the smoke run skips nothing: its budget only bounds the watchdog (a loaded CPU compiles slowly)
    total_s = args.budget or (400 if args.smoke else FULL_BUDGET_S)
    only = [s for s in args.only.split(',') if s]
    unknown = set(only) - set(PARTS)
    if unknown:
        raise SystemExit(f'unknown parts {sorted(unknown)}; valid: {list(PARTS)}')
    results = {'header': header(args.smoke), 'parts': {}}
    stem = file_stem(results['header']['device_kind'], args.smoke)
    out_dirs = [args.out or (tempfile.mkdtemp(prefix='lct_check_') if args.smoke else RESULTS_DIR)]
    if os.environ.get('OUT'):
        out_dirs.append(os.environ['OUT'])
    print(f"accelerator check: {results['header']['device_kind']} x {results['header']['device_count']}, "
          f"jax {results['header']['jax']}, budget {total_s:.0f} s, results in {out_dirs}", flush=True)
    start_watchdog(total_s + (45 if not args.smoke else 30), results, out_dirs, stem)
    mesh = parallel.make_mesh()
    ctx: dict = {}
    run_budget = Budget(total_s)
    for name, (module, fn_name, number, seconds) in PARTS.items():
        if only and name not in only:
            continue
        part_s = seconds * total_s / FULL_BUDGET_S if not args.smoke else total_s
        if not args.smoke and run_budget.left() < 0.3 * part_s:
            results['parts'][name] = {'status': 'skipped', 'reason': f'{run_budget.left():.0f} s of the run left'}
            print(f'[{number}. {name}: skipped, {run_budget.left():.0f} s left]', flush=True)
            continue
        print(f'[{number}. {name}: budget {part_s:.0f} s]', flush=True)
        results['running'] = name
        t0 = time.perf_counter()
        try:
            fn = getattr(importlib.import_module(f'device_check.{module}'), fn_name)
            part = fn(mesh, sizes, Budget(min(part_s, max(run_budget.left(), 1.0))), ctx)
            results['parts'][name] = {'status': 'ok', **part}
        except Exception as e:  # noqa: BLE001 - a part's failure is recorded; the next part runs
            results['parts'][name] = {'status': 'failed', 'error': f'{type(e).__name__}: {e}'[:2000],
                                      'traceback': traceback.format_exc()[-4000:], **getattr(e, 'partial', {})}
            print(traceback.format_exc(), flush=True)
        results['parts'][name]['seconds'] = time.perf_counter() - t0
        results['running'] = None
        results['total_seconds'] = run_budget.elapsed()
        print(f"[{number}. {name}: {results['parts'][name]['status']} in {results['parts'][name]['seconds']:.0f} s; "
              f"{run_budget.elapsed():.0f} s so far]", flush=True)
        write(results, out_dirs, stem)
    results.pop('running', None)
    write(results, out_dirs, stem)
    print(markdown(results), flush=True)
    print(f'results: {[os.path.join(d, stem + ".json") for d in out_dirs]}', flush=True)
    return 0 if all(p['status'] != 'failed' for p in results['parts'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
