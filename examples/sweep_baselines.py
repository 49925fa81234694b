r"""A sweep as one ``vmap`` over a stacked ``SystemParams``: a baseline's metrics vs f_ser.

    python examples/sweep_baselines.py

``SystemParams`` is a pytree whose float fields are leaves, so stacking
several systems along a new axis and ``vmap``-ing a function of it evaluates
them all in one compiled program.  Here: greedy offloading with the KKT
allocation (``baselines.greedy_offloading``) and local execution, on the same
scenarios, for five server CPUs f_ser.  Units: delay in ms, energy in J
(per task, means over scenarios).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynmec_jax import baselines, system

F_SERVER = (1.5e9, 2.5e9, 3.5e9, 4.5e9, 5.5e9)   # cycles/s


def metrics(sys_params: system.SystemParams, scn: system.Scenario) -> dict:
    """Mean delay [s] and energy [J] per task of greedy + KKT and of local execution."""
    res = baselines.greedy_offloading(scn, sys_params)
    out = system.task_outcomes(scn, res.offload, res.bandwidth, res.f_alloc, sys_params)
    none = jnp.zeros(scn.shape, bool)
    zero = jnp.zeros(scn.shape)
    loc = system.task_outcomes(scn, none, zero, zero, sys_params)
    return {"greedy_delay": out.delay.mean(), "greedy_energy": out.energy.mean(),
            "greedy_offloaded": res.offload.mean(), "local_delay": loc.delay.mean(),
            "local_energy": loc.energy.mean()}


def main() -> None:
    base = system.SystemParams()
    scn = system.sample_scenarios(jax.random.PRNGKey(0), base, batch=128)
    stacked = jax.tree.map(lambda *v: jnp.stack(v),
                           *[base.replace(f_server=f) for f in F_SERVER])
    table = jax.jit(jax.vmap(metrics, in_axes=(0, None)))(stacked, scn)
    print("f_ser [GHz] | greedy+KKT delay [ms] | energy [J] | offloaded | local delay [ms]")
    for i, f in enumerate(F_SERVER):
        print(f"{f / 1e9:11.1f} | {1e3 * float(table['greedy_delay'][i]):21.3f} | "
              f"{float(table['greedy_energy'][i]):10.4g} | "
              f"{float(table['greedy_offloaded'][i]):9.3f} | "
              f"{1e3 * float(table['local_delay'][i]):16.3f}")


if __name__ == "__main__":
    main()
