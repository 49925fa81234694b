"""Names of the Section V axes (constants only; the methods are in :mod:`dynmec_jax.methods`).

Axis names are fields of :class:`dynmec_jax.system.SystemParams` (SI units)
or ``"n_users"``.
"""

from __future__ import annotations

#: The swept fields of the shared-shape sweep (Figs. 5/6/7/8/9 (a), (b), (d); 10; 11).
AXES = ("size_avg", "workload_avg", "f_server")
#: The x-axes of Figs. 5-9 in panel order (a) data amount, (b) complexity, (c) N, (d) f_ser.
PANEL_ORDER = ("size_avg", "workload_avg", "n_users", "f_server")
#: Fig. 10's name of the Oracle's MACs: those of the per-scenario Eq. 28 label.
LABEL_SERIES = "Eq. 28 label (oracle)"
