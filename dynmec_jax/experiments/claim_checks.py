"""The checks of the claims of Section V (:mod:`dynmec_jax.experiments.claims`).

Each check reads the tables of a run (:class:`Context`) and returns an
:class:`Outcome`: a list of booleans (one per swept point or per stated
ordering, on means over seeds), the numbers printed beside the claim, and
optionally a reason derived from the data.  Units: tables hold SI values
(delays in s, energies in J, MACs, fractions); the numbers are printed in the
figures' units (delays in ms unless marked, ratios in %).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from dynmec_jax import accounting
from dynmec_jax import methods as M
from dynmec_jax.experiments.figures import NN_METHODS
from dynmec_jax.experiments.names import PANEL_ORDER

#: The statuses of a claim, best first.
STATUSES = ("reproduced", "partly", "not reproduced")
# The methods the checks compare (names from the registry, dynmec_jax.methods).
_PM, _FIX, _STATIC, _GA, _ORACLE = (m.name for m in (M.POLICY_MOE, M.FIX_MOE, M.STATIC, M.GA_VA,
                                                     M.ORACLE))
_PMRL, _PAPER, _RL, _RAND, _LOCAL, _GREEDY, _OPT, _DROO = (m.name for m in (
    M.PMRL, M.PMRL_PAPER, M.RL, M.RAND, M.LOCAL, M.GREEDY, M.OPTIMUM, M.DROO))
#: The rivals of the claims of Fig. 7 (names).
RL, RAND, LOCAL = _RL, _RAND, _LOCAL
#: The MoE allocators of Section V.A (the NN schemes without the static model).
MOE_METHODS = NN_METHODS[:4]
#: The V.B schemes of the paper that PMRL is compared with (Figs. 7-9).
PAPER_VB = (_RL, _RAND, _LOCAL, _GA)

#: Why the GA's delay and miss ratio do not reproduce (Figs. 5, 6, 8).
WHY_GA = ("the GA's delay is modelled like the networks' (its operation count x lambda / "
          "f_ser, Eq. 9), about 10^4 times a network's MACs but only tens of ms; the "
          "paper's seconds match our measured wall time of an uncompiled GA (11-16 s per "
          "scenario), not a model of its operations (docs/reproduction.md, GA section)")
#: Why PolicyMoE need not have the lowest weighted delay of the NN schemes (Fig. 5, objective).
WHY_NN_WD = ("the policy regresses the Eq. 28 label, which minimises the mean C^edge with the "
             "inference delay of a scenario's (k, l); between near-tied sub-networks it picks a "
             "narrower one whose allocation is slightly worse, and Fix width MoE (all K "
             "experts) or the largest fixed sub-network can be marginally better where the "
             "inference delay is a small part of the delay (the numbers)")
#: Why PolicyMoE is not the best NN scheme on the unweighted delay and miss ratio (Figs. 5, 6).
WHY_NN = ("the allocator and the Eq. 28 labels minimise the importance-weighted delay "
          "(w_i ~ 1/d_i); the sub-networks PolicyMoE picks are within a fraction of a percent "
          "of the wider ones on that objective (Fig. 4), but the unweighted mean delay and "
          "miss ratio are dominated by low-importance tasks, whose shares the narrow "
          "sub-networks set worse than Fix width MoE (all K experts, depth chosen by its "
          "policy), which wins here")


@dataclasses.dataclass(frozen=True)
class Context:
    """What the checks read: the run's tables, Fig. 4 and Fig. 12 numbers.

    ``va``, ``vb``: ``{axis: {metric: sweep_table}}`` of Sections V.A and V.B
    (SI units); ``policy``: ``{axis: {"regret" | "label_width" | "label_depth"
    | "label_macs": sweep_table}}`` with series "va" and "vb", ``gap``: ``{axis:
    sweep_table}`` of every V.B method's gap to the certified optimum (see
    :func:`dynmec_jax.experiments.figures.tables`); ``fig04``, ``fig12``: the dicts of
    :func:`dynmec_jax.experiments.figures.fig04_data` and
    :func:`dynmec_jax.experiments.fig12.data`;
    ``default_size_avg``: the run's Table II data amount s_avg [bit].
    """

    va: dict
    vb: dict
    policy: dict
    gap: dict
    fig04: dict
    fig12: dict
    default_size_avg: float

    @property
    def has_optimum(self) -> bool:
        """Whether the run solved the certified optimum (gaps per method and point)."""
        return bool(self.gap) and _PMRL in self.gap["size_avg"]["series"]

    @property
    def has_droo(self) -> bool:
        """Whether the run trained DROO (``vb.droo``)."""
        return _DROO in self.vb["size_avg"]["cost"]["series"]

    @property
    def has_paper(self) -> bool:
        """Whether the run stored PMRL with the paper's scheduler (``vb.paper_scheduler``)."""
        return _PAPER in self.vb["size_avg"]["cost"]["series"]


class Outcome(NamedTuple):
    """A check's result: its booleans, the numbers printed, and a data-dependent reason."""

    checks: list
    numbers: str
    why: str = ""


# ----------------------------------------------------------------------------
# Helpers shared by the checks
# ----------------------------------------------------------------------------

def _m(table: dict, method: str) -> np.ndarray:
    """The mean over seeds of one method's series, one value per x."""
    return np.asarray(table["series"][method]["mean"], float)


def _best(table: dict, methods) -> np.ndarray:
    """The lowest mean of ``methods`` at each x."""
    return np.min([_m(table, m) for m in methods], axis=0)


def _across(tabs: dict, metric: str, method: str) -> np.ndarray:
    """One method's means along every axis of :data:`PANEL_ORDER`, concatenated."""
    return np.concatenate([_m(tabs[ax][metric], method) for ax in PANEL_ORDER])


def _advantage(table: dict, a: str = _PM, b: str = _FIX) -> np.ndarray:
    """``a``'s relative advantage over ``b``, (b - a) / b, at each x."""
    return (_m(table, b) - _m(table, a)) / _m(table, b)


def status(checks: list) -> str:
    """"reproduced" if every check holds, "partly" if at least half do, else not."""
    frac = float(np.mean(checks)) if checks else 0.0
    return STATUSES[0] if frac == 1.0 else (STATUSES[1] if frac >= 0.5 else STATUSES[2])


def _fmt(a, scale=1.0, digits=3) -> str:
    """``[v1, v2, ...]`` of ``scale * a`` with ``digits`` significant digits."""
    return "[" + ", ".join(f"{scale * v:.{digits}g}" for v in np.atleast_1d(a)) + "]"


def _increasing(a) -> bool:
    """Whether ``a`` strictly increases."""
    return bool(np.all(np.diff(a) > 0))


def _decreasing(a) -> bool:
    """Whether ``a`` strictly decreases."""
    return bool(np.all(np.diff(a) < 0))


# ----------------------------------------------------------------------------
# Table I and Fig. 4
# ----------------------------------------------------------------------------

def table_i(ctx: Context) -> Outcome:
    """Table I's parameter and MAC counts at its architecture (K = 10, L = 3, N = 30)."""
    p_dyn = accounting.allocation_model_params(10, 3)["dynamic"]
    m_dyn = accounting.allocation_model_macs(10, 3, 30)["dynamic"]
    m_dyn2 = accounting.allocation_model_macs(10, 3, 30, zeta=2)["dynamic"]
    return Outcome(
        [int(p_dyn) == 87040, abs(float(m_dyn) / 5.126e6 - 1) < 0.01],
        f"ours: {int(p_dyn):,} parameters (exact); {float(m_dyn):,.0f} MACs counting one MAC "
        f"per multiply-accumulate (half the paper's figure); {float(m_dyn2):,.0f} at two "
        "operations per MAC, within 0.4% of the paper's (docs/reproduction.md)")


def fig04_decreasing(ctx: Context) -> Outcome:
    """Fig. 4(a): every unit step in width or depth lowers the weighted delay."""
    wd = np.asarray(ctx.fig04["wd"]["mean"])
    dec = [wd[k + 1, d] < wd[k, d] for k in range(wd.shape[0] - 1) for d in range(wd.shape[1])]
    dec += [wd[k, d + 1] < wd[k, d] for k in range(wd.shape[0]) for d in range(wd.shape[1] - 1)]
    return Outcome(
        dec, f"{sum(dec)}/{len(dec)} unit steps in width or depth lower it; width 1..K at depth "
        f"L: {_fmt(wd[:, -1])}; smallest {wd.min():.4g}, largest net {wd[-1, -1]:.4g}, "
        f"optimum {ctx.fig04['optimal_wd']:.4g}")


def fig04_largest_not_best(ctx: Context) -> Outcome:
    """Fig. 4(b): with the inference delay, the best (width, depth) is not the largest."""
    wdi = np.asarray(ctx.fig04["wd_infer"]["mean"])
    k_best, d_best = np.unravel_index(np.argmin(wdi), wdi.shape)
    return Outcome(
        [(k_best, d_best) != (wdi.shape[0] - 1, wdi.shape[1] - 1)],
        f"best (width, depth) = ({k_best + 1}, {d_best + 1}) with {wdi.min():.4g}; largest "
        f"({wdi.shape[0]}, {wdi.shape[1]}): {wdi[-1, -1]:.4g}")


# ----------------------------------------------------------------------------
# Section V.A: Figs. 5 and 6
# ----------------------------------------------------------------------------

def policymoe_lowest(ctx: Context, metric: str) -> Outcome:
    """Figs. 5/6: PolicyMoE's ``metric`` is no higher than any other NN scheme's."""
    checks, nums = [], []
    sc = 1e3 if metric == "delay" else 1.0
    for ax in PANEL_ORDER:
        t = ctx.va[ax][metric]
        best = _best(t, [m for m in NN_METHODS if m != _PM])
        checks += list(_m(t, _PM) <= best)
        nums.append(f"{ax}: PolicyMoE {_fmt(_m(t, _PM), sc)}"
                    f" vs best other NN {_fmt(best, sc)}")
    unit = " (ms)" if metric == "delay" else ""
    return Outcome(checks, f"{sum(checks)}/{len(checks)} points{unit}; " + "; ".join(nums))


def moe_beats_static(ctx: Context) -> Outcome:
    """Fig. 5: every MoE scheme's delay is below the static model's at every point."""
    checks = []
    for ax in PANEL_ORDER:
        t = ctx.va[ax]["delay"]
        checks += [bool(v) for m in MOE_METHODS for v in _m(t, m) < _m(t, _STATIC)]
    t = ctx.va["size_avg"]["delay"]
    return Outcome(
        checks, f"{sum(checks)}/{len(checks)} (method, point) pairs; at the default point "
        f"static {1e3 * _m(t, _STATIC)[1]:.3g} ms vs Fix MoE "
        f"{1e3 * _m(t, _FIX)[1]:.3g} ms")


def fix_moe_worst(ctx: Context) -> Outcome:
    """Fig. 5: Fix MoE's delay is no lower than the other MoE schemes'."""
    checks = []
    for ax in PANEL_ORDER:
        t = ctx.va[ax]["delay"]
        checks += list(_m(t, _FIX) >= np.max([_m(t, m) for m in MOE_METHODS[:3]], axis=0))
    return Outcome(checks, f"{sum(checks)}/{len(checks)} points")


def ga_delay_seconds(ctx: Context) -> Outcome:
    """Fig. 5: the GA's delay is >= 1 s and >= 10x PolicyMoE's at every point."""
    checks, ratios = [], []
    for ax in PANEL_ORDER:
        t = ctx.va[ax]["delay"]
        ga, pm = _m(t, _GA), _m(t, _PM)
        checks += [bool(g >= 1.0 and g >= 10 * p) for g, p in zip(ga, pm, strict=False)]
        ratios += list(ga / pm)
    return Outcome(
        checks, f"GA / PolicyMoE delay ratio {np.min(ratios):.3g}..{np.max(ratios):.3g}; GA delay "
        f"{_fmt(_m(ctx.va['size_avg']['delay'], _GA))} s over the data-amount axis")


def delay_grows_with_load(ctx: Context) -> Outcome:
    """Fig. 5(a, b): every NN scheme's delay increases with s_avg and c_avg."""
    checks, nums = [], []
    for ax in ("size_avg", "workload_avg"):
        t = ctx.va[ax]["delay"]
        checks += [_increasing(_m(t, m)) for m in NN_METHODS]
        nums.append(f"{ax}: PolicyMoE {_fmt(_m(t, _PM), 1e3)} ms")
    return Outcome(checks, f"{sum(checks)}/{len(checks)} NN methods monotone; "
                   + "; ".join(nums))


def advantage_shrinks_with_load(ctx: Context) -> Outcome:
    """Fig. 5(a, b): PolicyMoE's relative advantage over Fix MoE is smaller at the last x."""
    a_s, a_c = _advantage(ctx.va["size_avg"]["delay"]), _advantage(ctx.va["workload_avg"]["delay"])
    return Outcome([a_s[-1] < a_s[0], a_c[-1] < a_c[0]],
                   f"relative advantage vs data amount {_fmt(100 * a_s)} %, vs complexity "
                   f"{_fmt(100 * a_c)} %")


def delay_vs_users(ctx: Context) -> Outcome:
    """Fig. 5(c): PolicyMoE's delay increases with N, its advantage over Fix MoE grows."""
    t = ctx.va["n_users"]["delay"]
    a_n = _advantage(t)
    return Outcome([_increasing(_m(t, _PM)), a_n[-1] > a_n[0]],
                   f"PolicyMoE {_fmt(_m(t, _PM), 1e3)} ms; advantage over Fix MoE "
                   f"{_fmt(100 * a_n)} %")


def delay_vs_server(ctx: Context) -> Outcome:
    """Fig. 5(d): PolicyMoE's delay decreases with f_ser, its advantage shrinks."""
    t = ctx.va["f_server"]["delay"]
    a_f = _advantage(t)
    return Outcome([_decreasing(_m(t, _PM)), a_f[-1] < a_f[0]],
                   f"PolicyMoE {_fmt(_m(t, _PM), 1e3)} ms; advantage over Fix MoE "
                   f"{_fmt(100 * a_f)} %")


def ga_misses(ctx: Context, section: str) -> Outcome:
    """Figs. 6/8: the GA's miss ratio is >= 99.9% at every point of ``section`` ("va"/"vb")."""
    ga_miss = _across(getattr(ctx, section), "miss_ratio", _GA)
    return Outcome(list(ga_miss >= 0.999), f"GA miss ratio {_fmt(100 * ga_miss)} %")


# ----------------------------------------------------------------------------
# Section V.B: Figs. 7-9 and what goes beyond the paper
# ----------------------------------------------------------------------------

def pmrl_lower(ctx: Context, metric: str, rivals: tuple, strict: bool) -> Outcome:
    """Figs. 7/8: PMRL's ``metric`` is below (``strict``) or at most ``rivals``' best.

    Where it is not, the reason names the winner and both costs sum_i C_i.
    """
    checks, nums, fails = [], [], []
    sc = 1e3 if metric == "delay" else 100.0
    for ax in PANEL_ORDER:
        t, tc = ctx.vb[ax][metric], ctx.vb[ax]["cost"]
        rv = np.array([_m(t, m) for m in rivals])
        pm = _m(t, _PMRL)
        ok = pm < rv.min(axis=0) if strict else pm <= rv.min(axis=0)
        checks += list(ok)
        nums.append(f"{ax}: PMRL {_fmt(pm, sc)}, best of "
                    f"{'/'.join(rivals)} {_fmt(rv.min(axis=0), sc)}, Greedy "
                    f"{_fmt(_m(t, _GREEDY), sc)}"
                    + (f", {_PAPER} {_fmt(_m(t, _PAPER), sc)}" if ctx.has_paper else ""))
        for i in np.flatnonzero(~ok):
            win = rivals[int(np.argmin(rv[:, i]))]
            fails.append(f"{ax} = {t['x'][i]:.4g}: {win} {sc * rv.min(axis=0)[i]:.3g} vs PMRL "
                         f"{sc * pm[i]:.3g}, while PMRL's cost sum_i C_i is "
                         f"{_m(tc, _PMRL)[i]:.4g} against {win}'s {_m(tc, win)[i]:.4g}")
    unit = "ms" if metric == "delay" else "%"
    why = ("PMRL minimises sum_i C_i (Eq. 24-25: importance-weighted delay, w_i ~ 1/d_i, plus "
           "beta x energy), not the unweighted mean: " + "; ".join(fails)) if fails else ""
    return Outcome(checks, f"{sum(checks)}/{len(checks)} points ({unit}); " + "; ".join(nums),
                   why)


def rl_beats_local(ctx: Context) -> Outcome:
    """Fig. 7: RL's delay is below local execution's; Rand's is above it at the smallest s_avg."""
    checks = []
    for ax in PANEL_ORDER:
        t = ctx.vb[ax]["delay"]
        checks += list(_m(t, _RL) < _m(t, _LOCAL))
    t = ctx.vb["size_avg"]["delay"]
    to = ctx.vb["size_avg"]["offload_fraction"]
    return Outcome(
        checks + [bool(_m(t, _RAND)[0] > _m(t, _LOCAL)[0])],
        f"RL < Local at {sum(checks)}/{len(checks)} points; smallest data amount: Rand "
        f"{1e3 * _m(t, _RAND)[0]:.3g} ms vs Local {1e3 * _m(t, _LOCAL)[0]:.3g} ms",
        f"over the data-amount axis RL offloads {_fmt(100 * _m(to, _RL))} % of the "
        f"tasks (PMRL {_fmt(100 * _m(to, _PMRL))} %) and minimises the importance-weighted "
        "cost, not the mean delay; Rand's offloaded half shares the server among half the "
        "tasks, which beats the slow local CPUs (f_loc ~ U[0.01, 0.15] GHz) at every point")


def pmrl_lowest_cost(ctx: Context) -> Outcome:
    """Figs. 7-8 (objective): PMRL's cost sum_i C_i (Eq. 24-25) is at most the paper's others'.

    The numbers split each cost at the Table II point into its delay and energy terms.
    """
    checks, nums = [], []
    for ax in PANEL_ORDER:
        t = ctx.vb[ax]["cost"]
        best = _best(t, PAPER_VB)
        checks += list(_m(t, _PMRL) <= best)
        nums.append(f"{ax}: PMRL {_fmt(_m(t, _PMRL))} vs best other {_fmt(best)}")
    tsa = ctx.vb["size_avg"]
    i_def = int(np.argmin(np.abs(np.asarray(tsa["cost"]["x"]) - ctx.default_size_avg)))
    parts = ", ".join(f"{m} {_m(tsa['cost_delay'], m)[i_def]:.4g} + "
                      f"{_m(tsa['cost_energy'], m)[i_def]:.4g}"
                      for m in (_PMRL, _GREEDY, _LOCAL, _RAND))
    return Outcome(
        checks, f"{sum(checks)}/{len(checks)} points; " + "; ".join(nums)
        + f". At the Table II point sum_i C_i = delay term sum alpha w_i T_i + energy term "
        f"sum beta E_i: {parts}")


def pmrl_vs_greedy(ctx: Context) -> Outcome:
    """Beyond the paper: PMRL's cost over greedy + KKT's is at most 1 at every point."""
    checks, nums = [], []
    for ax in PANEL_ORDER:
        t = ctx.vb[ax]["cost"]
        ratio = _m(t, _PMRL) / _m(t, _GREEDY)
        checks += list(ratio <= 1.0)
        nums.append(f"{ax}: {_fmt(ratio, digits=4)}")
    return Outcome(checks,
                   f"{sum(checks)}/{len(checks)} points; PMRL / Greedy cost: " + "; ".join(nums))


def paper_scheduler(ctx: Context) -> Outcome:
    """Beyond the paper: PMRL with the paper's scheduler has the paper schemes' lowest cost."""
    checks, nums = [], []
    for ax in PANEL_ORDER:
        t, to = ctx.vb[ax]["cost"], ctx.vb[ax]["offload_fraction"]
        checks += list(_m(t, _PAPER) <= _best(t, PAPER_VB))
        nums.append(f"{ax}: cost {_fmt(_m(t, _PAPER))} (default PMRL {_fmt(_m(t, _PMRL))}),"
                    f" offloaded {_fmt(100 * _m(to, _PAPER))} %")
    return Outcome(checks, f"{sum(checks)}/{len(checks)} points; " + "; ".join(nums))


def share_follows_greedy(ctx: Context) -> Outcome:
    """Beyond the paper: PMRL's offloaded share moves like the greedy's between neighbours.

    A step counts when both move the same way or both move by less than 0.5 points.
    """
    checks, nums = [], []
    for ax in PANEL_ORDER:
        to = ctx.vb[ax]["offload_fraction"]
        pm, gr = _m(to, _PMRL), _m(to, _GREEDY)
        checks += [bool(np.sign(a) == np.sign(b) or (abs(a) < 0.005 and abs(b) < 0.005))
                   for a, b in zip(np.diff(pm), np.diff(gr), strict=True)]
        opt = ""
        if _OPT in to["series"]:
            opt = ", certified optimum " + _fmt(100 * _m(to, _OPT)) + " % (first scenarios)"
        nums.append(f"{ax}: PMRL {_fmt(100 * pm)} %, Greedy {_fmt(100 * gr)} %{opt}")
    return Outcome(checks, f"{sum(checks)}/{len(checks)} steps; " + "; ".join(nums))


def pmrl_near_optimum(ctx: Context) -> Outcome:
    """Beyond the paper: PMRL's sum_i C_i (its own inference delay) is within 1% of the
    certified optimum at every point (on each item's first scenarios, means over seeds)."""
    checks, nums = [], []
    for ax in PANEL_ORDER:
        t = ctx.gap[ax]
        g = _m(t, _PMRL)
        checks += list(g <= 0.01)
        others = ", ".join(f"{m} {_fmt(100 * _m(t, m), digits=2)}" for m in (_GREEDY, _DROO)
                           if m in t["series"])
        nums.append(f"{ax}: PMRL {_fmt(100 * g, digits=2)} % ({others} %)")
    return Outcome(checks, f"{sum(checks)}/{len(checks)} points; above the optimum: "
                   + "; ".join(nums))


def pmrl_beats_droo(ctx: Context) -> Outcome:
    """Beyond the paper: PMRL's cost sum_i C_i is below DROO's at every point (both with
    their own inference delay, Eq. 9)."""
    checks, nums = [], []
    for ax in PANEL_ORDER:
        t = ctx.vb[ax]["cost"]
        r = _m(t, _PMRL) / _m(t, _DROO)
        checks += list(r < 1.0)
        nums.append(f"{ax}: {_fmt(r, digits=4)}")
    return Outcome(checks, f"{sum(checks)}/{len(checks)} points; PMRL / DROO cost: "
                   + "; ".join(nums))


def policy_regret(ctx: Context) -> Outcome:
    """Sec. IV.C: the policy's Eq. 28 regret is below 1% for PolicyMoE (V.A) and PMRL (V.B)."""
    checks, nums = [], []
    for ax in PANEL_ORDER:
        pt = ctx.policy[ax]["regret"]
        for sec, who in (("va", _PM), ("vb", _PMRL)):
            r = _m(pt, sec)
            checks += list(r < 0.01)
            nums.append(f"{ax} {who}: {_fmt(100 * r, digits=2)} %")
    return Outcome(checks, f"{sum(checks)}/{len(checks)} (point, method) pairs; regret against "
                   "the Eq. 28 label: " + "; ".join(nums))


def local_flat(ctx: Context) -> Outcome:
    """Fig. 7(c, d): local execution's delay varies by < 10% (range / mean) over N and f_ser."""
    loc_n = _m(ctx.vb["n_users"]["delay"], _LOCAL)
    loc_f = _m(ctx.vb["f_server"]["delay"], _LOCAL)
    spread = [np.ptp(loc_n) / np.mean(loc_n), np.ptp(loc_f) / np.mean(loc_f)]
    return Outcome([s < 0.1 for s in spread],
                   f"relative spread {_fmt(100 * np.asarray(spread))} % (vs N, vs f_ser; "
                   "different scenarios per point)")


def local_beats_rand_misses(ctx: Context) -> Outcome:
    """Fig. 8: local execution misses fewer deadlines than Rand at most points (one check)."""
    checks = []
    for ax in PANEL_ORDER:
        t = ctx.vb[ax]["miss_ratio"]
        checks += list(_m(t, _LOCAL) < _m(t, _RAND))
    return Outcome([np.mean(checks) > 0.5], f"{sum(checks)}/{len(checks)} points")


def local_energy(ctx: Context) -> Outcome:
    """Fig. 9: local execution's user energy is the largest; PMRL's and local's grow with N."""
    checks = []
    for ax in PANEL_ORDER:
        t = ctx.vb[ax]["energy"]
        checks += list(_m(t, _LOCAL) >= np.max(
            [_m(t, m) for m in (_PMRL, _RL, _RAND)], axis=0))
    e_n = {m: _m(ctx.vb["n_users"]["energy"], m) for m in (_PMRL, _LOCAL)}
    return Outcome(
        checks + [_increasing(e_n[_PMRL]), _increasing(e_n[_LOCAL])],
        f"Local largest at {sum(checks)}/{len(checks)} points; vs N: PMRL "
        f"{_fmt(e_n[_PMRL])} J, Local {_fmt(e_n[_LOCAL])} J")


# ----------------------------------------------------------------------------
# Figs. 10-12
# ----------------------------------------------------------------------------

def fig10_macs(ctx: Context) -> Outcome:
    """Fig. 10: PolicyMoE's MACs grow with s_avg and stay below 0.8x Fix MoE's."""
    t = ctx.va["size_avg"]["allocator_macs"]
    pm, fx, lab = _m(t, _PM), _m(t, _FIX), _m(t, _ORACLE)
    pt = ctx.policy["size_avg"]
    lw, ld, rg = _m(pt["label_width"], "va"), _m(pt["label_depth"], "va"), _m(pt["regret"], "va")
    follows = [bool(np.sign(a) == np.sign(b)) for a, b in zip(np.diff(pm), np.diff(lab),
                                                              strict=True)]
    return Outcome(
        [bool(pm[-1] > pm[0])] + list(pm < 0.8 * fx),
        f"PolicyMoE {_fmt(pm, 1e-6)} M vs Fix MoE {_fmt(fx, 1e-6)} M MACs; the per-scenario "
        f"Eq. 28 label's {_fmt(lab, 1e-6)} M (mean label width {_fmt(lw)}, depth {_fmt(ld)}); "
        f"PolicyMoE moves with the label's MACs at {sum(follows)}/{len(follows)} steps",
        "the policy regresses the Eq. 28 labels (Eq. 29), which are near-ties: choosing "
        f"its sub-network instead of each scenario's best costs {_fmt(100 * rg, digits=2)} % "
        "of the Eq. 28 objective, so the MACs it settles on need not grow with the data "
        "amount, and the labels' own mean MACs (above) do not grow monotonically either")


def fig11_share(ctx: Context) -> Outcome:
    """Fig. 11: static and Fix MoE inference shares fall with s_avg; PolicyMoE's lower, flatter."""
    t = ctx.va["size_avg"]["inference_share"]
    st, fx, pm = _m(t, _STATIC), _m(t, _FIX), _m(t, _PM)
    return Outcome(
        [_decreasing(st), _decreasing(fx), bool(np.all(pm < fx)), np.ptp(pm) < np.ptp(fx)],
        f"static {_fmt(100 * st)} %, Fix MoE {_fmt(100 * fx)} %, PolicyMoE {_fmt(100 * pm)} %")


def fig12_progressive(ctx: Context) -> Outcome:
    """Fig. 12: traditional / progressive steps >= 2 for full and width, < 2 for depth."""
    f12 = ctx.fig12
    pro, tra = f12["progressive"]["steps"]["mean"], f12["traditional"]["steps"]["mean"]
    ratio = {c: t / p for c, p, t in zip(f12["cases"], pro, tra, strict=False)}
    return Outcome(
        [ratio.get("full", 10) >= 2, ratio.get("width", 10) >= 2, ratio.get("depth", 1) < 2],
        "traditional / progressive steps: " + ", ".join(f"{c} {r:.3g}x" for c, r in ratio.items())
        + f" (target gap {100 * f12['target']:.3g}%)")
