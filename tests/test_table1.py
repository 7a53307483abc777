"""Our rows beside the paper's Table 1: per-dataset comparisons and the whole table's layout."""
import json
import os

from lct_jax.evaluation import paper_table1, table1


def _row(run, method, sampler, nfe, fid, recall, dataset='celebahq256'):
    return {'run': run, 'checkpoint': 'step 294000:ema_0.99993', 'dataset': dataset, 'method': method,
            'sampler': sampler, 'nfe': nfe, 'num_samples': 50000, 'features': 'inception', 'fid': fid,
            'pr_features': 'vgg16', 'precision': 0.7, 'recall': recall}


def _write(workdir, rows):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
        json.dump(rows, f)


def test_paper_table_is_spec_16_1():
    counts = {k: len(rows) for k, (_, rows) in paper_table1.TABLE1.items()}
    assert counts == {'celebahq256': 16, 'lsun_church256': 10, 'ffhq256': 7}
    assert paper_table1.lookup('celebahq256', 'sLCT', 2).fid == 6.93
    assert paper_table1.lookup('lsun_church256', 'iLCT', 1)[3:5] == (52.45, 0.11)
    assert paper_table1.lookup('ffhq256', 'LDM-8†', 250).recall is None
    for dataset in paper_table1.TABLE1:   # the three kinds of run exist on every dataset
        assert all(paper_table1.lookup(dataset, m, n) for m, n in paper_table1.COMPARED)


def test_comparison_and_whole_table_from_workdirs(tmp_path):
    root = str(tmp_path)
    _write(os.path.join(root, 'celeba_slct'), [_row('celebahq256', 'sLCT', '1-step', 1, 9.0, 0.40),
                                               _row('celebahq256', 'sLCT', '2-step', 2, 8.0, 0.45),
                                               _row('celebahq256', 'sLCT', '2-step', 2, 7.5, 0.46)])
    # (the 2-step run was evaluated twice: the later row counts)
    _write(os.path.join(root, 'celeba_ilct'), [_row('celebahq256:ilct', 'iLCT', '1-step', 1, 40.0, 0.1)])
    _write(os.path.join(root, 'celeba_ldm'), [_row('celebahq256:ldm', 'LDM-8†', 'euler-250', 250, 9.9, 0.3),
                                              _row('celebahq256:ldm', 'LDM-8†', 'heun-40', 79, 9.5, 0.31)])
    _write(os.path.join(root, 'ffhq_ldm'), [_row('ffhq256:ldm', 'LDM-8†', 'euler-250', 250, 11.0, 0.2,
                                                 dataset='ffhq256')])
    rows = table1.load_rows([root])
    assert len(rows) == 6                                 # the later 2-step evaluation replaced the first

    text = table1.comparison_markdown(rows, 'celebahq256')
    lines = [l for l in text.splitlines() if l.startswith('| ') and not l.startswith('| Model')]
    assert [l.split(' | ')[:2] for l in lines] == [['| LDM-8†', '250'], ['| iLCT', '1'], ['| iLCT', '2'],
                                                   ['| Ours (sLCT)', '1'], ['| Ours (sLCT)', '2'],
                                                   ['| LDM-8† (heun-40)', '79']]
    # paper FID, paper recall, epochs, batch, then ours: FID, recall, features, run
    assert lines[0].split(' | ')[2:8] == ['8.85', '–', '1.4K', '128', '9.90', '0.30']
    assert lines[2].split(' | ')[2:8] == ['16.84', '0.24', '1.4K', '128', '', '']      # no 2-step iLCT run
    assert lines[4].split(' | ')[2:9] == ['6.93', '0.52', '1.4K', '128', '7.50', '0.46', 'inception / vgg16']
    assert lines[5].split(' | ')[2:8] == ['–', '–', '–', '–', '9.50', '0.31']

    out = str(tmp_path / 'table1.md')
    table1.main([root, '--out', out])
    whole = open(out).read()
    for title in ('## (a) CelebA-HQ', '## (b) LSUN Church', '## (c) FFHQ'):
        assert title in whole
    for model in ('WaveDiff', 'Score SDE', 'RDM', 'DIMSUM', 'LDM-8', 'LFM-8'):
        assert f'| {model} |' in whole
    ffhq = whole.split('## (c) FFHQ')[1]
    assert '| LDM-8† | 250 | 10.23 | – | 1.4K | 128 | 11.00 | 0.20 |' in ffhq
    assert '| Ours (sLCT) | 2 | 8.29 | 0.43 | 1.4K | 128 |  |  |  |  |' in ffhq
    assert '*Ours, not in the paper*' in whole.split('## (b)')[0]          # the Heun row on CelebA-HQ

    path = table1.write_comparison(root, 'celebahq256')
    assert path == os.path.join(root, 'comparison_celebahq256.md') and open(path).read() == text


def test_real_features_for_fid_and_recall_in_one_pass(monkeypatch):
    """--mode=evaluate reads the real images once for both feature sets; recall's stop at pr_max_real."""
    import numpy as np

    from lct_jax.evaluation import reference as reference_mod
    reads = []

    def batches(config, workdir, limit=None, batch=500, codec=None):
        for i in range(3):                      # 3 batches of 7 images
            if limit is None or i * 7 < limit:
                reads.append(i)
                yield np.full((7, 1), i, np.float32)

    monkeypatch.setattr(reference_mod, 'real_image_batches', batches)
    out = reference_mod.reference_feature_sets(None, None, {'fid': lambda x: x, 'pr': lambda x: 2 * x},
                                     {'fid': None, 'pr': 10})
    assert reads == [0, 1, 2] and out['fid'].shape == (21, 1)
    assert out['pr'].ravel().tolist() == [0] * 7 + [2] * 3
    reads.clear()
    out = reference_mod.reference_feature_sets(None, None, {'pr': lambda x: x}, {'fid': None, 'pr': 10})
    assert out['pr'].shape == (10, 1)
    assert reads == [0, 1]                      # no image past the limit is read


def test_files_that_are_not_evaluation_rows_are_skipped_with_a_line_naming_them(tmp_path):
    root = str(tmp_path)
    _write(os.path.join(root, 'run'), [_row('r', 'sLCT', '1-step', 1, 9.0, 0.4)])
    _write(os.path.join(root, 'study'), {'runs': [], 'summary': [], 'final_step': 10})   # a study report
    os.makedirs(os.path.join(root, 'broken'))
    open(os.path.join(root, 'broken', 'results.json'), 'w').write('[{"sampler": "1-st')  # truncated
    _write(os.path.join(root, 'odd'), [{'a': 1}])
    said = []
    rows = table1.load_rows([root], say=said.append)
    assert [r['run'] for r in rows] == ['r']
    assert len(said) == 3 and all(line.startswith('comparison: skipped ') for line in said)
    assert "study" in said[2] and "a study report's results.json" in said[2]
    assert 'broken' in said[0] and 'not valid JSON' in said[0]
    assert 'odd' in said[1] and 'not an evaluation row' in said[1]


def test_a_study_report_and_a_damaged_file_beside_the_run_do_not_break_evaluate(tmp_path, monkeypatch, capsys):
    """--mode=evaluate on a run whose siblings hold a study report's results.json and a damaged one:
    the rows are written (tagged as evaluation rows), the comparison table is rebuilt from the run
    alone, and each other file gets one line. A damaged results.json in the run itself is kept and
    the rows go beside it."""
    from configs import default
    from lct_jax.builders import build_model
    from lct_jax.modes import encode as encode_mode
    from lct_jax.modes import evaluate as evaluate_mode
    from tests.random_params import perturbed_params
    monkeypatch.setenv('LCT_JAX_CACHE', str(tmp_path / 'cache'))
    root = tmp_path / 'runs'
    wd = root / 'run'
    _write(str(root / 'study_report'), {'runs': [{'variant': 'sLCT'}], 'progress': []})
    os.makedirs(root / 'damaged')
    (root / 'damaged' / 'results.json').write_bytes(b'\x00\xff not json')
    c = default.get_config('smoke')
    c.unlock()
    c.data.latent_dir = str(tmp_path / 'latents')
    c.sampling.num_samples = 32
    os.makedirs(wd)
    encode_mode.encode(c, str(wd))
    m = c.model
    params = perturbed_params(build_model(c), (1, m.img_resolution, m.img_resolution, m.in_channels))
    monkeypatch.setattr(evaluate_mode, 'load_params', lambda config, workdir, checkpoint='': (params, 'random'))
    rows = evaluate_mode.evaluate(c, str(wd))
    captured = capsys.readouterr()
    assert [r['sampler'] for r in rows] == ['1-step', '2-step']
    written = json.load(open(wd / 'results.json'))
    assert [r['format'] for r in written] == [table1.ROW_FORMAT] * 2
    assert captured.err.count('comparison: skipped ') == 2
    assert str(root / 'study_report' / 'results.json') in captured.err
    comparison = (root / 'comparison_digits.md').read_text()
    assert comparison.count('| default:smoke (random) |') == 2
    # the run's own results.json damaged: kept byte for byte, the rows beside it
    (wd / 'results.json').write_text('{"not": "rows"}')
    evaluate_mode.evaluate(c, str(wd))
    assert (wd / 'results.json').read_text() == '{"not": "rows"}'
    assert len(json.load(open(wd / 'results.new.json'))) == 2
    assert 'kept as it is' in capsys.readouterr().err
