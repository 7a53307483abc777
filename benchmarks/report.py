"""benchmarks/README.md from benchmarks/results.json: the generated tables, then the hand-written notes."""
from __future__ import annotations

import os

# Sections of README.md written by hand (from other scripts' results, and the notes), kept below the
# generated tables in the order they stand.
HAND_WRITTEN = ('## Running the accelerator check', '## A study\'s runs on a CPU-only machine',
                '## An evaluation, cold and warm', '## Notes')


def _fmt(v, fmt):
    return fmt.format(v) if isinstance(v, (int, float)) else str(v)


def host_pipeline_lines(h, headroom=None) -> list[str]:
    """The whole host pipeline's table (and its projection), from benchmarks/host_pipeline.py."""
    lines = ['', '## The whole host pipeline (read, parse, normalise, noise, OT pairing, assembly)', '',
             '`python benchmarks/host_pipeline.py` (also `run.py --only host_pipeline`): per-device batch 128 of',
             '32x32x4 latents, one device block (one pairing thread) per core, each configuration in its own',
             'process pinned to its cores. "per CPU-second" is examples over the CPU time of the whole',
             'pipeline (its threads and reader processes): what one busy core does, whatever else shares the',
             'cores; the wall rates depend on that load (beside them).', '',
             '| configuration | cores | reader processes | examples/s (wall) | cores busy | examples per CPU-second |',
             '|---|---|---|---|---|---|']
    for key, label in (('one_core', 'one core'), ('all_cores_reader_threads', 'every core, reader in threads'),
                       ('all_cores_reader_processes', 'every core, reader processes')):
        v = h[key]
        lines.append(f"| {label} | {len(v['cores'])} | {v['read_processes']} | {v['examples_per_s']:.0f} | "
                     f"{v['cores_busy']:.2f} | {v['examples_per_cpu_second']:.0f} |")
    lines += ['', f"Per busy core (every core busy, reader processes): **{h['examples_per_s_per_busy_core']:.0f} "
              f"examples/s**; with every core busy **{h['examples_per_s_all_cores_busy']:.0f} examples/s** in total "
              f"on {h['cores']} cores (wall; load average {h['load_average_1min_before']:.1f} before, "
              f"{h['load_average_1min_after']:.1f} after); a busy core's cost with all busy over one alone: "
              f"{h['per_core_cost_all_over_one']:.2f}."]
    if headroom:
        a = headroom['assumptions']
        lines += ['', '### host_pipeline_headroom (a projection)', '',
                  '| host | accelerators consume examples/s (projected) | whole host pipeline examples/s | headroom |',
                  '|---|---|---|---|']
        for name, v in headroom.items():
            if name != 'assumptions':
                lines.append(f"| {name} | {v['accelerator_examples_per_s']:.0f} (step "
                             f"{v['step_seconds_projected'] * 1e3:.1f} ms) | {v['host_pipeline_examples_per_s']:.0f} | "
                             f"**{v['headroom']:.1f}** |")
        lines += ['', 'Assumptions:', f"- {a['cores_note']};",
                  f"- per-core rate {a['host_examples_per_s_per_core']:.0f} examples/s: {a['per_core_rate']};",
                  f"- consumption: {a['consumption']};"] + \
                 ([f"- serial share: {a['serial_share']};"] if 'serial_share' in a else []) + \
                 [f"- not included: {a['not_included']}."]
    return lines


def write_markdown(r, path):
    lines = ['# Benchmarks', '',
             'Made by `python benchmarks/run.py` (about 40 minutes on 2 idle CPU cores; `--quick` skips the',
             'full paper step and its memory analysis; `--only a,b` re-measures some sections), which rewrites',
             'the tables of this file and `results.json`. Times are medians of repeated calls in one run; compare',
             'ratios, not absolute times (this machine is shared and noisy). No accelerator here: the CPU numbers',
             'show where time goes, not what a TPU or GPU achieves; the accelerator figures are projections,',
             'with their assumptions beside them.', '']
    machine = r['machine']
    if 'matmul_peak_flops_per_s' in r:
        lines += [f"Machine: {machine['processor'] or machine['platform']}, {machine['cpus']} cores, "
                  f"jax {machine['jax']} ({machine['backend']}, {machine['devices']} device); "
                  f"f32 matmul peak {r['matmul_peak_flops_per_s'] / 1e9:.0f} GFLOP/s.", '']
    if 'default' in r and 'reduced_paper' in r:
        d, p = r['default'], r['reduced_paper']
        lines += ['## Step breakdown', '',
                  '`network_seconds` is the network\'s own work jitted alone (student forward + backward, target',
                  'forward); `step_seconds` what the step dispatches to the device with the default placement: the',
                  '`update` program (loss, gradient, RAdam, two EMAs, skip logic, metrics) on a batch whose noise the',
                  'host has already drawn and OT-paired. `host_pairing_seconds` is that host work for one batch, done',
                  'steps ahead in the input pipeline\'s threads.', '',
                  '| | default (digits, batch 64) | reduced paper UNet (32 ch, batch 8) |', '|---|---|---|']
        for key, fmt in (('step_seconds', '{:.4f}'), ('network_seconds', '{:.4f}'), ('overhead_ratio', '{:.3f}'),
                         ('host_pairing_seconds', '{:.4f}'), ('optimizer_ema_seconds', '{:.4f}'),
                         ('data_dependent_while_loops', '{}'), ('compile_seconds', '{:.1f}'),
                         ('xla_over_analytic', '{:.3f}'), ('mfu_cpu', '{:.3f}')):
            lines.append(f'| {key} | {_fmt(d.get(key), fmt)} | {_fmt(p.get(key), fmt)} |')
    if 'compiles' in r:
        c = r['compiles']
        lines += ['', f"compiles_per_run: **{c['compiles_per_run']}** over {c['steps']} steps crossing "
                  f"N = {c['stages_crossed']}"]
    if 'loop' in r:
        lp = r['loop']
        lines += ['', f"The whole training loop on the default config (`loop.train`: input pipeline with the host's "
                  f"noise + OT pairing in its threads, dispatch, logging) takes {lp['loop_seconds_per_step']:.4f} s per "
                  f"step against {lp['step_seconds']:.4f} s for the compiled update alone, timed straight after: "
                  f"loop_over_step **{lp['loop_over_step']:.3f}** (medians over blocks of 100 steps, after the "
                  f"compile; host and device share the same 2 cores here)."]
    if 'device_program_while_loops' in r:
        w = r['device_program_while_loops']
        lines += ['', '## The OT pairing off the device', '',
                  f"device_program_while_loops (default config; data-dependent `while` ops, i.e. without a "
                  f"`known_trip_count`, in the compiled HLO of every program the step dispatches to the mesh): "
                  f"**{{\"host\": {w['host']}, \"device\": {w['device']}}}**; per program: host "
                  f"{w['host_programs']}, device {w['device_programs']}. The RNG's fixed 5-round threefry loops "
                  f"have a known trip count and are not counted."]
        if 'update_data_dependent_while_loops' in r.get('ot_fraction', {}):
            lines += ['', f"The paper's update program (151M-parameter UNet) holds "
                      f"{r['ot_fraction']['update_data_dependent_while_loops']} data-dependent loops."]
    if 'hungarian_iterations' in r:
        h = r['hungarian_iterations']
        lines += ['', 'hungarian_iterations: loop iterations of one exact matching (ott-jax -> optax\'s Hungarian) on',
                  'latent-shaped data (x ~ 0.5 N(0,1) against unit noise, 4,096-d), counted by a host callback in',
                  'every iteration of the real algorithm (`benchmarks/pairing.py`). On a GPU each iteration is at',
                  'least a kernel launch and a predicate read back to the host.', '',
                  '| per-device batch | ' + ' | '.join(h) + ' |', '|---|' + '---|' * len(h)]
        for k in ('augmenting_path', 'backtracking', 'total'):
            lines.append(f'| {k} | ' + ' | '.join(str(v[k]) for v in h.values()) + ' |')
    if 'host_pairing' in r:
        hp = r['host_pairing']
        lines += ['', 'host_pairing: noise + exact OT on the host (`HostPairer`, jitted on the CPU backend), one call '
                  'pairing k device batches of 128 with k threads:', '',
                  '| threads | seconds per call | of which noise (one thread, all rows) | seconds per device batch | '
                  'examples/s |', '|---|---|---|---|---|']
        for k, v in hp.items():
            if isinstance(v, dict):
                lines.append(f"| {v['threads']} | {v['seconds_per_call']:.4f} | {v['noise_seconds_per_call']:.4f} | "
                             f"{v['seconds_per_device_batch']:.4f} | {v['examples_per_s']:.0f} |")
        lines += ['', f"thread speed-up {hp['thread_speedup']:.2f}x (k threads on this machine's {r['machine']['cpus']} "
                  f"cores: the k matchings run in parallel, each its own CPU program)."]
    if 'host_pairing_headroom' in r:
        h = r['host_pairing_headroom']
        a = h['assumptions']
        lines += ['', '### host_pairing_headroom (a projection on paper)', '',
                  '| host | accelerators consume examples/s | host pairing examples/s | headroom |', '|---|---|---|---|']
        for name, v in h.items():
            if name != 'assumptions':
                lines.append(f"| {name} | {v['accelerator_examples_per_s']:.0f} (step {v['step_seconds_projected'] * 1e3:.1f} ms "
                             f"at per-device batch {a['per_device_batch']}) | {v['host_pairing_examples_per_s']:.0f} | "
                             f"**{v['headroom']:.1f}** |")
        lines += ['', 'Assumptions:',
                  f"- step FLOPs per example {a['step_flops_per_example'] / 1e9:.1f} GFLOP ({a['step_flops']});",
                  f"- MFU {a['mfu']:.0%} of the {a['precision']};",
                  f"- {a['pairing_cores_per_host']} pairing cores (threads) per host, {a['cores_note']};",
                  f"- per-core rate {a['host_examples_per_s_per_core']:.0f} examples/s: {a['per_core_rate']}."]
    if 'ot_seconds' in r:
        lines += ['', '## OT coupling solvers', '', '| OT per-device batch | ' + ' | '.join(str(b) for b in (16, 32, 64, 128, 256)) + ' |',
                  '|---|' + '---|' * 5]
        for m in ('exact', 'sinkhorn'):
            lines.append(f'| {m} (s) | ' + ' | '.join(f"{r['ot_seconds'][f'{m}_{b}']:.4f}" for b in (16, 32, 64, 128, 256)) + ' |')
    if 'device_pair_noise_seconds' in r.get('ot_fraction', {}):
        o = r['ot_fraction']
        how = (f"measured at per-device batch {o['measured_batch']} ({o['measured_step_seconds']:.1f} s) and scaled "
               f"linearly to {o['per_device_batch']}" if o['step_extrapolated'] else 'measured')
        lines += ['', f"The paper step (151M-parameter UNet) at per-device batch {o['per_device_batch']}: "
                  f"{o['step_seconds']:.1f} s ({how}). With `placement='device'` its pair_noise program takes "
                  f"{o['device_pair_noise_seconds']:.4f} s here (ot_fraction {o['ot_fraction']:.5f}; a CPU hides the "
                  f"loop's cost, see above); with the default placement the device spends nothing on it and the "
                  f"host {o['host_pairing_seconds']:.4f} s, steps ahead."]
    if 'peak_memory_paper' in r:
        lines += ['', '## Peak memory of the paper step', '',
                  'The paper\'s UNet with NsLN (158.4M trainable parameters; 151.3M with GroupNorm, spec §12), float32, RAdam +',
                  '2 EMAs: XLA\'s memory analysis of the compiled update program (not run): arguments + outputs + temporaries -',
                  'donated aliases. Replicated against sharded (FSDP) state, and DiT-B/2 / DiT-XL/2, on 8 devices:',
                  '[fsdp_memory.md](fsdp_memory.md) (`python benchmarks/fsdp_memory.py`).', '',
                  '| per-device batch | temp GB | arguments GB | peak estimate GB | fits 16 / 32 / 80 GB |',
                  '|---|---|---|---|---|']
        for v in r['peak_memory_paper'].values():
            fits = ' / '.join('yes' if v['peak_estimate_gb'] <= cap else 'no' for cap in (16, 32, 80))
            lines.append(f"| {v['batch']} | {v['temp_gb']:.2f} | {v['arguments_gb']:.2f} | "
                         f"{v['peak_estimate_gb']:.2f} | {fits} |")
    if 'remat_cpu' in r:
        rc = r['remat_cpu']
        lines += ['', f"Remat on this backend (toy MLP, `remat_on_cpu`): JAX lowers {rc['dots_lowered_plain']} dots without "
                  f"and {rc['dots_lowered_remat']} with jax.checkpoint; the compiled programs have {rc['dots_compiled_plain']} "
                  f"and {rc['dots_compiled_remat']}, temp {rc['temp_mb_plain']:.0f} MB and {rc['temp_mb_remat']:.0f} MB."]
    if 'input_pipeline_default' in r:
        lines += ['', '## Input pipeline (reading only)', '',
                  '| input pipeline | reader examples/s | step consumes examples/s | headroom |', '|---|---|---|---|']
        for k in ('default', 'paper'):
            v = r[f'input_pipeline_{k}']
            lines.append(f"| {k} | {v['reader_examples_per_s']:.0f} | {v['step_consumes_examples_per_s']:.2f} | "
                         f"{v['headroom']:.0f}x |")
    if 'host_pipeline' in r:
        lines += host_pipeline_lines(r['host_pipeline'], r.get('host_pipeline_headroom'))
    if 'vs_pytorch' in r:
        lines += ['', '## Beside PyTorch on the same CPU', '',
                  'Our update program against a PyTorch step of the same UNet (64-channel paper UNet, batch 16), loss',
                  'and optimizer (`benchmarks/vs_pytorch.py`), calls interleaved in one process; one process per XLA',
                  'flag set; `conv_ratio` is one 3x3 convolution (128 channels, 32x32, batch 16) forward + backward,',
                  'ours (XLA, NHWC) over PyTorch\'s (NCHW), timed in the same process.', '',
                  '| XLA flags | ours (s) | PyTorch (s) | vs_pytorch_step_ratio | conv_ratio | load average |',
                  '|---|---|---|---|---|---|']
        for name, v in r['vs_pytorch'].items():
            if 'error' in v:
                lines.append(f"| {name} (`{v['xla_flags']}`) | failed | | {v['error'][-120:].strip()!r} | | |")
            else:
                lines.append(f"| {name} (`{v['xla_flags'] or 'none'}`) | {v['ours_seconds']:.3f} | "
                             f"{v['pytorch_seconds']:.3f} | **{v['vs_pytorch_step_ratio']:.2f}** | "
                             f"{v['conv_ratio']:.2f} | {v['load_average_1min']:.1f} |")
    notes = ''
    if os.path.exists(path):  # keep the hand-written sections below the generated tables
        old = open(path).read()
        starts = [old.index('\n' + h) for h in HAND_WRITTEN if '\n' + h in old]
        if starts:
            notes = old[min(starts):]
    open(path, 'w').write('\n'.join(lines) + '\n' + notes)
