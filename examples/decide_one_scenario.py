r"""Load the shipped pipeline and decide for one scenario written by hand.

    python examples/decide_one_scenario.py

Five users (the scheduler is per-user, so any N works): sizes [bits],
workloads [cycles/bit], deadlines [s], distances [m] and local CPUs
[cycles/s].  The pipeline (scheduler, policy, allocator; Section IV) decides
who offloads (Eq. 22), which sub-network (width, depth) allocates, and the
shares of bandwidth and server CPU (Eq. 12-20); ``system.task_outcomes``
gives each task's delay (with the networks' inference delay, Eq. 34-35) and
energy (Eq. 1-6).
"""

from __future__ import annotations

import numpy as np

from dynmec_jax import pipeline, system


def main() -> None:
    pipe = pipeline.load_pipeline()                   # the shipped default
    sys_params = pipe.allocator.sys_params            # Table II
    scn = system.Scenario(
        size=np.array([1200.0, 300.0, 1800.0, 900.0, 2000.0]),        # bits
        workload=np.array([800.0, 1500.0, 400.0, 1000.0, 1200.0]),    # cycles/bit
        deadline=np.array([0.010, 0.150, 0.040, 0.080, 0.005]),       # s
        distance=np.array([50.0, 400.0, 120.0, 250.0, 30.0]),         # m
        f_local=np.array([0.1e9, 0.15e9, 0.05e9, 0.12e9, 0.08e9]))    # cycles/s
    d = pipe.decide(scn)
    out = system.task_outcomes(scn, d.offload, d.bandwidth, d.f_alloc, sys_params,
                               infer_edge=d.inference_delay_edge,
                               infer_local=d.inference_delay_local)
    print(f"sub-network: width {int(d.width)}, depth {int(d.depth)}")
    print("task | offload | bandwidth [kHz] | server CPU [GHz] | delay [ms] | energy [J]")
    for i in range(scn.size.shape[0]):
        print(f"{i:4d} | {str(bool(d.offload[i])):>7} | {float(d.bandwidth[i]) / 1e3:15.2f} | "
              f"{float(d.f_alloc[i]) / 1e9:16.3f} | "
              f"{1e3 * float(out.delay[i]):10.3f} | "
              f"{float(out.energy[i]):10.4g}")
    print(f"offloaded bandwidth sums to {float(np.sum(d.bandwidth)) / 1e3:.2f} kHz "
          f"(b_max = {sys_params.bandwidth_max / 1e3:.2f} kHz)")


if __name__ == "__main__":
    main()
