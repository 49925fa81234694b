"""dynmec_jax.train.loop: a checkpoint that does not restore is set aside, not destroyed."""

import numpy as np
import orbax.checkpoint as ocp
import pytest

from dynmec_jax.train import loop


def _save(mngr, step, value):
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"w": np.full(3, value, np.float32)}),
        history=ocp.args.JsonSave([{"step": step}])))
    mngr.wait_until_finished()


def test_a_corrupt_newest_checkpoint_is_moved_aside_and_the_previous_one_restored(tmp_path):
    mngr = loop.checkpoint_manager(tmp_path)
    _save(mngr, 1, 1.0)
    _save(mngr, 2, 2.0)
    mngr.close()
    newest = tmp_path / "checkpoints" / "2"
    damaged = {}
    for f in newest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
            damaged[f.relative_to(newest)] = f.read_bytes()
    mngr = loop.checkpoint_manager(tmp_path)
    template = {"w": np.zeros(3, np.float32)}
    with pytest.warns(UserWarning, match=r"does not restore .*2\.unrestorable"):
        step, state, history = loop.restore(mngr, template)
    assert step == 1 and history == [{"step": 1}]
    np.testing.assert_array_equal(state["w"], np.ones(3))
    aside = tmp_path / "checkpoints" / "2.unrestorable"
    assert {k: (aside / k).read_bytes() for k in damaged} == damaged     # kept as it was
    assert mngr.all_steps() == [1]
    _save(mngr, 2, 3.0)                                 # the step is free for the rerun
    assert loop.restore(mngr, template)[0] == 2
    mngr.close()
