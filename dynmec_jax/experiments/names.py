"""Names shared by the Section V driver, its figures and its claims (constants only).

Method names are those of the paper's Figs. 5-12 legends (plus the references
this reproduction adds); axis names are fields of
:class:`dynmec_jax.system.SystemParams` (SI units) or ``"n_users"``.
"""

from __future__ import annotations

#: Metrics stored per method (see :func:`dynmec_jax.evaluation.scenario_metrics`).
METRICS = ("delay", "miss_ratio", "energy", "allocator_macs", "inference_share",
           "weighted_delay", "offload_fraction", "width", "depth", "cost", "cost_delay",
           "cost_energy")
#: The swept fields of the shared-shape sweep (Figs. 5/6/7/8/9 (a), (b), (d); 10; 11).
AXES = ("size_avg", "workload_avg", "f_server")
#: The x-axes of Figs. 5-9 in panel order (a) data amount, (b) complexity, (c) N, (d) f_ser.
PANEL_ORDER = ("size_avg", "workload_avg", "n_users", "f_server")
#: PMRL trained with the paper's exact scheduler network and estimator (Eq. 21-27).
PMRL_PAPER = "PMRL (paper)"
#: Section V.A methods (every task offloaded; Figs. 5, 6, 10, 11), in legend order.
VA_METHODS = ("PolicyMoE", "Fix width MoE", "Fix depth MoE", "Fix MoE", "Static model", "GA",
              "Oracle")
#: The neural-network allocators of Section V.A (Figs. 5, 6, 10, 11 without GA and Oracle).
NN_METHODS = VA_METHODS[:5]
#: Section V.B methods (users have computing power; Figs. 7-9), in legend order.
VB_METHODS = ("PMRL", PMRL_PAPER, "RL", "Rand", "Local execution", "Greedy", "GA")
#: V.B reference stored only where N <= exhaustive.MAX_USERS (not plotted).
VB_OPTIMUM = "Optimum"
#: References left out of Figs. 5-9: the exhaustive optimum and the Eq. 28 label ("Oracle").
NOT_PLOTTED = (VB_OPTIMUM, "Oracle")
#: Fig. 10's name of the Oracle's MACs: those of the per-scenario Eq. 28 label.
LABEL_SERIES = "Eq. 28 label (oracle)"
