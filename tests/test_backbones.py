"""model.kind = 'unet' | 'dit': configs, the builder, and a DiT run through main (train, sample, evaluate)."""
import glob
import json
import os

import pytest

from configs import celebahq256, default, ffhq256, lsun_church256, variants
from lct_jax import builders
from lct_jax.models.dit import DiT
from lct_jax.models.unet import UNet
from tests import runs


def test_every_config_names_its_backbone_and_the_paper_runs_keep_the_unet():
    for module in (default, celebahq256, ffhq256, lsun_church256):
        c = module.get_config()
        assert c.model.kind == 'unet' and isinstance(builders.build_model(c), UNet)


@pytest.mark.parametrize('module', [celebahq256, ffhq256, lsun_church256], ids=lambda m: m.__name__)
def test_dit_b2_variant_of_each_dataset_config(module):
    c = module.get_config('dit_b2')
    model = builders.build_model(c)
    assert isinstance(model, DiT)
    assert (model.input_size, model.in_channels, model.patch_size, model.hidden_size, model.depth,
            model.num_heads) == (32, 4, 2, 768, 12, 12)
    assert c.evaluation.method == 'sLCT:dit_b2' and c.evaluation.paper_fid_1step == 0.0
    # the recipe is the paper's: only the backbone changes
    base = module.get_config()
    assert c.consistency == base.consistency and c.coupling == base.coupling and c.total_steps == base.total_steps
    assert builders.build_model(module.get_config('dit_xl2')).hidden_size == 1152
    smoke = builders.build_model(module.get_config('dit_b2,smoke'))   # a DiT, shrunk to the digits
    assert isinstance(smoke, DiT) and (smoke.input_size, smoke.in_channels, smoke.hidden_size) == (8, 1, 32)
    with pytest.raises(ValueError, match='dit_b2'):
        module.get_config('dit_b3')


def test_builder_errors_name_the_config_fields():
    c = default.get_config('dit')
    with c.unlocked():
        c.model.kind = 'vit'
    with pytest.raises(ValueError, match=r"model.kind 'vit'; valid: \('unet', 'dit'\)"):
        builders.build_model(c)
    c = default.get_config('dit')
    with c.unlocked():
        c.model.dit.patch_size = 3
    with pytest.raises(ValueError, match=r'model.dit \(with model.img_resolution=8\).*divisible by patch_size=3'):
        builders.build_model(c)
    c = default.get_config('dit')
    with c.unlocked():
        c.model.dit.learn_sigma = True
    with pytest.raises(ValueError, match='learn_sigma'):
        builders.build_model(c)


@pytest.mark.slow   # ~145 s on this 2-core CPU (training subprocess, sampling, evaluation)
def test_main_trains_samples_and_evaluates_a_dit(tmp_path):
    """python -m lct_jax.main --config configs/default.py:dit,smoke trains a DiT on the digits (20 steps,
    2 devices, checkpoints and grids); then --mode=sample and --mode=evaluate (their functions, in-process,
    as in tests/test_train.py) read its checkpoint, unchanged code for either backbone."""
    from lct_jax.modes import evaluate as evaluate_mode
    from lct_jax.modes import sample as sample_mode
    w = str(tmp_path / 'dit')
    runs.run(runs.command(w, config='configs/default.py:dit,smoke', devices=2), str(tmp_path / 'train.log'))
    log = open(tmp_path / 'train.log').read()
    assert 'done: step 20' in log and 'compiled train step 1 time(s)' in log
    assert json.load(open(os.path.join(w, 'config.json')))['model']['kind'] == 'dit'
    metrics = [json.loads(line) for line in open(os.path.join(w, 'metrics.jsonl'))]
    assert [m['step'] for m in metrics] == [5, 10, 15, 20] and all(m['grad_norm'] > 0 for m in metrics)
    for label in ('1step', '2step'):
        assert os.path.getsize(os.path.join(w, 'samples', f'step_0000020_{label}.png')) > 0
    config = default.get_config('dit,smoke')
    with config.unlocked():
        config.sampling.update(num_samples=24, batch_size=24)
    sample_mode.sample(config, w)
    assert len(glob.glob(os.path.join(w, 'samples', 'step_20_ema_0.99_2step', '*.png'))) == 24
    rows = evaluate_mode.evaluate(config, w)
    assert [(r['sampler'], r['method']) for r in rows] == [('1-step', 'sLCT:dit'), ('2-step', 'sLCT:dit')]
    assert all(r['fid'] == r['fid'] for r in rows)   # finite numbers, not NaN


def test_the_variant_list_names_every_dit_size():
    assert variants.DIT_VARIANTS['dit_b2'] == 'B/2' and variants.DIT_VARIANTS['dit_xl8'] == 'XL/8'
    assert len(variants.DIT_VARIANTS) == 12
