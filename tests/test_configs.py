"""Every paper config, baseline and ablation loads, locked, with Table 1's settings."""
import pytest

from configs import celebahq256, default, ffhq256, lsun_church256, variants

PAPER = {celebahq256: (294_000, 128, 7.27, 6.93), ffhq256: (764_400, 128, 8.72, 8.29),
         lsun_church256: (1_686_600, 256, 8.87, 7.71)}


@pytest.mark.parametrize('module', list(PAPER), ids=lambda m: m.__name__)
def test_paper_configs_and_every_variant(module):
    steps, batch, fid1, fid2 = PAPER[module]
    c = module.get_config()
    assert (c.total_steps, c.batch_size) == (steps, batch)
    assert (c.evaluation.paper_fid_1step, c.evaluation.paper_fid_2step) == (fid1, fid2)
    assert c.consistency.loss_norm == 'cauchy' and c.coupling.method == 'exact'
    assert c.model.block_norm == c.model.out_norm == 'non-scaling-layer-norm'
    assert c.consistency.diffusion_weight == 5.0 and c.consistency.c_schedule == 'scaling'
    for name in ['ilct', 'smoke', 'ilct,smoke'] + sorted(variants.ABLATIONS):
        v = module.get_config(name)
        with pytest.raises(AttributeError):
            v.not_a_key = 1  # locked
    ilct = module.get_config('ilct')
    assert ilct.consistency.loss_norm == 'huber' and ilct.coupling.method == 'none'
    assert ilct.consistency.diffusion_weight == 0.0 and ilct.model.block_norm == 'group-norm'
    huber = module.get_config('huber')
    assert huber.consistency.loss_norm == 'huber' and huber.evaluation.paper_fid_1step == 9.97
    with pytest.raises(ValueError, match='valid'):
        module.get_config('hubr')


def test_default_and_study_variants():
    c = default.get_config()
    assert c.autoencoder.kind == 'identity' and c.data.source == 'digits'
    for v in default.STUDY_VARIANTS:
        default.get_config(v)
    i = default.get_config('ilct')
    assert (i.coupling.method, i.consistency.loss_norm, i.model.block_norm) == ('none', 'huber', 'group-norm')
    with pytest.raises(ValueError, match='valid'):
        default.get_config('smok')
