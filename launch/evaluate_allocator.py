r"""Quality of a trained allocator against the optimal allocation (Fig. 4 numbers).

    python launch/evaluate_allocator.py [--path=DIR] [--batch=4096] [--seed=2024]

``--path`` defaults to the pretrained allocator shipped in the package.  On
held-out scenarios of the allocator's system parameters, with every task
offloaded and with a random ``--offload_fraction`` offloaded, prints for every
(width, depth) the gap to the optimal weighted delay (relative excess,
without inference delay) and the weighted delay with the sub-network's Eq. 9
inference delay (Fig. 4(b)).  Exit code 1 if the quality goals (largest
network within 1%, every sub-network within 5%) are not met.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from absl import flags

from dynmec_jax import allocator as allocator_lib
from dynmec_jax import cli as common
from dynmec_jax import system
from dynmec_jax.train import allocator as train_allocator

_PATH = flags.DEFINE_string("path", None, "allocator directory (default: the pretrained one)")
_BATCH = flags.DEFINE_integer("batch", 4096, "held-out scenarios", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 2024, "PRNG seed of the held-out scenarios")
_FRACTION = flags.DEFINE_float("offload_fraction", 0.6, "random offload probability",
                               lower_bound=0.0, upper_bound=1.0)
_JSON = flags.DEFINE_string("json", None, "also write the numbers to this JSON file")


def table(name: str, a: np.ndarray, fmt: str) -> str:
    K, L = a.shape
    lines = [f"{name}", "width \\ depth " + "".join(f"{d:>11}" for d in range(1, L + 1))]
    lines += [f"{k:>13} " + "".join(f"{a[k - 1, d]:>11{fmt}}" for d in range(L))
              for k in range(1, K + 1)]
    return "\n".join(lines)


def main(argv):
    common.check_no_args(argv)
    common.quiet_libraries()
    try:
        alloc = allocator_lib.load_allocator(_PATH.value)
    except (FileNotFoundError, ValueError) as e:
        common.fail(str(e))
    sp = alloc.sys_params
    k_scn, k_off = jax.random.split(jax.random.PRNGKey(_SEED.value))
    scn = system.sample_scenarios(k_scn, sp, _BATCH.value)
    masks = {"all offloaded": np.ones(scn.shape, bool),
             f"random {_FRACTION.value:.0%} offloaded":
                 np.asarray(jax.random.uniform(k_off, scn.shape) < _FRACTION.value)}
    ok = True
    out = {}
    for name, mask in masks.items():
        e = train_allocator.evaluate_subnets(alloc, scn, mask)
        gap = np.asarray(e["gap"])
        wd_inf = np.asarray(e["wd_infer"].mean(-1))
        best = np.unravel_index(np.argmin(wd_inf), wd_inf.shape)
        print(f"\n== {name}: {_BATCH.value} scenarios, optimal weighted delay "
              f"{float(e['opt'].mean()):.2f} ==")
        print(table("gap to the optimal weighted delay [%], no inference delay (Fig. 4(a))",
                    100 * gap, ".3f"))
        print(table("weighted delay with inference delay (Fig. 4(b))", wd_inf, ".2f"))
        print(f"best with inference delay: width {best[0] + 1}, depth {best[1] + 1}; "
              f"largest network gap {100 * gap[-1, -1]:.3f}%, worst sub-network "
              f"{100 * gap.max():.3f}%")
        ok &= bool(gap[-1, -1] <= 0.01 and gap.max() <= 0.05)
        out[name] = {"gap": gap.tolist(), "weighted_delay_infer": wd_inf.tolist(),
                     "optimal_weighted_delay": float(e["opt"].mean())}
    print("\nquality goals (largest <= 1%, every sub-network <= 5%):", "met" if ok else "NOT met")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    common.run(main)
