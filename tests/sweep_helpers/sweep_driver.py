"""Runs the toy sweep in its own process, for the resume/devices/multi-process tests.

Usage: python sweep_driver.py --root DIR --out FILE.json [--devices N]
  [--chunk-size C] [--sleep S] [--pause-in-write S]
  [--coordinator HOST:PORT --num-processes P --process-id I]

``--devices`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
before JAX is imported.  ``--sleep`` pauses after every chunk.
``--pause-in-write`` pauses inside each atomic write, after the temporary
file is written and before it is fsynced and renamed, so that a SIGKILL is
likely to land mid-write.  The returned records go to ``--out`` (as JSON),
written atomically so the test never reads a partial file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None):
    """Parses flags, sets up devices/processes, runs the toy sweep."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--pause-in-write", type=float, default=0.0)
    ap.add_argument("--coordinator", default=None)
    ap.add_argument("--num-processes", type=int, default=None)
    ap.add_argument("--process-id", type=int, default=None)
    args = ap.parse_args(argv)

    if args.devices is not None:
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={args.devices}")
        os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    # Deferred: XLA_FLAGS (the device count) must be set before jax is imported.
    import jax
    import toy

    from dynmec_jax import files, multihost, sweep
    from dynmec_jax import store as store_lib

    multihost.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                 initialization_timeout=60)

    if args.pause_in_write > 0:
        real_fsync = os.fsync

        def slow_fsync(fd):
            time.sleep(args.pause_in_write)
            real_fsync(fd)

        os.fsync = slow_fsync  # this throwaway process only

    def after_chunk(records):
        print(f"chunk done: {len(records)} records", flush=True)
        time.sleep(args.sleep)

    records = sweep.run_sweep(
        store_lib.ResultStore(args.root), "toy", toy.POINTS, toy.SEEDS, toy.compute,
        config=toy.CONFIG, chunk_size=args.chunk_size, progress=False, callback=after_chunk)
    payload = {"n_devices": jax.device_count(), "n_local_devices": jax.local_device_count(),
               "n_processes": jax.process_count(), "records": records}
    if args.pause_in_write > 0:
        os.fsync = real_fsync
    files.atomic_write(args.out, json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
