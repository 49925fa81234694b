"""Operation counts of whole traced programs (training loops included), for run plans.

:func:`program_ops` extends the counting rule of
:func:`dynmec_jax.baselines.optimal.count_jaxpr_ops` (elementwise
arithmetic 1 per output element, reductions 1 per input element, data
movement free) to what a training program holds: matrix products
(``dot_general``: one multiply-accumulate, i.e. 2 FLOPs, per output element
per contracted element, the convention of Eq. 8 and 30-33 where a MAC is
one operation), loops (a ``scan`` body counted ``length`` times: XLA's own
cost analysis counts a loop body once), conditionals (the costliest
branch), and calls.  Every other primitive (random bits, gathers, sorts)
counts one operation per output element.  A ``while`` loop whose trip
count is not static (``fori_loop`` with traced bounds) is counted once:
a lower bound, flagged in the result.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from dynmec_jax.baselines.optimal import (
    ARITH_PRIMITIVES,
    FREE_PRIMITIVES,
    REDUCE_PRIMITIVES,
    SPECIAL_PRIMITIVES,
)


class OpCount(NamedTuple):
    """Operations of a program (counts, not seconds).

    Attributes:
      macs: multiply-accumulates of matrix products.
      elementwise: all other operations (MAC-equivalents, Eq. 8's unit).
      while_loops: ``while`` loops counted once (their trip count is traced).
    """

    macs: float
    elementwise: float
    while_loops: int

    @property
    def flops(self) -> float:
        """FLOPs: 2 per MAC plus 1 per other operation."""
        return 2.0 * self.macs + self.elementwise

    def __add__(self, other):   # noqa: D105
        return OpCount(self.macs + other.macs, self.elementwise + other.elementwise,
                       self.while_loops + other.while_loops)

    def scale(self, k: float) -> OpCount:
        """The count of ``k`` runs."""
        return OpCount(self.macs * k, self.elementwise * k, self.while_loops)


ZERO = OpCount(0.0, 0.0, 0)


def _size(aval) -> int:
    return int(math.prod(getattr(aval, "shape", ())))


def _dot_macs(eqn) -> float:
    (lc, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    contracted = math.prod(lhs.shape[d] for d in lc)
    return float(_size(eqn.outvars[0].aval) * contracted)


def _subjaxprs(eqn):
    for v in eqn.params.values():
        for s in (v if isinstance(v, (list, tuple)) else [v]):
            if hasattr(s, "eqns") or hasattr(s, "jaxpr"):
                yield s


def program_ops(jaxpr, special_cost: float = 1.0) -> OpCount:
    """Operations of a (closed) jaxpr, loops unrolled by their trip counts (module doc).

    ``special_cost``: MAC-equivalents per exp, log, divide... (as
    :func:`~dynmec_jax.baselines.optimal.count_jaxpr_ops`).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = ZERO
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        subs = list(_subjaxprs(eqn))
        if name == "scan":
            body = program_ops(eqn.params["jaxpr"], special_cost)
            total = total + body.scale(eqn.params["length"])
        elif name == "cond":
            branches = [program_ops(b, special_cost) for b in eqn.params["branches"]]
            total = total + max(branches, key=lambda c: c.flops)
        elif name == "while":
            body = sum((program_ops(s, special_cost) for s in subs), ZERO)
            total = total + OpCount(body.macs, body.elementwise, body.while_loops + 1)
        elif subs:
            total = total + sum((program_ops(s, special_cost) for s in subs), ZERO)
        elif name == "dot_general":
            total = total + OpCount(_dot_macs(eqn), 0.0, 0)
        elif name in FREE_PRIMITIVES:
            continue
        elif name in SPECIAL_PRIMITIVES:
            total = total + OpCount(0.0, special_cost * sum(_size(v.aval) for v in eqn.outvars), 0)
        elif name in REDUCE_PRIMITIVES:
            total = total + OpCount(0.0, float(sum(_size(v.aval) for v in eqn.invars)), 0)
        elif name in ARITH_PRIMITIVES:
            total = total + OpCount(0.0, float(sum(_size(v.aval) for v in eqn.outvars)), 0)
        else:
            total = total + OpCount(0.0, float(sum(_size(v.aval) for v in eqn.outvars)), 0)
    return total
