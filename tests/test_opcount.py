"""dynmec_jax/opcount.py: loops counted by their trip counts, matrix products as MACs."""

import jax
import jax.numpy as jnp

from dynmec_jax import opcount


def test_matmul_counts_macs():
    a, b = jnp.ones((4, 3)), jnp.ones((3, 5))
    c = opcount.program_ops(jax.make_jaxpr(jnp.dot)(a, b))
    assert c.macs == 4 * 5 * 3
    assert c.flops == 2 * 60


def test_scan_body_counted_length_times():
    def body(x, _):
        return x * 2.0 + 1.0, None

    def run(x, n):
        return jax.lax.scan(body, x, None, length=n)[0]

    one = opcount.program_ops(jax.make_jaxpr(lambda x: run(x, 1))(jnp.ones(10)))
    seven = opcount.program_ops(jax.make_jaxpr(lambda x: run(x, 7))(jnp.ones(10)))
    assert one.elementwise == 20
    assert seven.elementwise == 7 * one.elementwise


def test_cond_counts_the_costliest_branch_and_while_is_flagged():
    f = lambda p, x: jax.lax.cond(p, lambda y: y @ y, lambda y: y + 1.0, x)
    c = opcount.program_ops(jax.make_jaxpr(f)(True, jnp.ones((3, 3))))
    assert c.macs == 27
    w = opcount.program_ops(jax.make_jaxpr(
        lambda n, x: jax.lax.fori_loop(0, n, lambda i, y: y + 1.0, x))(3, jnp.ones(4)))
    assert w.while_loops == 1
