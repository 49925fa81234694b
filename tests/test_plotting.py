"""Tests of dynmec_jax.plotting: tables, figures, JSON."""

import inspect
import json
import math

import numpy as np
import pytest
from PIL import Image

from dynmec_jax import files, plotting


def _png_size(path):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.size


def _records(methods=("PolicyMoE", "Fix MoE", "GA"), xs=(1.0, 2.0, 3.0), seeds=(0, 1, 2),
             drop=None):
    rng = np.random.default_rng(0)
    out = []
    for m in methods:
        for x in xs:
            for s in seeds:
                if drop == (m, x):
                    continue
                scale = 100.0 if m == "GA" else 1.0
                out.append({"method": m, "x": x, "seed": s,
                            "metrics": {"delay": scale * (0.01 * x + 1e-3 * rng.random()),
                                        "miss_ratio": float(rng.random())}})
    return out


# ----------------------------------------------------------------------------
# sweep_table
# ----------------------------------------------------------------------------

def test_sweep_table_shapes_and_missing_cell():
    recs = _records(drop=("Fix MoE", 2.0))
    recs.append({"method": "PolicyMoE", "x": 3.0, "seed": 9, "metrics": {"other": 1.0}})
    t = plotting.sweep_table(list(reversed(recs)), "delay")
    assert t["x"] == [1.0, 2.0, 3.0]
    assert set(t["series"]) == {"PolicyMoE", "Fix MoE", "GA"}
    for s in t["series"].values():
        assert all(len(s[k]) == 3 for k in ("mean", "ci", "n", "std"))
    fix = t["series"]["Fix MoE"]
    assert fix["n"] == [3, 0, 3] and math.isnan(fix["mean"][1]) and math.isnan(fix["ci"][1])
    assert t["series"]["PolicyMoE"]["n"] == [3, 3, 3]  # record without the metric ignored
    vals = [r["metrics"]["delay"] for r in recs if r["method"] == "GA" and r["x"] == 2.0]
    assert t["series"]["GA"]["mean"][1] == pytest.approx(np.mean(vals))


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------

def _panels(n=4, methods=("PolicyMoE", "Fix MoE", "GA")):
    t = plotting.sweep_table(_records(methods=methods, drop=("Fix MoE", 2.0)), "delay")
    return [{"xlabel": f"Axis {i} [unit]", "table": t, "x_scale": 1.0, "y_scale": 1e3,
             "letter": "abcd"[i]} for i in range(n)]


def test_sweep_figure_right_axis_and_png(tmp_path):
    fig = plotting.build_sweep_figure(_panels(4), "Delay [ms]", right_axis_methods=("GA",))
    assert len(fig.axes) == 8  # 4 panels + 4 twin right axes
    assert fig.axes[0].get_title() == "(a) Axis 0"
    right_labels = [ax.get_ylabel() for ax in fig.axes if ax.yaxis.get_label_position() == "right"]
    assert right_labels == ["Delay [ms] (GA, right axis)"] * 4
    assert len(fig.legends) == 1
    fig = plotting.build_sweep_figure(_panels(3), "Delay [ms]", right_axis_methods=())
    assert len(fig.axes) == 3
    fig = plotting.build_sweep_figure(_panels(2, methods=("PolicyMoE", "Rand", "Unknown")),
                                      "Delay [ms]", yscale="log")
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    out = plotting.plot_sweep(_panels(4), tmp_path / "sub" / "fig05.png", "Delay [ms]",
                              title="Fig. 5")
    w, h = _png_size(out)
    assert w > 0 and h > 0
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_fig04(tmp_path):
    rng = np.random.default_rng(1)
    wd = rng.random((4, 3))
    data = {"width": [1, 2, 3, 4], "depth": [1, 2, 3],
            "wd": {"mean": wd.tolist(), "ci": (0.1 * wd).tolist()},
            "wd_infer": {"mean": (wd + 0.5).tolist(), "ci": np.full((4, 3), np.nan)},
            "optimal_wd": 0.05, "n_seeds": 3}
    fig = plotting.build_fig04_figure(data)
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title().startswith("(b)")
    w, h = _png_size(plotting.plot_fig04(data, tmp_path / "fig04.png"))
    assert w > 0 and h > 0
    data["optimal_wd"] = None
    assert _png_size(plotting.plot_fig04(data, tmp_path / "fig04b.png"))[0] > 0
    with pytest.raises(ValueError):
        plotting.build_fig04_figure({**data, "depth": [1, 2]})


def test_bars(tmp_path):
    t = plotting.sweep_table(_records(methods=("PolicyMoE", "Fix MoE", "Static model"),
                                      xs=(1000.0, 2000.0), drop=("Fix MoE", 2000.0)), "delay")
    fig = plotting.build_bars_figure(t, "MACs [M]", "Data amount [kbit]", log=True,
                                     x_scale=1e-3)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [lbl.get_text() for lbl in ax.get_xticklabels()] == ["1", "2"]
    out = plotting.plot_bars(t, tmp_path / "fig10.png", "MACs [M]", "Data amount [kbit]",
                             title="Fig. 10", y_scale=1e-6, x_scale=1e-3)
    assert _png_size(out)[0] > 0


def test_fig12(tmp_path):
    data = {"cases": ["full", "width", "depth"], "target": 0.1,
            "progressive": {"steps": {"mean": [100, 200, 300], "ci": [10, 20, 30]},
                            "seconds": {"mean": [1.0, 2.0, 3.0], "ci": [0.1, 0.1, 0.1]},
                            "reached": [True, True, False]},
            "traditional": {"steps": {"mean": [5000, 900, 400], "ci": [50, float("nan"), 0]},
                            "seconds": {"mean": [4.0, 3.0, 3.5], "ci": [0.1, 0.1, 0.1]}}}
    fig = plotting.build_fig12_figure(data)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_yscale() == "log"      # 5000 / 100 > 20
    assert fig.axes[1].get_yscale() == "linear"
    assert _png_size(plotting.plot_fig12(data, tmp_path / "fig12.png"))[0] > 0


def test_no_pyplot():
    assert "pyplot" not in inspect.getsource(plotting).replace(
        "``matplotlib.pyplot`` is never imported", "")


# ----------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------

def test_json_round_trip(tmp_path):
    data = {"a": [1.0, float("nan"), np.float32(2.5)], "b": np.arange(3),
            "c": {"d": float("inf"), 3: (np.int64(4), True, None)}, "e": "x"}
    p = files.write_json(data, tmp_path / "d" / "x.json")
    back = files.read_json(p)
    assert back == {"a": [1.0, None, 2.5], "b": [0, 1, 2],
                    "c": {"d": None, "3": [4, True, None]}, "e": "x",
                    # strict JSON: each non-finite value is null, and listed with its value
                    "nonfinite_as_null": {"value.a[1]": "NaN", "value.c.d": "Infinity"}}
    def no_constants(name):
        raise AssertionError(f"bare {name} in strict JSON")
    json.loads((tmp_path / "d" / "x.json").read_text(), parse_constant=no_constants)
    t = plotting.sweep_table(_records(drop=("Fix MoE", 2.0)), "delay")
    back = files.read_json(files.write_json(t, tmp_path / "t.json"))
    assert back["series"]["Fix MoE"]["mean"][1] is None
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(TypeError):
        files.write_json({"f": object()}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
