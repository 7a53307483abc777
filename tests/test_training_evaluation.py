"""FID during training (evaluation.every), its resume rule, the best-checkpoint record against
retention, and the curves over checkpoints and NFE (--mode=evaluate --checkpoint=all)."""
import json
import os
import shutil

import numpy as np
import pytest

from configs import default
from lct_jax.main import checkpoint_arg
from lct_jax.train import in_training_evaluation as during_training

EVAL = {'evaluation.every': 10, 'evaluation.num_samples': 32, 'sampling.batch_size': 16}


def config(**overrides):
    c = default.get_config('smoke')
    with c.unlocked():
        for k, v in {**EVAL, **overrides}.items():
            section, key = k.split('.') if '.' in k else (None, k)
            (c[section] if section else c)[key] = v
    return c


def _fid_steps(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    return [r['step'] for r in rows if 'fid/1-step' in r]


def _record_steps(workdir):
    return [(r['step'], r['sampler']) for r in during_training.read_record(workdir)]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """The smoke run (20 steps) with an evaluation every 10 steps, and its latents beside it."""
    from lct_jax.train import loop
    wd = str(tmp_path_factory.mktemp('evaluated') / 'run')
    out = loop.train(config(), wd, show_progress=False)
    return wd, out


def test_rows_at_the_configured_steps_and_no_recompile(run):
    wd, out = run
    assert out['trace_count'] == 1                        # the train step compiled once, evaluations beside it
    assert _fid_steps(wd) == [10, 20]
    assert _record_steps(wd) == [(10, '1-step'), (10, '2-step'), (20, '1-step'), (20, '2-step')]
    rows = during_training.read_record(wd)
    assert all(np.isfinite(r['fid']) and 0 <= r['recall'] <= 1 and r['num_samples'] == 32 for r in rows)
    best = json.load(open(os.path.join(wd, during_training.BEST)))
    for sampler in ('1-step', '2-step'):
        fids = {r['step']: r['fid'] for r in rows if r['sampler'] == sampler}
        assert best[sampler]['fid'] == min(fids.values()) and fids[best[sampler]['step']] == best[sampler]['fid']
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(os.path.join(wd, 'tensorboard'), size_guidance={'scalars': 0})
    events.Reload()
    assert [e.step for e in events.Scalars('fid/2-step')] == [10, 20]


def test_a_resume_neither_repeats_nor_skips_an_evaluation(run, tmp_path):
    """Stopped after the checkpoint of step 20 and before its evaluation: the resumed run evaluates
    step 20 (and step 10 is not evaluated again); resumed once more, it evaluates nothing. (Rows
    after the restored step: test_the_record_follows_the_history_rule.)"""
    from lct_jax.train import loop
    wd = str(tmp_path / 'run')
    shutil.copytree(run[0], wd)
    for name in (during_training.RECORD, 'metrics.jsonl'):   # as if killed before step 20's evaluation
        path = os.path.join(wd, name)
        lines = [line for line in open(path) if not (json.loads(line)['step'] == 20 and 'fid' in line)]
        open(path, 'w').writelines(lines)
    os.remove(os.path.join(wd, during_training.BEST))
    out = loop.train(config(), wd, show_progress=False)
    assert out['final_step'] == 20 and _fid_steps(wd) == [10, 20]
    assert _record_steps(wd) == [(10, '1-step'), (10, '2-step'), (20, '1-step'), (20, '2-step')]
    assert set(json.load(open(os.path.join(wd, during_training.BEST)))) == {'1-step', '2-step'}
    loop.train(config(), wd, show_progress=False)                     # finished: nothing evaluated again
    assert [s for s, _ in _record_steps(wd)] == [10, 10, 20, 20] and _fid_steps(wd) == [10, 20]


def test_the_record_follows_the_history_rule(tmp_path):
    wd = str(tmp_path)
    with open(os.path.join(wd, during_training.RECORD), 'w') as f:
        for step in (10, 20, 30):
            f.write(json.dumps({'step': step, 'sampler': '1-step', 'fid': float(step)}) + '\n')
        f.write('{"step": 40, "sampl')                                  # a line cut by a kill
    assert during_training.truncate_record(wd, 20) == 2
    assert [r['step'] for r in during_training.read_record(wd)] == [10, 20]
    dropped = [json.loads(line) for line in open(os.path.join(wd, during_training.DROPPED))]
    assert [d['dropped_when_resuming_from_step'] for d in dropped] == [20, 20]
    best = during_training.best_by_sampler([{'step': 10, 'sampler': 'a', 'fid': 3.0},
                                            {'step': 20, 'sampler': 'a', 'fid': 2.0},
                                            {'step': 30, 'sampler': 'a', 'fid': 2.0},
                                            {'step': 30, 'sampler': 'b', 'fid': float('nan')}])
    assert best == {'a': {'step': 20, 'fid': 2.0, 'checkpoint': 'checkpoints/20'}}


def test_the_best_checkpoint_survives_retention(tmp_path):
    import jax.numpy as jnp

    from lct_jax.train import checkpoints
    wd = str(tmp_path)
    with open(os.path.join(wd, during_training.BEST), 'w') as f:
        json.dump({'1-step': {'step': 2, 'fid': 1.0}}, f)
    manager = checkpoints.make_manager(wd, keep=1, async_save=False,
                                       protected=lambda: during_training.protected_steps(wd))
    for step in (1, 2, 3, 4):
        checkpoints.save(manager, step, {'w': jnp.full((3,), float(step))})
    checkpoints.wait(manager)
    assert sorted(int(s) for s in os.listdir(os.path.join(wd, 'checkpoints')) if s.isdigit()) == [2, 4]
    checkpoints.close(manager)


def test_curves_over_checkpoints_and_nfe(run, capsys):
    """--checkpoint=all (= --checkpoints=all) on the smoke run: each checkpoint evaluated once with three samplers (1, 2
    and 3 steps), rows in results.json, both plots; a second call evaluates nothing."""
    from PIL import Image

    from lct_jax.modes import evaluate as evaluate_mode
    wd = run[0]
    c = config(**{'sampling.num_samples': 32})
    with c.unlocked():
        c.evaluation.curve_samplers = ('consistency:0', 'consistency:0,420,640', 'consistency:0,320,480,640')
    rows = evaluate_mode.evaluate(c, wd, 'all')
    steps = sorted(int(s) for s in os.listdir(os.path.join(wd, 'checkpoints')) if s.isdigit())
    assert steps == [10, 20]
    assert sorted((r['step'], r['nfe']) for r in rows) == [(s, n) for s in steps for n in (1, 2, 3)]
    saved = json.load(open(os.path.join(wd, 'results.json')))
    assert len(saved) == 6 and all(r['checkpoint'].startswith('step ') for r in saved)
    for name in ('fid_over_steps.png', 'fid_over_nfe.png'):
        assert min(Image.open(os.path.join(wd, name)).size) > 100
    assert evaluate_mode.evaluate(c, wd, 'all') == []                               # resumable: nothing left to do
    assert evaluate_mode.evaluate(c, wd, '10,20') == []
    assert evaluate_mode.evaluate(c, wd, checkpoint_arg('', '20', 'evaluate')) == []   # --checkpoints=20: a curve of one
    with pytest.raises(FileNotFoundError, match=r'no checkpoint of step\(s\) \[15\]'):
        evaluate_mode.evaluate(c, wd, '10,15')


def test_checkpoints_flag_is_the_curves_form_of_checkpoint():
    assert checkpoint_arg('', 'all', 'evaluate') == 'all'
    assert checkpoint_arg('', '500,1000', 'evaluate') == '500,1000,'
    assert checkpoint_arg('', '500', 'evaluate') == '500,'      # still a curve, not one checkpoint
    assert checkpoint_arg('ckpt/500', '', 'sample') == 'ckpt/500'
    from lct_jax.evaluation.curves import wants_curves
    assert wants_curves(checkpoint_arg('', '500', 'evaluate')) and not wants_curves('500')
    with pytest.raises(ValueError, match='not both'):
        checkpoint_arg('500', 'all', 'evaluate')
    with pytest.raises(ValueError, match='for --mode=evaluate'):
        checkpoint_arg('', 'all', 'sample')


# slow (~3 min on 2 shared cores): two real processes; the single-process tests above cover the rows and the resume
@pytest.mark.slow
def test_two_processes_evaluate_during_training(tmp_path):
    from tests import runs
    wd = str(tmp_path / 'two')
    port = runs.free_port()
    flags = ['--config.evaluation.every=10', '--config.evaluation.num_samples=32', f'--coordinator_address=127.0.0.1:{port}',
             '--num_processes=2']
    procs = [runs.start(runs.command(wd, *flags, f'--process_id={i}', devices=2), str(tmp_path / f'two{i}.txt'))
             for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=600) == 0, open(tmp_path / f'two{i}.txt').read()[-3000:]
    assert _record_steps(wd) == [(10, '1-step'), (10, '2-step'), (20, '1-step'), (20, '2-step')]
    assert _fid_steps(wd) == [10, 20] and os.path.exists(os.path.join(wd, during_training.BEST))
