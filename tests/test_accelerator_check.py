"""The accelerator check (benchmarks/accelerator.py) at toy sizes on the CPU: every part runs and
succeeds, so the script cannot rot between the rare runs on a GPU or TPU. Speed is not asserted."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import accelerator  # noqa: E402  (benchmarks/accelerator.py: light to import, JAX comes in main())


def test_smoke_run_has_every_part_and_each_succeeded(tmp_path):
    out = tmp_path / 'results'
    # Its own persistent compilation cache, kept between test runs (a rerun compiles little); part 3's
    # "cold" compile is then warm, which the smoke run does not judge.
    cache = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lct_jax_test_xla_cache_accelerator_smoke')
    scratch = tmp_path / 'scratch'   # the script's temporary work directories, removed with tmp_path
    scratch.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED='1', TMPDIR=str(scratch))
    env.pop('OUT', None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'accelerator.py'), '--smoke',
                           '--out', str(out), '--cache-dir', cache], capture_output=True, text=True, timeout=600,
                          env=env, cwd=str(tmp_path))
    files = sorted(os.listdir(out))
    assert files == ['cpu_smoke.json', 'cpu_smoke.md'], (files, proc.stdout[-3000:], proc.stderr[-3000:])
    results = json.load(open(out / 'cpu_smoke.json'))
    failed = {k: v.get('error') for k, v in results['parts'].items() if v['status'] != 'ok'}
    assert not failed, (failed, proc.stdout[-3000:])
    assert list(results['parts']) == list(accelerator.PARTS)
    assert proc.returncode == 0, proc.stdout[-3000:]
    h = results['header']
    assert h['smoke'] and h['device_kind'] == 'cpu' and h['device_count'] >= 1 and h['jax'] and h['commit']
    p = results['parts']
    assert all('step_seconds_median' in v and v['loss_finite'] for v in p['update_step']['variants'].values())
    assert p['numerics']['float32_agrees'], p['numerics']  # the committed CPU values still hold
    assert p['compile_cache']['cached_compile_seconds'] > 0
    assert set(p['placement']['hungarian_alone']) == {'8', '16'}
    assert p['training_loop']['loop_over_step'] > 0 and p['training_loop']['host_pipeline']['examples_per_s_all_cores_busy'] > 0
    assert p['sampling']['fid_50k_wall_seconds']['1-step'] > 0
    assert p['default_run']['fd_1step'] > 0 and p['default_run']['fd_2step'] > 0
    assert p['dit_fsdp']['dit_b2_fsdp']['loss_finite']
    mf = [v for v in p['meanflow_step']['variants'].values() if 'time_ratio' in v]
    assert mf and all(v['time_ratio'] > 0 and v['meanflow']['loss_finite'] for v in mf)
    assert all(v[f'{o}_time_ratio'] > 0 and v[o]['loss_finite'] for v in mf for o in ('sct', 'imf'))
    md = open(out / 'cpu_smoke.md').read()
    assert all(f'. {name} | ok |' in md for name in accelerator.PARTS), md
    # nothing written into the committed results folder
    assert not os.path.exists(os.path.join(ROOT, 'benchmarks', 'accelerator', 'cpu_smoke.json'))
