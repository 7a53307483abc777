"""The package's layout: the layering contract, no import circles, one interface for every
objective, a new objective in one file, sampler/objective mismatches refused up front, and a
training loop that makes no implicit host transfer between log steps (docs/layout.md)."""
import ast
import dataclasses
import importlib
import os
import subprocess
import sys
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from lct_jax import builders, objectives
from lct_jax.objectives import OBJECTIVES, edm
from lct_jax.objectives.base import Batch, Objective, network
from tests import import_graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = 'lct_jax'


def test_lint_imports_keeps_the_layers_contract():
    """import-linter's `layers` contract in pyproject.toml (imports inside functions included)."""
    out = subprocess.run([sys.executable, '-c', 'from importlinter.cli import lint_imports_command; '
                          'lint_imports_command()', '--no-cache'], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert 'Contracts: 1 kept, 0 broken.' in out.stdout


def test_no_import_circles_counting_imports_inside_functions():
    edges = import_graph.imports()
    assert import_graph.cycles(edges) == []
    assert len(import_graph.modules()) > 90 and len(edges) > 300   # the graph is the real one


def test_imports_inside_functions_only_in_the_entry_point():
    """The library imports at module level; only lct_jax.main defers the library until it runs a
    mode, so `--help` and `--mode=variants` answer without importing JAX (0.4 s instead of ~5 s)."""
    inside = [(e.source, e.line, e.text) for e in import_graph.imports() if e.in_function]
    assert inside and {source for source, _, _ in inside} == {'lct_jax.main'}, inside


def _package_imports_outside_the_package():
    """(file, line, module, name or None) of every absolute import of lct_jax in the repository's
    Python files outside the package (tests, benchmarks, configs, launchers, study scripts)."""
    found = []
    for top in ('tests', 'benchmarks', 'configs', 'docs', 'launch'):
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, top)):
            for name in sorted(f for f in filenames if f.endswith('.py')):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                rel = os.path.relpath(path, ROOT)
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and not node.level and (node.module or '').startswith(PKG):
                        found += [(rel, node.lineno, node.module, a.name) for a in node.names]
                    elif isinstance(node, ast.Import):
                        found += [(rel, node.lineno, a.name, None) for a in node.names if a.name.startswith(PKG)]
    return found


def test_every_import_of_the_package_from_outside_it_resolves():
    """Slow tests, benchmarks and study scripts import the package too, and the default run does
    not execute them: a module or name that moves must not leave one of them broken, as the layout
    change left `tests/test_autoencoder_training.py` (slow) and `benchmarks/sections/ot_solvers.py`."""
    imports = _package_imports_outside_the_package()
    broken = []
    for rel, line, module, name in imports:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            broken.append(f'{rel}:{line}: {module} ({e})')
            continue
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f'{module}.{name}')
            except ImportError:
                broken.append(f'{rel}:{line}: {module} has no {name!r}')
    assert len(imports) > 300 and not broken, broken   # > 300: the walk found the real files


def test_every_objective_is_registered_and_declares_its_interface():
    found = {cls for module in (objectives.slct, objectives.ldm, objectives.meanflow, objectives.sct, objectives.imf)
             for cls in vars(module).values()
             if isinstance(cls, type) and issubclass(cls, Objective) and cls is not Objective}
    assert found == set(OBJECTIVES.values())
    for name, cls in OBJECTIVES.items():
        assert cls.name == name and dataclasses.is_dataclass(cls)
        assert cls.samplers and set(cls.samplers) <= set(builders.sampling.FAMILIES)
        assert cls.metric_names and 'loss' not in cls.metric_names
    from configs import default
    for variant, name in (('', 'slct'), ('ilct', 'slct'), ('ldm', 'ldm'), ('meanflow', 'meanflow'), ('sct', 'sct'),
                          ('imf', 'imf')):
        obj = builders.build_objective(default.get_config(variant))
        assert type(obj) is OBJECTIVES[name]


@dataclasses.dataclass(frozen=True)
class ToyDenoiser(Objective):
    """A new method in one class: EDM denoising at one fixed noise level, plain MSE."""
    sigma: float = 1.0
    sigma_min: float = edm.SIGMA_MIN
    sigma_max: float = edm.SIGMA_MAX
    rho: float = edm.RHO
    sigma_data: float = edm.SIGMA_DATA

    name: ClassVar[str] = 'toy'
    config_section: ClassVar[str] = 'toy'
    samplers: ClassVar[tuple] = ('euler',)
    metric_names: ClassVar[tuple] = ('toy_mse',)

    def loss(self, params, model, batch: Batch, key, step):
        sigma = jnp.full((batch.x.shape[0],), self.sigma)
        out = edm.consistency_fn(network(model, batch.labels), params, batch.x + self.sigma * batch.z, sigma, self,
                                 train=True, rngs={'dropout': key})
        mse = jnp.mean(jnp.square(out - batch.x))
        return mse, {'loss': mse, 'toy_mse': mse}


def test_a_new_objective_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
    from configs import default
    from lct_jax.train import loop
    monkeypatch.setitem(OBJECTIVES, 'toy', ToyDenoiser)
    c = default.get_config('smoke')
    c.unlock()
    c.toy = ml_collections.ConfigDict({'sigma': 0.7})
    c.objective = 'toy'
    c.total_steps, c.log_every, c.checkpoint_every, c.sample_every = 2, 1, 2, 2
    c.sampling.update(sampler='euler', ode_steps=2)
    c.lock()
    builders.check_config(c)
    metrics = loop.train(c, str(tmp_path), show_progress=False)
    assert metrics['final_step'] == 2 and float(metrics['toy_mse']) > 0
    assert os.path.exists(tmp_path / 'samples' / 'step_0000002_euler2.png')


def test_a_sampler_the_objective_cannot_use_is_refused_before_anything_is_written(tmp_path):
    workdir = tmp_path / 'never_made'
    out = subprocess.run([sys.executable, '-m', 'lct_jax.main', '--config=configs/default.py:meanflow',
                          '--config.sampling.sampler=consistency', f'--workdir={workdir}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "sampling.sampler='consistency' cannot sample objective='meanflow'" in lines[0]
    assert not workdir.exists()


def accelerator_like_transfer_guard(monkeypatch):
    """On the CPU backend an array lives in host memory, so JAX's transfer guard never fires for a
    device-to-host read (float(x), np.asarray(x), jax.device_get): only host-to-device ones. Make
    every such read raise where the device-to-host guard is 'disallow', as it would on an
    accelerator."""
    from jax._src import array
    from jax._src import config as jax_config
    original = array.ArrayImpl._value

    def guarded(self):
        if jax_config.transfer_guard_device_to_host.value == 'disallow':
            raise RuntimeError('Disallowed device-to-host transfer (an implicit read of a device array)')
        return original.fget(self)
    monkeypatch.setattr(array.ArrayImpl, '_value', property(guarded))


def test_the_training_loop_makes_no_implicit_host_transfer_between_log_steps(tmp_path, monkeypatch):
    """Under jax.transfer_guard('disallow') for every step that logs, saves, samples and evaluates
    nothing: the host only reads, pairs (in its threads) and places batches explicitly, and
    dispatches the step; it reads nothing back. Checked to fail: a `float(metrics['loss'])` there
    raises (the guard made accelerator-like above)."""
    from configs import default
    from lct_jax.train import loop
    accelerator_like_transfer_guard(monkeypatch)
    c = default.get_config('smoke')
    c.unlock()
    c.total_steps, c.log_every, c.checkpoint_every, c.sample_every = 12, 6, 12, 12
    c.lock()
    metrics = loop.train(c, str(tmp_path), show_progress=False, between_log_steps='disallow')
    assert metrics['final_step'] == 12
    with pytest.raises(Exception, match='Disallowed'):          # both directions are guarded
        with jax.transfer_guard('disallow'):
            float(jnp.ones(()) + 1)
    x = jax.jit(lambda a: a + 1)(jnp.ones(()))
    with pytest.raises(Exception, match='Disallowed'):
        with jax.transfer_guard('disallow'):
            float(x)


def test_runs_recorded_before_the_layout_change_resume_and_evaluate_without_a_flag():
    """config keys are unchanged and new ones default to the old behaviour: a run recorded before
    the change (an exported latent-study run) is a start with no change that needs permission."""
    from configs import digits_latent
    from lct_jax.workdir import record
    run = os.path.join(ROOT, 'docs', 'study', 'latent', 'runs', 'sLCT', 'seed_0')
    current = digits_latent.get_config('ae_long')
    recorded = record.recorded_config(run)
    with current.unlocked():   # the paths and the seed of that run (given on its command line)
        current.data.latent_dir, current.autoencoder.weights = recorded['data']['latent_dir'], recorded['autoencoder']['weights']
        current.train.keep_period = recorded['train']['keep_period']
    changes = record.RunRecord(run).check_start(record.config_as_dict(current), allow_change=False)
    assert changes and all(old == record.ABSENT for old, _ in changes.values()), changes   # only new keys
    merged, skipped = record.apply_recorded(current, recorded, {}, run)
    assert merged.data.tail_power == 0.0 and not merged.model.logvar_head and merged.objective == 'slct'
