"""One- and multi-step consistency sampling (spec §14) and EDM ODE samplers (spec §16.5).

Noise is per sample: sample i uses keys derived from fold_in(key(seed), i)
only, so the same seed gives the same images whatever the batch size, the
number of devices or processes. Every sampler starts sample i from the same
x_T = sigma_max * z_i, so a consistency model and a diffusion model trained
on the same data are compared on the same starting noise.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lct_jax import schedules
from lct_jax.objective import Objective, consistency_fn


def class_of(indices, num_classes: int):
    """A class-conditional model draws sample i from class i mod num_classes: any run of
    num_classes consecutive indices is uniform over the classes (the FID over all classes), and
    class c's samples are c, c + num_classes, ... (`class_indices`, the per-class grids)."""
    return jnp.asarray(indices, jnp.int32) % num_classes


def class_indices(label: int, count: int, num_classes: int) -> np.ndarray:
    """The first `count` sample indices of class `label`."""
    return (label + num_classes * np.arange(count)).astype(np.int32)


def _with_labels(apply_fn, indices, num_classes: int):
    if not num_classes:
        return apply_fn
    return functools.partial(apply_fn, labels=class_of(indices, num_classes))


def sample_keys(seed: int, indices) -> jax.Array:
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices))


def step_sigmas(ts, grid_steps: int, obj: Objective) -> np.ndarray:
    """sigma of each index in `ts` on a Karras grid of `grid_steps` points (0 -> sigma_max)."""
    return np.asarray(schedules.karras_sigma(np.asarray(ts), grid_steps, obj.sigma_min,
                                             obj.sigma_max, obj.rho))


def multistep_sample(apply_fn, params, keys, shape, sigmas, obj: Objective):
    """x0 = f(sigma_0 z, sigma_0); then for each later sigma > sigma_min: re-noise and denoise.

    sigmas: the step sigmas (e.g. `step_sigmas((0, 420, 640), 641, obj)`);
    one entry = the one-step sampler. The authors' last index maps to
    sigma_min, where re-noising adds nothing, so it costs no evaluation.
    """
    def noise(k, j):
        return jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(kk, j), shape, jnp.float32))(k)

    n = keys.shape[0]
    x = consistency_fn(apply_fn, params, sigmas[0] * noise(keys, 0),
                       jnp.full((n,), sigmas[0], jnp.float32), obj)
    for j, sigma in enumerate(sigmas[1:], start=1):
        if sigma <= obj.sigma_min:
            break
        x_t = x + np.sqrt(sigma**2 - obj.sigma_min**2) * noise(keys, j)
        x = consistency_fn(apply_fn, params, x_t, jnp.full((n,), sigma, jnp.float32), obj)
    return x


def make_sampler(apply_fn, obj: Objective, shape, sigmas, seed: int, mesh=None, num_classes: int = 0):
    """A jitted (params, sample indices) -> latents; the indices sharded over the mesh if given.

    Sample i's noise comes from fold_in(key(seed), i) only; with num_classes > 0 its class is
    `class_of(i)`.
    """
    sigmas = tuple(float(s) for s in sigmas)

    def fn(params, indices):
        return multistep_sample(_with_labels(apply_fn, indices, num_classes), params, sample_keys(seed, indices),
                                shape, sigmas, obj)

    return _jit_over_mesh(fn, mesh)


def _jit_over_mesh(fn, mesh):
    """jit a (params, indices) -> latents function; indices and output sharded on 'data'.

    The params keep the layout they come in (None: unconstrained), replicated or FSDP-sharded
    (the grids written during an FSDP run): XLA gathers sharded weights where they are used.
    """
    if mesh is None:
        return jax.jit(fn)
    from lct_jax import parallel
    return jax.jit(fn, in_shardings=(None, parallel.batch_sharding(mesh)),
                   out_shardings=parallel.batch_sharding(mesh))


# ----------------------------------------------------------------------------- EDM ODE samplers

ODE_METHODS = ('euler', 'heun')


def karras_ode_sigmas(steps: int, sigma_min=schedules.SIGMA_MIN, sigma_max=schedules.SIGMA_MAX,
                      rho=schedules.RHO) -> np.ndarray:
    """The Karras grid of `steps` levels from sigma_max to sigma_min, then a final 0 (k-diffusion's
    `get_sigmas_karras`, which the authors' `karras_sample` calls)."""
    if steps < 1:
        raise ValueError(f'an ODE sampler needs at least 1 step, got {steps}')
    ramp = np.linspace(0.0, 1.0, steps)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return np.append((hi + ramp * (lo - hi)) ** rho, 0.0).astype(np.float32)


def ode_nfe(steps: int, method: str) -> int:
    """Network evaluations: Euler one per step; Heun two per step except the last (to sigma = 0)."""
    if method not in ODE_METHODS:
        raise ValueError(f'ODE method {method!r}; valid: {ODE_METHODS}')
    return steps if method == 'euler' else 2 * steps - 1


def karras_ode_sample(denoise_fn, x_T, sigmas, method: str = 'euler'):
    """Integrate the PF-ODE dx/dsigma = (x - D(x, sigma)) / sigma down the grid `sigmas`.

    denoise_fn(x, sigma_vector) -> denoised; sigmas descending, ending in 0;
    method 'euler' or 'heun' (EDM's Algorithm 1 without churn: Heun's correction
    on every step except one that ends at sigma = 0, where the derivative is
    undefined and the step is Euler's). One `fori_loop`: traced once, whatever
    the number of steps. Returns the final x.
    """
    if method not in ODE_METHODS:
        raise ValueError(f'ODE method {method!r}; valid: {ODE_METHODS}')
    sigmas = jnp.asarray(sigmas, jnp.float32)
    batch = x_T.shape[0]

    def derivative(x, sigma):
        return (x - denoise_fn(x, jnp.full((batch,), sigma, jnp.float32))) / sigma

    def step(i, x):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = derivative(x, sigma)
        x_euler = x + (sigma_next - sigma) * d
        if method == 'euler':
            return x_euler

        def heun(_):
            return x + (sigma_next - sigma) * 0.5 * (d + derivative(x_euler, sigma_next))

        # A cond, so the last step really costs one evaluation (2n - 1 NFE for n steps).
        return jax.lax.cond(sigma_next > 0, heun, lambda _: x_euler, None)

    return jax.lax.fori_loop(0, sigmas.shape[0] - 1, step, x_T)


def make_ode_sampler(apply_fn, obj, shape, sigmas, method: str, seed: int, mesh=None, num_classes: int = 0):
    """A jitted (params, sample indices) -> latents running `karras_ode_sample` with the denoiser
    D = c_skip x + c_out F (the boundary scalings the model was trained with). Sample i starts
    from sigmas[0] * z_i, z_i from fold_in(key(seed), i) only."""
    sigmas = np.asarray(sigmas, np.float32)

    def fn(params, indices):
        keys = sample_keys(seed, indices)
        z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), shape, jnp.float32))(keys)
        apply = _with_labels(apply_fn, indices, num_classes)
        return karras_ode_sample(lambda x, s: consistency_fn(apply, params, x, s, obj),
                                 sigmas[0] * z, sigmas, method)

    return _jit_over_mesh(fn, mesh)


# ----------------------------------------------------------------------------- the configured samplers

@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One way of drawing samples, as a results row names it."""
    label: str        # '1-step', '2-step', 'euler-250', 'heun-40'
    method: str       # 'consistency' | 'euler' | 'heun' | 'meanflow'
    sigmas: tuple     # consistency: the step sigmas; ODE: the descending grid ending in 0;
                      # meanflow: the flow times, 1.0 down to 0.0
    nfe: int          # network evaluations per sample

    @property
    def file_label(self) -> str:   # '1step', 'euler250': for file and directory names
        return self.label.replace('-', '')


def consistency_spec(label: str, ts, grid_steps: int, obj) -> SamplerSpec:
    sig = step_sigmas(ts, grid_steps, obj)
    # The authors' last index maps to sigma_min, which costs no evaluation (multistep_sample).
    nfe = 1 + sum(1 for s in sig[1:] if s > obj.sigma_min)
    return SamplerSpec(label, 'consistency', tuple(float(s) for s in sig), nfe)


def ode_spec(method: str, steps: int, obj) -> SamplerSpec:
    sig = karras_ode_sigmas(steps, obj.sigma_min, obj.sigma_max, obj.rho)
    return SamplerSpec(f'{method}-{steps}', method, tuple(float(s) for s in sig), ode_nfe(steps, method))


SAMPLERS = ('consistency',) + ODE_METHODS + ('meanflow',)


def configured_samplers(sampling_config, obj) -> list[SamplerSpec]:
    """config.sampling -> the samplers that --mode=sample / evaluate and the training grids run:
    'consistency': 1-step and 2-step (ts); 'euler' / 'heun': the ODE with ode_steps levels."""
    s = sampling_config
    if s.sampler == 'consistency':
        return [consistency_spec('1-step', (0,), s.grid_steps, obj),
                consistency_spec('2-step', tuple(s.ts), s.grid_steps, obj)]
    if s.sampler in ODE_METHODS:
        return [ode_spec(s.sampler, s.ode_steps, obj)]
    if s.sampler == 'meanflow':   # 1-step and 2-step average-velocity jumps (lct_jax/meanflow_sampling.py)
        from lct_jax import meanflow_sampling
        return meanflow_sampling.configured_specs(obj)
    raise ValueError(f'sampling.sampler {s.sampler!r}; valid: {SAMPLERS}')


def make_spec_sampler(spec: SamplerSpec, apply_fn, obj, shape, seed: int, mesh=None, num_classes: int = 0):
    """The jitted (params, sample indices) -> latents of a SamplerSpec (sample i of class
    `class_of(i)` for a class-conditional model)."""
    if spec.method == 'consistency':
        return make_sampler(apply_fn, obj, shape, spec.sigmas, seed, mesh, num_classes)
    if spec.method == 'meanflow':
        from lct_jax import meanflow_sampling
        return meanflow_sampling.make_meanflow_sampler(spec, apply_fn, shape, seed, mesh, num_classes)
    return make_ode_sampler(apply_fn, obj, shape, spec.sigmas, spec.method, seed, mesh, num_classes)
