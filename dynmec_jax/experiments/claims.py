"""The claims of Section V (and Table I), as data: one :class:`Claim` per statement.

:data:`CLAIMS` lists every statement of the paper's Section V that the
reproduction checks, in the order of ``results/claims.md``; each entry names
its figure, quotes the claim and points at one small check function of
:mod:`dynmec_jax.experiments.claim_checks`.  A check
reads the tables of the run (:class:`Context`) and returns an
:class:`Outcome`: a list of booleans (one per swept point or per stated
ordering, on means over seeds) and the numbers printed beside the claim.
:func:`evaluate` turns them into rows with a status: "reproduced" when every
check holds, "partly" when at least half do, else "not reproduced"; a claim
that does not reproduce also prints why (the entry's static ``why`` or the
reason its check derived from the data).

Units: tables hold SI values (delays in s, energies in J, MACs, fractions);
the numbers are printed in the figures' units (delays in ms unless marked,
ratios in %).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

from dynmec_jax.experiments import claim_checks as ck
from dynmec_jax.experiments.claim_checks import Context, Outcome

#: The statuses of a claim, best first.
STATUSES = ck.STATUSES


@dataclasses.dataclass(frozen=True)
class Claim:
    """One statement of Section V: figure, the paper's claim, its check and why it may fail.

    ``why`` is printed when the claim does not reproduce and the check gives no
    reason of its own; ``applies`` (default: always) leaves the claim out of
    runs that lack what it compares.
    """

    figure: str
    claim: str
    check: Callable[[Context], Outcome]
    why: str = ""
    applies: Callable[[Context], bool] | None = None


# ----------------------------------------------------------------------------
# The claims
# ----------------------------------------------------------------------------

#: Every claim checked, in the order of ``results/claims.md``.
CLAIMS: tuple[Claim, ...] = (
    Claim("Table I", "Dynamic part of the allocation model: 87.04K parameters, 5.126M MACs "
          "(30 users)", ck.table_i),
    Claim("Fig. 4(a)", "The weighted delay (without inference) decreases as width and depth "
          "grow", ck.fig04_decreasing),
    Claim("Fig. 4(b)", "With the inference delay, the largest model is not the best",
          ck.fig04_largest_not_best),
    Claim("Fig. 5", "PolicyMoE has the lowest delay of the NN schemes at every point",
          partial(ck.policymoe_lowest, metric="delay"), why=ck.WHY_NN),
    Claim("Fig. 6", "PolicyMoE has the lowest deadline miss ratio of the NN schemes at every "
          "point", partial(ck.policymoe_lowest, metric="miss_ratio"), why=ck.WHY_NN),
    Claim("Fig. 5 (objective)", "PolicyMoE has the lowest importance-weighted delay (the "
          "allocator's objective, Eq. 18-20, inference delay included) of the NN schemes at "
          "every point", partial(ck.policymoe_lowest, metric="weighted_delay"),
          why=ck.WHY_NN_WD),
    Claim("Fig. 5", "Every MoE scheme beats the static model", ck.moe_beats_static),
    Claim("Fig. 5", "Fix MoE is the worst of the MoE schemes (no on-demand computation)",
          ck.fix_moe_worst),
    Claim("Fig. 5", "GA's delay reaches the second level, dozens to hundreds of times the "
          "others (modelled GA delay: lambda x operations / f_ser)", ck.ga_delay_seconds,
          why=ck.WHY_GA),
    Claim("Fig. 5(a, b)", "Delay increases with the data amount and the task complexity",
          ck.delay_grows_with_load),
    Claim("Fig. 5(a, b)", "PolicyMoE's advantage over Fix MoE shrinks as data amount and "
          "complexity grow", ck.advantage_shrinks_with_load),
    Claim("Fig. 5(c)", "Delay increases with the number of tasks, and PolicyMoE's advantage "
          "grows", ck.delay_vs_users),
    Claim("Fig. 5(d)", "Delay decreases with server power, and PolicyMoE's advantage shrinks",
          ck.delay_vs_server),
    Claim("Fig. 6", "GA misses every deadline (miss ratio 100%)",
          partial(ck.ga_misses, section="va"), why=ck.WHY_GA),
    Claim("Fig. 7", "PMRL has a lower mean delay than Local execution, Rand and RL at every "
          "point", partial(ck.pmrl_lower, metric="delay", rivals=(ck.RL, ck.RAND, ck.LOCAL),
                           strict=True)),
    Claim("Fig. 8", "PMRL has a lower deadline miss ratio than the paper's other schemes (ties "
          "count) at every point",
          partial(ck.pmrl_lower, metric="miss_ratio", rivals=ck.PAPER_VB, strict=False)),
    Claim("Fig. 7", "RL scheduling beats local execution; at low delay Rand is worse than local "
          "execution", ck.rl_beats_local),
    Claim("Fig. 7-8 (objective)", "PMRL has the lowest cost sum_i C_i (Eq. 24-25, what the "
          "scheduler is trained for) of the paper's schemes at every point", ck.pmrl_lowest_cost),
    Claim("Beyond (V.B)", "PMRL (with its own inference delay and the learned allocator) has a "
          "cost sum_i C_i no higher than greedy offloading with the optimal (KKT) allocation "
          "(each deployed method pays its own operations through Eq. 9)", ck.pmrl_vs_greedy,
          why="the greedy decides with the exact optimal allocation and its operations are "
          "few (a few KKT rounds); PMRL's networks' inference delay and the learned "
          "allocator's gap to the optimum (Fig. 4) are charged to it"),
    Claim("Beyond (V.B)", "With the paper's own scheduler (5N -> 32 -> N) and estimator (raw "
          "Eq. 23), PMRL has the lowest cost sum_i C_i of the paper's schemes at every point",
          ck.paper_scheduler,
          why="the raw Eq. 23 signal is heavy-tailed (w_i ~ 1/d_i) and saturates the sigmoid "
          "at 'offload' within the first updates, and one 32-unit hidden layer shared by "
          "the N outputs cannot represent N per-task decisions (docs/reproduction.md, "
          "scheduler ablation)",
          applies=lambda ctx: ctx.has_paper),
    Claim("Beyond (V.B)", "PMRL's offloaded share moves with the load as the greedy's does "
          "(the same direction between neighbouring points)", ck.share_follows_greedy),
    Claim("Beyond (V.B)", "PMRL (its own inference delay included) is within 1% of the "
          "certified optimum of sum_i C_i at every point", ck.pmrl_near_optimum,
          applies=lambda ctx: ctx.has_optimum),
    Claim("Beyond (V.B)", "PMRL has a lower cost sum_i C_i than DROO (Huang et al., 2020) at "
          "every point", ck.pmrl_beats_droo, applies=lambda ctx: ctx.has_droo),
    Claim("Sec. IV.C (policy)", "The policy's (width, depth) is within 1% of the per-scenario "
          "best sub-network (Eq. 28 objective) at every point", ck.policy_regret),
    Claim("Fig. 7(c, d)", "Local execution's delay does not depend on the number of tasks or "
          "the server power", ck.local_flat),
    Claim("Fig. 8", "Local execution has a lower miss ratio than Rand in most cases",
          ck.local_beats_rand_misses,
          why="in our runs a task's local delay c s / f_loc (f_loc ~ U[0.01, 0.15] GHz) is "
          "often longer than its deadline, while Rand's offloaded half shares the server "
          "among half as many tasks; the paper's sampling may give faster local CPUs"),
    Claim("Fig. 8", "GA (joint) misses every deadline", partial(ck.ga_misses, section="vb"),
          why=ck.WHY_GA),
    Claim("Fig. 9", "Local execution costs the most user energy; energy grows with the number "
          "of users", ck.local_energy),
    Claim("Fig. 10", "PolicyMoE's MACs grow with the data amount and stay well below Fix "
          "MoE's", ck.fig10_macs),
    Claim("Fig. 11", "The inference-delay share of the static model and Fix MoE falls with "
          "the data amount; PolicyMoE's is lower and more stable", ck.fig11_share),
    Claim("Fig. 12", "Progressive shrinking cuts the training cost of fully and width-dynamic "
          "models a lot; little difference for depth-dynamic", ck.fig12_progressive),
)


def evaluate(cfg, tabs: dict, fig04: dict, fig12: dict) -> list[dict]:
    """Checks every claim of :data:`CLAIMS` against the run's numbers.

    ``cfg``: the reproduction config (its ``allocator.system`` gives the Table
    II point); ``tabs``: :func:`dynmec_jax.experiments.figures.tables`; ``fig04``,
    ``fig12``: :func:`dynmec_jax.experiments.figures.fig04_data` and
    :func:`dynmec_jax.experiments.fig12.data`.
    Returns rows ``{"figure", "claim", "status", "numbers"}`` in the order of
    :data:`CLAIMS` (claims whose ``applies`` is false are left out); status is
    one of :data:`STATUSES`, and a claim not reproduced has ``". Why: ..."``
    appended to its numbers.  Checks compare means over seeds.
    """
    ctx = Context(va=tabs["va"], vb=tabs["vb"], policy=tabs["policy"],
                  gap=tabs.get("gap", {}), fig04=fig04,
                  fig12=fig12, default_size_avg=float(cfg.system.size_avg))
    rows = []
    for c in CLAIMS:
        if c.applies is not None and not c.applies(ctx):
            continue
        out = c.check(ctx)
        status = ck.status(out.checks)
        why = out.why or c.why
        rows.append({"figure": c.figure, "claim": c.claim, "status": status,
                     "numbers": out.numbers + (f". Why: {why}" if why and status != STATUSES[0]
                                               else "")})
    return rows


def markdown(rows: list[dict], header: str) -> str:
    """``results/claims.md``: ``header``, one table row per claim, and the status totals."""
    lines = [header, "", "| # | Figure | Claim (Section V) | Status | Our numbers |",
             "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['figure']} | {r['claim']} | **{r['status']}** | "
                     f"{r['numbers']} |")
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines += ["", "Totals: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + "."]
    return "\n".join(lines) + "\n"
