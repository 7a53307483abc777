"""What `python -m lct_jax.main` says before any work: --help, --mode=variants, and one-line errors
with the nearest valid name for a mistyped key or variant (tests/test_workdir.py has the finished
run's "nothing to train")."""
import glob
import os
import subprocess
import sys

import pytest

from lct_jax import command_line
from tests import runs

CONFIGS = sorted(p for p in glob.glob(os.path.join(runs.ROOT, 'configs', '*.py'))
                 if os.path.basename(p) not in ('__init__.py', 'base.py', 'variants.py'))


def main(*args, timeout=120):
    """The real command, as a user types it (no --num_cpu_devices: nothing here reaches JAX)."""
    return subprocess.run([sys.executable, '-m', 'lct_jax.main', *args], cwd=runs.ROOT, env=runs.env(),
                          capture_output=True, text=True, timeout=timeout)


def test_help_exits_0_and_explains_modes_overrides_and_variants():
    out = main('--help')
    assert out.returncode == 0, out.stderr
    for text in ('--config.', ':variant', '--mode', 'variants', 'evaluate', 'Examples', 'docs/', '--workdir',
                 '--allow_config_change'):   # the last: the flags' own help follows the usage
        assert text in out.stdout, text
    assert main('-h').returncode == 0


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_config_lists_its_variants_and_each_one_builds(path):
    command_line.make_config_package_importable([f'--config={path}'])
    module = command_line.load_config_module(path)
    table = command_line.config_variants(module)
    assert table, f'{path} has no VARIANTS table'
    listing = command_line.variants_listing(path)
    for name, text in table.items():
        assert text and '\n' not in text, name
        assert f'  {name} ' in listing and text in listing, name
        assert module.get_config(name) is not None      # every listed variant is a real one
    with pytest.raises(ValueError, match='unknown config variant'):
        module.get_config('no_such_variant')


def test_variants_mode_needs_no_workdir_and_exits_0():
    out = main('--config=configs/celebahq256.py', '--mode=variants')
    assert out.returncode == 0, out.stderr
    assert 'ilct ' in out.stdout and 'dit_b2 ' in out.stdout and "CelebA-HQ 1-NFE FID 9.97" in out.stdout
    assert len(out.stdout.splitlines()) == 1 + len(command_line.config_variants(
        command_line.load_config_module(os.path.join(runs.ROOT, 'configs', 'celebahq256.py'))))


def test_a_mistyped_variant_is_one_line_with_the_nearest_name():
    out = main('--config=configs/default.py:ilc', '--workdir=/nonexistent/never_written')
    assert out.returncode == 2
    assert out.stderr.count('\n') == 1 and 'Traceback' not in out.stderr, out.stderr
    assert "error: configs/default.py: unknown config variant 'ilc' (did you mean 'ilct'?); valid: " in out.stderr
    assert not os.path.exists('/nonexistent/never_written')
    # a variant with nothing near it still lists the valid ones
    out = main('--config=configs/celebahq256.py:zzzzzz', '--workdir=/tmp/x')
    assert out.returncode == 2 and 'did you mean' not in out.stderr and 'valid: ilct, ldm, smoke' in out.stderr
    out = main('--config=configs/imagenet256.py:ilct', '--workdir=/tmp/x')   # the config's own reason
    assert out.returncode == 2 and 'no iLCT / LDM-8† baseline exists for this post-paper run' in out.stderr


def test_a_mistyped_key_suggests_the_right_one():
    out = main('--config=configs/default.py', '--workdir=/tmp/x', '--config.model.model_chanels=3')
    assert out.returncode == 2 and out.stderr.count('\n') == 1, out.stderr
    assert "unknown config key 'model.model_chanels' (did you mean 'model.model_channels'?)" in out.stderr
    assert "valid keys: ['attn_resolutions'" in out.stderr
    message = command_line.unknown_key_message(['--config=configs/default.py', '--config.batch_sise=3'])
    assert "(did you mean 'batch_size'?): the top level has no 'batch_sise'" in message


def test_a_missing_workdir_is_one_line_naming_the_mode():
    out = main('--config=configs/default.py', '--mode=evaluate')
    assert out.returncode == 2 and out.stderr.strip() == \
        'error: --workdir is required for --mode=evaluate (see --help)'
