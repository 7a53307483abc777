"""Walking jaxprs in tests: what a traced program contains."""
import jax.extend


def equations(jaxpr):
    """Every equation of a jaxpr, including those of nested sub-jaxprs (remat, cond, pjit, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from equations(sub)


def count(jaxpr, primitive: str) -> int:
    return sum(eqn.primitive.name == primitive for eqn in equations(jaxpr))
