"""Test driver: allocator training (smoke preset) that can pause after a checkpoint.

    python allocator_driver.py WORKDIR OUT.json [PAUSE_AT_STEP]

Runs ``train.allocator.train_and_evaluate`` on the smoke allocator config (10-step
chunks, 4 checkpoints) and writes the record to OUT.json.  Every checkpoint save
prints ``saved step S`` once written (orbax's ``CheckpointManager.save`` is wrapped
here, in this process only); with PAUSE_AT_STEP the run then sleeps a minute after
that step's save, so that a test can SIGKILL it between two chunks.
"""

from __future__ import annotations

import json
import os
import sys
import time

import orbax.checkpoint as ocp

from dynmec_jax import cli, typedconfig
from dynmec_jax.configs import allocator as allocator_configs
from dynmec_jax.train import allocator as train_allocator
from dynmec_jax.train.config import AllocatorConfig


def main(argv):
    workdir, out = argv[1], argv[2]
    pause_at = int(argv[3]) if len(argv) > 3 else None
    if pause_at is not None:
        save = ocp.CheckpointManager.save

        def slow_save(self, *args, **kwargs):
            result = save(self, *args, **kwargs)
            self.wait_until_finished()
            print(f"saved step {args[0]}", flush=True)
            if args[0] == pause_at:
                time.sleep(60)
            return result

        ocp.CheckpointManager.save = slow_save
    if os.environ.get(cli.CACHE_ENV):    # the test session's compilation cache (conftest)
        cli.enable_compilation_cache(os.environ[cli.CACHE_ENV])
    config = typedconfig.from_configdict(AllocatorConfig, allocator_configs.get_config("smoke"))
    record = train_allocator.train_and_evaluate(config, workdir, progress=False)
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv)
