"""Devices, meshes and several processes: the plumbing under the sharded sweeps.

* :func:`initialize_distributed`: joins a multi-process run
  (``jax.distributed`` with gloo collectives on CPU).
* :func:`default_mesh`: a 1-D mesh (axis ``"batch"``) over every device of
  every process.
* :func:`sharded_vmap`: runs a vmapped function over a batch padded to the
  mesh size (by repeating the last item, so the padding is valid input),
  placed with ``NamedSharding(mesh, P("batch"))``, gathered to the host of
  every process and trimmed.  Items are independent, so the numbers do not
  depend on the device count (``tests/test_sweep.py`` checks it bitwise).
* :func:`broadcast_from_0` / :func:`broadcast_json`: process 0's values on
  every process (the result store is read and written by process 0 only).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXIS = "batch"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           local_device_ids: Sequence[int] | None = None,
                           initialization_timeout: int = 300,
                           cpu_collectives: str = "gloo") -> bool:
    """Joins a multi-process JAX run; a no-op for a single process.

    Wraps :func:`jax.distributed.initialize`.  Must be called before anything
    touches a JAX backend (``jax.devices()``, any computation).  Sets the CPU
    cross-process collectives (``jax_cpu_collectives_implementation``; "gloo"
    works out of the box on CPU, "mpi" needs an MPI library), which only
    affects the CPU backend.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator (default:
        the ``JAX_COORDINATOR_ADDRESS`` environment variable).
      num_processes: number of processes; ``None`` or 1 means a single
        process and nothing is done.
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: restricts the devices this process uses.
      initialization_timeout: seconds to wait for all processes to connect.
      cpu_collectives: "gloo" or "mpi".

    Returns:
      True if the distributed system is initialized (now or before), False
      for a single-process run.
    """
    if num_processes is None or int(num_processes) == 1:
        return False
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator_address is None or process_id is None:
        raise ValueError("a multi-process run needs coordinator_address (host:port) "
                         "and process_id")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=int(num_processes),
        process_id=int(process_id),
        local_device_ids=local_device_ids,
        cluster_detection_method="deactivate",
        initialization_timeout=initialization_timeout,
    )
    return True


def default_mesh(axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over all devices of all processes, axis ``axis_name``.

    The axis type is ``Auto`` (sharding propagated by the compiler), so code
    written for one device runs unchanged.
    """
    devices = jax.devices()
    return jax.make_mesh((len(devices),), (axis_name,), axis_types=(AxisType.Auto,),
                         devices=devices)


def _gather_to_host(tree: Any) -> Any:
    """Copies a pytree of (possibly multi-process) arrays to NumPy on every process."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def sharded_vmap(fn: Callable[..., Any], mesh: Mesh | None = None, *,
                 batched: bool = False, axis_name: str = BATCH_AXIS, jit: bool = True
                 ) -> Callable[..., Any]:
    """Runs ``fn`` over a batch sharded along one mesh axis; returns NumPy arrays.

    The returned callable takes pytrees whose leaves all share a leading batch
    axis of size B (NumPy or JAX arrays; in a multi-process run every process
    passes the same full batch).  It pads the batch to a multiple of the mesh
    axis size by repeating the last item (so the padding is valid input, not
    zeros that might divide by zero), places every leaf with
    ``NamedSharding(mesh, P(axis_name))``, runs the jitted function, gathers
    the outputs to the host of every process and trims them back to B.  The
    jitted function is built once: calls with the same shapes do not
    recompile.

    Args:
      fn: the function; per item (wrapped in ``jax.vmap``) unless ``batched``.
      mesh: the mesh (default :func:`default_mesh`).
      batched: whether ``fn`` already maps over the leading axis itself.
      axis_name: the mesh axis that the batch is split over.
      jit: whether to wrap ``fn`` in ``jax.jit`` (False: ``fn`` runs its own
        compiled programs, e.g. several stages, on the sharded inputs).

    Returns:
      ``call(*args) -> outputs`` with outputs as NumPy arrays of leading size
      B.  Every output leaf must have the (padded) batch as leading axis.
    """
    if mesh is None:
        mesh = default_mesh(axis_name)
    if axis_name not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}, not {axis_name!r}")
    n_shards = mesh.shape[axis_name]
    sharding = NamedSharding(mesh, P(axis_name))
    jitted = fn if batched else jax.vmap(fn)
    if jit:
        jitted = jax.jit(jitted)

    def call(*args):
        """Pads, shards, runs and trims; see :func:`sharded_vmap`."""
        leaves, treedef = jax.tree.flatten(args)
        if not leaves:
            raise ValueError("sharded_vmap needs at least one batched array")
        hosts = [np.asarray(x) for x in leaves]
        hosts = [h.astype(jax.dtypes.canonicalize_dtype(h.dtype)) for h in hosts]
        sizes = {h.shape[0] if h.ndim else None for h in hosts}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"all inputs need the same leading batch size, got {sizes}")
        size = sizes.pop()
        if size == 0:
            raise ValueError("empty batch")
        padded = math.ceil(size / n_shards) * n_shards
        placed = []
        for h in hosts:
            if padded > size:
                h = np.concatenate([h, np.repeat(h[-1:], padded - size, axis=0)])
            placed.append(jax.make_array_from_callback(
                h.shape, sharding, lambda idx, h=h: h[idx], dtype=h.dtype))
        out = jitted(*jax.tree.unflatten(treedef, placed))
        for leaf in jax.tree.leaves(out):
            if np.ndim(leaf) == 0 or leaf.shape[0] != padded:
                raise ValueError(
                    "every output of the sharded function needs the batch as its "
                    f"leading axis (size {padded}), got shape {np.shape(leaf)}")
        host = _gather_to_host(out)
        return jax.tree.map(lambda x: np.asarray(x)[:size], host)

    return call


def broadcast_from_0(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` (a NumPy array) on every process (identity for one process)."""
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def broadcast_json(obj: Any) -> Any:
    """Process 0's JSON-able ``obj`` on every process (others pass anything)."""
    if jax.process_count() == 1:
        return obj
    data = (np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)
            if jax.process_index() == 0 else np.zeros(0, np.uint8))
    length = int(broadcast_from_0(np.array([data.size], np.int32))[0])
    if jax.process_index() != 0:
        data = np.zeros(length, np.uint8)
    data = broadcast_from_0(data)
    return json.loads(data.tobytes().decode("utf-8"))
