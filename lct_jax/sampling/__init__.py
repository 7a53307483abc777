"""The samplers, one module per family, and the registry that picks them.

    FAMILIES[family]   the module of a sampler family: `configured(sampling_config, objective)`
                       -> the SamplerSpecs a config's rows use; `make(spec, apply_fn, objective,
                       shape, seed, mesh, num_classes)` -> a jitted (params, indices) -> latents

config.sampling.sampler names the family; an objective lists the families that can draw from its
network (`Objective.samplers`), and builders.check_config refuses any other before anything is
written. spec.py holds what every family shares.
"""
from lct_jax.sampling import consistency, imf, meanflow, ode, trigflow
from lct_jax.sampling.spec import SamplerSpec

FAMILIES = {'consistency': consistency, 'euler': ode, 'heun': ode, 'meanflow': meanflow, 'trigflow': trigflow,
            'imf': imf}
SAMPLERS = tuple(FAMILIES)


def check_supported(family: str, objective, what: str = 'sampling.sampler') -> None:
    """A ValueError naming the setting unless `objective` can be sampled with `family`."""
    if family not in FAMILIES:
        raise ValueError(f'{what} {family!r}; valid: {SAMPLERS}')
    if family not in objective.samplers:
        raise ValueError(f"{what}={family!r} cannot sample objective={objective.name!r}: its network is drawn "
                         f"from with {', '.join(repr(s) for s in objective.samplers)}")


def configured_samplers(sampling_config, objective) -> list[SamplerSpec]:
    """config.sampling -> the samplers that --mode=sample / evaluate and the training grids run:
    'consistency': 1-step and 2-step (ts); 'euler' / 'heun': the ODE with ode_steps levels;
    'meanflow': 1-step and 2-step average-velocity jumps."""
    check_supported(sampling_config.sampler, objective)
    return FAMILIES[sampling_config.sampler].configured(sampling_config, objective)


def make_spec_sampler(spec: SamplerSpec, apply_fn, objective, shape, seed: int, mesh=None, num_classes: int = 0):
    """The jitted (params, sample indices) -> latents of a SamplerSpec (sample i of class
    `spec.class_of(i)` for a class-conditional model)."""
    return FAMILIES[spec.method].make(spec, apply_fn, objective, shape, seed, mesh, num_classes)


__all__ = ['FAMILIES', 'SAMPLERS', 'SamplerSpec', 'check_supported', 'configured_samplers', 'make_spec_sampler']
