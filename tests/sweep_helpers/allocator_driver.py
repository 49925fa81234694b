"""Test driver: allocator training (smoke preset) that pauses after each checkpoint.

    python allocator_driver.py WORKDIR OUT.json [PAUSE_S]

Runs ``train.allocator.train_and_evaluate`` on the smoke allocator config (10-step
chunks, 4 checkpoints) and writes the record to OUT.json.  With PAUSE_S > 0 every
checkpoint save is followed by a sleep (orbax's ``CheckpointManager.save`` is
wrapped here, in this process only), so that a test can SIGKILL the run
between two chunks.
"""

from __future__ import annotations

import json
import sys
import time

import orbax.checkpoint as ocp

from dynmec_jax import typedconfig
from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train.config import AllocatorConfig


def main(argv):
    workdir, out = argv[1], argv[2]
    pause = float(argv[3]) if len(argv) > 3 else 0.0
    if pause > 0:
        save = ocp.CheckpointManager.save

        def slow_save(self, *args, **kwargs):
            result = save(self, *args, **kwargs)
            self.wait_until_finished()
            print(f"saved step {args[0]}", flush=True)
            time.sleep(pause)
            return result

        ocp.CheckpointManager.save = slow_save
    config = typedconfig.from_configdict(AllocatorConfig, allocator_configs.get_config("smoke"))
    record = train_allocator.train_and_evaluate(config, workdir, progress=False)
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv)
