"""A study's report: results.json (every run's rows + the summary), results.md, curves.png, and
grids/ (each variant's final sample grids, from its first finished seed).

Works on whatever has finished: the missing, partial and running runs are
listed, and every number says over how many seeds it was taken.
"""
from __future__ import annotations

import os

from lct_jax import writer
from lct_jax.study import aggregate, pins
from lct_jax.study.spec import Study
from lct_jax.untrusted import UnreadableFileError, read_json


def _fmt(x, digits: int = 3) -> str:
    return '–' if x is None else f'{x:.{digits}f}'


def _mean_std(e: dict, digits: int = 3) -> str:
    """'mean ± std' of a summary entry; one seed has no spread to show."""
    return f'{_fmt(e["mean"], digits)} ± {_fmt(e["std"], digits) if e["n"] > 1 else "–"}'


def _signed_delta(d: dict) -> tuple[str, str]:
    """('+m.mm', '[+lo, +hi]') of a paired difference: its mean and Student-t interval."""
    t = f'[{d["t95"][0]:+.2f}, {d["t95"][1]:+.2f}]' if 't95' in d else '–'
    return f'{d["mean"]:+.2f}', t


def _interval(d: dict, key: str = 'ci95') -> str:
    return f'[{_fmt(d[key][0])}, {_fmt(d[key][1])}]' if d.get('n') and key in d else '–'


def _verdict(d: dict | None) -> str:
    """What the paired difference's t interval says: lower FD (better) / higher (worse) / no evidence."""
    if not d or 't95' not in d:
        return '–'
    lo, hi = d['t95']
    return 'lower FD' if hi < 0 else 'higher FD' if lo > 0 else 'no evidence'


def _table(summary: list[dict], step) -> list[str]:
    lines = ['| variant | sampler | seeds | FD mean ± std | bootstrap 95% | Δ vs baseline | Δ bootstrap 95% '
             '| Δ t 95% | Δ reads |',
             '|---|---|---|---|---|---|---|---|---|']
    for e in (e for e in summary if e['step'] == step):
        d = e.get('vs_baseline')
        lines.append(f'| {e["variant"]} | {e["sampler"]} | {e["n"]} | {_mean_std(e)} | '
                     f'{_interval(e)} | {_fmt(d["mean"]) if d else "–"} | {_interval(d) if d else "–"} | '
                     f'{_interval(d, "t95") if d else "–"} | {_verdict(d)} |')
    return lines


def markdown(study: Study, summary: list[dict], progress_entries: list[dict], step: int | None,
             demonstration: str = '', late: list[dict] | None = None, late_steps=()) -> str:
    lines = [f'# Study `{study.name}`', '']
    if demonstration:
        lines += [f'> **DEMONSTRATION, NOT A RESULT.** {demonstration}', '']
    lines += [f'Config `{study.config}`; variants {", ".join(v.name for v in study.variants)}; seeds '
              f'{list(study.seeds)}; baseline for paired differences: `{study.baseline}`. Study file: '
              f'`{study.source}`.', '']
    not_done = [e for e in progress_entries if e['state'] != 'done']
    if not_done:
        lines += ['**Not finished** (left out of the numbers below): '
                  + ', '.join(f'{e["variant"]}/seed {e["seed"]} ({e["state"]})' for e in not_done), '']
    if step is None:
        return '\n'.join(lines + ['No evaluated run yet.']) + '\n'
    lines += [f'## Fréchet distance at step {step} (lower is better)', '',
              'mean ± std over seeds with the bootstrap 95% interval of the mean; the paired difference '
              f'(variant − {study.baseline}, same seeds) with its bootstrap and Student-t 95% intervals, and '
              'what the t interval says.', ''] + _table(summary, step)
    if late and len(late_steps) > 1:
        lines += ['', f'## Fréchet distance averaged over steps {", ".join(map(str, late_steps))} '
                  '(per seed, then over seeds)', '',
                  'The same table with each seed\'s FD averaged over its last evaluated checkpoints: less '
                  'checkpoint-to-checkpoint noise in the per-seed values.', ''] + _table(late, late_steps[-1])
    lines += ['', 'The bootstrap enumerates every resample for up to 6 seeds; with 3 seeds its 95% interval is '
              'exactly [min, max] of the seeds: a description of the spread, not a calibrated interval. The '
              'Student-t interval (mean ± 4.30 · std / √3 at 3 seeds) is calibrated if the per-seed values are '
              'normal; "no evidence" = it contains 0, which at 3 seeds only a large, consistent difference '
              'escapes.',
              'Every checkpoint and seed: `results.json` (`runs`); curves with bands: `curves.png`; final '
              'sample grids of each variant\'s first finished seed: `grids/`.']
    return '\n'.join(lines) + '\n'


def plot_curves(summary: list[dict], path: str, title: str = '') -> None:
    """FD against training step per sampler: the mean over seeds with its bootstrap 95% band. One
    colour per variant in every panel, and one legend for the figure: a variant sampled its own way
    (the LDM's Euler 250) has a panel of its own, and the others' colours must not change with it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    samplers = sorted({str(e['sampler']) for e in summary})
    variants = list(dict.fromkeys(e['variant'] for e in summary))
    palette = plt.get_cmap('tab10' if len(variants) <= 10 else 'tab20')
    colour = {v: palette(i % palette.N) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(samplers), figsize=(5 * len(samplers), 4), sharey=True, squeeze=False)
    legend = {}
    for ax, sampler in zip(axes[0], samplers):
        for variant in variants:
            pts = sorted((e['step'], e['mean'], *e['ci95']) for e in summary
                         if e['variant'] == variant and str(e['sampler']) == sampler and e.get('n'))
            if not pts:
                continue
            steps, mean, lo, hi = zip(*pts)
            n = max(e['n'] for e in summary if e['variant'] == variant and str(e['sampler']) == sampler)
            line, = ax.plot(steps, mean, marker='o', color=colour[variant])
            ax.fill_between(steps, lo, hi, color=colour[variant], alpha=0.2)
            legend.setdefault(variant, (line, f'{variant} (n={n})'))
        ax.set_title(f'{sampler} sampling'); ax.set_xlabel('training step'); ax.set_yscale('log')
    axes[0][0].set_ylabel('Fréchet distance (mean, bootstrap 95% band)')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if legend:
        handles, labels = zip(*legend.values())
        fig.legend(handles, labels, fontsize=8, loc='center left', bbox_to_anchor=(1.0, 0.5))
    writer.save_figure(fig, path, dpi=110, bbox_inches='tight')
    plt.close(fig)


def copy_grids(runs, progress_entries: list[dict], out_dir: str) -> list[str]:
    """The final sample grids (<workdir>/samples/step_<last>_<label>.png) of each variant's first
    finished seed, as <out_dir>/grids/<variant>_seed<s>_<label>.png; the paths written."""
    import re
    done = {(e['variant'], e['seed']) for e in progress_entries if e['state'] == 'done'}
    written, seen = [], set()
    pattern = re.compile(r'step_(\d+)_(.+)\.png$')
    for r in runs:
        folder = os.path.join(r.workdir, 'samples')
        if r.variant in seen or (r.variant, r.seed) not in done or not os.path.isdir(folder):
            continue
        found = [(int(m.group(1)), m.group(2), f) for f in os.listdir(folder) if (m := pattern.match(f))]
        if not found:
            continue
        last = max(step for step, _, _ in found)
        os.makedirs(os.path.join(out_dir, 'grids'), exist_ok=True)
        for step, label, f in sorted(found):
            if step == last:
                dest = os.path.join(out_dir, 'grids', f'{r.variant}_seed{r.seed}_{label}.png')
                writer.copy_file(os.path.join(folder, f), dest)
                written.append(dest)
        seen.add(r.variant)
    return written


def kept_runs(out_dir: str, result: dict) -> list[str]:
    """The finished runs of the report already in `out_dir` that `result` lacks (sorted 'variant/seed_s'):
    what replacing it would drop. A damaged results.json there is an error: nothing is replaced."""
    path = os.path.join(out_dir, 'results.json')
    if not os.path.exists(path):
        return []
    try:
        old = read_json(path, 'a study report', expect=dict)
    except UnreadableFileError as e:
        raise UnreadableFileError(f'{e}; the report was not rewritten (move the damaged file away)') from None
    return sorted(f'{v}/seed_{s}' for v, s in done_runs(old) - done_runs(result))


def done_runs(result: dict) -> set[tuple[str, int]]:
    """The (variant, seed) pairs a study report (results.json) counts as finished."""
    progress = result.get('progress') if isinstance(result, dict) else None
    if not isinstance(progress, list):
        return set()
    return {(str(e.get('variant')), e.get('seed')) for e in progress
            if isinstance(e, dict) and e.get('state') == 'done'}


def write_report(study: Study, runs, progress_entries: list[dict], out_dir: str, demonstration: str = '',
                 replace: bool = False) -> dict:
    """Write results.json, results.md, curves.png and grids/ into `out_dir`; the report as a dict,
    with 'written_to' (the results.json written) and 'dropped' (finished runs of the report that was
    there and is not in this one). A report there holding finished runs this one lacks is kept
    unless `replace`: this one goes beside it (results.new.json, results.new.md, curves.new.png)."""
    rows = aggregate.collect_rows(runs)
    done = {(e['variant'], e['seed']) for e in progress_entries if e['state'] == 'done'}
    # Numbers come from finished runs only: a half-evaluated run would bias the later steps.
    rows = [r for r in rows if (r['variant'], r['seed']) in done]
    # ... and from runs that read the study's pinned inputs (pins.py): the others are named, not averaged.
    excluded, left_out = {}, set()
    if study.pins:
        for r in runs:
            got = pins.recorded(r.workdir)
            if (r.variant, r.seed) in done and got != study.pins:
                excluded[r.key] = 'no record of its inputs' if got is None else f'trained on other inputs: {got}'
                left_out.add((r.variant, r.seed))
        rows = [r for r in rows if (r['variant'], r['seed']) not in left_out]
    summary = aggregate.summarise(rows, [v.name for v in study.variants], study.baseline)
    step = aggregate.final_step(rows)
    late_rows, late_steps = aggregate.late_average_rows(rows)
    late = aggregate.summarise(late_rows, [v.name for v in study.variants], study.baseline)
    result = {'study': study.name, 'config': study.config, 'study_file': study.source,
              'variants': {v.name: {'config': v.config_arg, 'overrides': list(v.overrides)} for v in study.variants},
              'seeds': list(study.seeds), 'baseline': study.baseline, 'overrides': list(study.overrides),
              'demonstration': demonstration or None, 'final_step': step,
              'progress': [{k: e[k] for k in ('variant', 'seed', 'state', 'step', 'total_steps')}
                           for e in progress_entries],
              'pins': dict(study.pins), 'excluded_runs': excluded,
              'runs': rows, 'summary': summary,
              'summary_late_average': {'steps': late_steps, 'summary': late}}
    os.makedirs(out_dir, exist_ok=True)
    dropped = kept_runs(out_dir, result)
    beside = bool(dropped) and not replace
    name = writer.beside if beside else (lambda p: p)
    text = markdown(study, summary, progress_entries, step, demonstration, late, late_steps)
    if excluded:
        text += ('\n## Left out: finished runs not trained on the study\'s pinned inputs\n\n'
                 + ''.join(f'- {k}: {why}\n' for k, why in sorted(excluded.items())))
    writer.write_json(name(os.path.join(out_dir, 'results.json')), result, newline=False)
    writer.write_text(name(os.path.join(out_dir, 'results.md')), text)
    if rows:
        plot_curves(summary, name(os.path.join(out_dir, 'curves.png')),
                    f'{study.name}' + (' (demonstration)' if demonstration else ''))
    if not beside:  # the kept report's grids stay with it
        copy_grids(runs, progress_entries, out_dir)
    return dict(result, written_to=name(os.path.join(out_dir, 'results.json')), dropped=dropped)
