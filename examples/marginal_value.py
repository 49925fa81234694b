r"""The marginal value of spectrum and compute, by ``jax.grad`` through the KKT optimum.

    python examples/marginal_value.py

For scenarios drawn from Table II (every task offloaded), the optimal
importance-weighted delay (Eq. 18-20 solved exactly by
``baselines.optimal_allocation``) falls as the uplink bandwidth b_max or the
server CPU f_ser grows.  ``jax.grad`` gives both slopes in one pass (the KKT
solver's gradients are implicit); they are checked here against central
finite differences.  The ratio of the two slopes is the exchange rate: how
many cycles/s of server CPU are worth one Hz of spectrum at this operating
point.  Units: the weighted delay is dimensionless (w [1/s] x T [s]); slopes
are printed per MHz and per GHz.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)   # finite differences need float64

import jax.numpy as jnp  # noqa: E402  (after enabling float64)

from dynmec_jax import baselines, system  # noqa: E402


def optimal_weighted_delay(b_max, f_ser, scn, base: system.SystemParams):
    """Mean optimal weighted delay (Eq. 18-20, KKT) at bandwidth b_max [Hz] and server CPU
    f_ser [cycles/s] (dimensionless)."""
    sys_params = base.replace(bandwidth_max=b_max, f_server=f_ser)
    offload = jnp.ones(scn.shape, bool)
    bandwidth, f_alloc = baselines.optimal_allocation(scn, offload, sys_params)
    return jnp.mean(system.weighted_delay(scn, offload, bandwidth, f_alloc, sys_params))


def main() -> None:
    base = system.SystemParams()
    scn = system.sample_scenarios(jax.random.PRNGKey(0), base, batch=256)
    b0, f0 = jnp.float64(base.bandwidth_max), jnp.float64(base.f_server)
    value = optimal_weighted_delay(b0, f0, scn, base)
    g_b, g_f = jax.grad(optimal_weighted_delay, argnums=(0, 1))(b0, f0, scn, base)
    hb, hf = 1e-4 * b0, 1e-4 * f0
    fd_b = (optimal_weighted_delay(b0 + hb, f0, scn, base)
            - optimal_weighted_delay(b0 - hb, f0, scn, base)) / (2 * hb)
    fd_f = (optimal_weighted_delay(b0, f0 + hf, scn, base)
            - optimal_weighted_delay(b0, f0 - hf, scn, base)) / (2 * hf)
    print(f"optimal weighted delay at b_max = {b0 / 1e6:g} MHz, f_ser = {f0 / 1e9:g} GHz: "
          f"{float(value):.6f}")
    print(f"d/d b_max: grad {float(g_b) * 1e6:.6e} per MHz, "
          f"finite difference {float(fd_b) * 1e6:.6e} per MHz")
    print(f"d/d f_ser: grad {float(g_f) * 1e9:.6e} per GHz, "
          f"finite difference {float(fd_f) * 1e9:.6e} per GHz")
    print(f"exchange rate: 1 MHz of spectrum is worth {float(g_b / g_f) * 1e6 / 1e9:.4f} GHz "
          "of server CPU here")


if __name__ == "__main__":
    main()
