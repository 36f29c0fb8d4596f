"""The page of ``edgeprune analyze --html``: each group's sensitivity and where the latency goes."""

from __future__ import annotations

import time

from edgeprune.reporting.charts import _figure, _png
from edgeprune.reporting.fmt import _CSS, _e, _img, _kv, _ms, _ratio, _table


def sensitivity_chart(analysis: dict) -> bytes | None:
    """Accuracy after pruning each group alone, one line per keep fraction, the baseline as a dashed line."""
    groups = analysis.get("groups") or []
    if not groups:
        return None
    keeps = list(groups[0]["accuracy"])
    fig = _figure(9.5, 0.9 + 0.28 * len(groups) + 2.2)
    ax = fig.add_subplot()
    ys = range(len(groups))
    for k in keeps:
        ax.plot([g["accuracy"][k][1] for g in groups], ys, marker="o", lw=1.2, label=f"keep {k}")
    ax.axvline(analysis["base_accuracy"], color="#444444", ls="--", lw=1.2, label="baseline")
    ax.set_yticks(list(ys), [g["name"] for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("validation accuracy after pruning this group alone (adaptive BN, no training)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def op_share_chart(analysis: dict) -> bytes | None:
    shares = analysis.get("op_share") or {}
    if not shares:
        return None
    ops = list(shares)[:8]
    fig = _figure(7.5, 0.8 + 0.35 * len(ops))
    ax = fig.add_subplot()
    ax.barh(ops, [shares[o] * 100 for o in ops], color="#3b75af")
    ax.invert_yaxis()
    ax.set_xlabel("share of the baseline's kernel time (%)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def render_analysis_html(analysis: dict) -> str:
    """``analysis`` is ``ModelAnalysis.to_dict()`` (what ``edgeprune analyze --json`` prints)."""
    lat = analysis.get("baseline_latency") or {}
    head = _kv([("model", _e(analysis.get("model"))), ("target", _e(analysis.get("target"))),
                ("measured on", _e(analysis.get("where_measured"))),
                ("baseline accuracy", _e(f"{analysis.get('base_accuracy', 0):.2%}")),
                ("baseline latency", f"{_ms(lat.get('median_ms'))} median, {_ms(lat.get('p10_ms'))} p10 "
                                     f"({_e(lat.get('backend', ''))})"),
                ("latency floor", f"{_ratio(analysis.get('latency_floor_ratio'))} the baseline: the smallest model "
                                  "the search space allows; width pruning cannot go below it")])
    frozen = analysis.get("frozen") or {}
    frozen_html = (_table(["layer", "why it stays whole"], [[_e(k), _e(v)] for k, v in frozen.items()])
                   if frozen else "<p>None.</p>")
    nodes = [[_e(n["node"]), _e(n["op"]), _ms(n["ms"]), _e(f"{n['share']:.1%}")] for n in analysis.get("top_nodes", [])]
    parts = [f"<h1>edgeprune analysis: {_e(analysis.get('model'))}</h1>", head,
             "<h2>Sensitivity of each prunable group</h2>",
             _img(sensitivity_chart(analysis), "accuracy after pruning each group alone",
                  "Groups whose accuracy falls far below the baseline when pruned alone are the ones to keep wide.",
                  "No prunable group.", "img-sensitivity"),
             "<h2>Kept whole</h2>", frozen_html,
             "<h2>Where the latency goes</h2>",
             _img(op_share_chart(analysis), "share of kernel time per ONNX op type",
                  "ONNX Runtime's profiler on this machine.", "No profile.", "img-ops"),
             _table(["node", "op", "ms (profiled)", "share"], nodes, numeric=(2, 3)),
             f"<footer>Written by edgeprune analyze on {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</footer>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
            f"<title>edgeprune analysis: {_e(analysis.get('model'))}</title><style>{_CSS}</style></head>"
            "<body><main>\n" + "\n".join(parts) + "\n</main></body></html>\n")
