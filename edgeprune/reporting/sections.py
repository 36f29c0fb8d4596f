"""The report page's sections about the model and the run's details: per-layer latency, INT8, gates,
warnings, every candidate, channels and blocks per group, what was kept whole. Each takes the report dict
(``report.json``) and returns HTML (escaped), or "" where the report has nothing for it."""

from __future__ import annotations

from edgeprune.reporting.charts import _candidates, _chosen_index, _get
from edgeprune.reporting.fmt import _e, _kv, _label, _missing, _ms, _noise, _pct, _ratio, _si, _table


def _layers_section(report: dict) -> str:
    layers = _get(report, "final", "layer_latency")
    if not isinstance(layers, dict) or not layers.get("nodes"):
        return ""
    out = ['<h2 id="layers">Per-layer latency before and after</h2>',
           f"<p>{_label(layers.get('where', ''))}: milliseconds per inference with the profiler's overhead, so "
           "read the ratios. Nodes are the ONNX graph's (convolutions carry their BatchNorm, folded).</p>"]
    rows = [[_e(op), _ms(v.get("baseline_ms")), _ms(v.get("final_ms")),
             _ratio(v["final_ms"] / v["baseline_ms"]) if v.get("baseline_ms") else "—"]
            for op, v in (layers.get("by_op") or {}).items() if isinstance(v, dict)]
    out.append(_table(["op type", "baseline", "final", "final / baseline"], rows, numeric=(1, 2, 3)))
    rows = [[_e(n.get("node", "")), _e(n.get("op", "")), _ms(n.get("baseline_ms")), _ms(n.get("final_ms")),
             _ratio(n["final_ms"] / n["baseline_ms"]) if n.get("final_ms") is not None and n.get("baseline_ms") else "—"]
            for n in layers["nodes"] if isinstance(n, dict)]
    out.append("<details open><summary>The heaviest nodes of the baseline</summary>"
               + _table(["node", "op", "baseline", "final", "final / baseline"], rows, numeric=(2, 3, 4)) + "</details>")
    return "".join(out)


def _int8_section(report: dict) -> str:
    q = report.get("quantized")
    if not isinstance(q, dict):
        return ""
    c = q.get("check") or {}
    lat = q.get("latency") or {}
    rows = [("form", _e(q.get("form", "int8"))),
            ("deployed", '<span class="good">yes</span>' if q.get("deployed") else "no"),
            ("why", _e(q.get("reason", ""))),
            ("accuracy (validation split)", f"{_pct(c.get('int8_accuracy'))} vs {_pct(c.get('fp32_accuracy'))} float"),
            ("top-1 agreement with the float model", _pct(c.get("top1_agreement"))),
            ("latency", f"{_ms(lat.get('median_ms'))} median, {_ratio(lat.get('ratio_to_baseline'))} the baseline (p10)"
             if lat else "not measured")]
    return '<h2 id="int8">INT8 (ONNX Runtime static quantization)</h2>' + _kv(rows)


def _gates_section(report: dict) -> str:
    gates = [g for g in report.get("gates") or [] if isinstance(g, dict)]
    if not gates:
        return ""
    rows = [[_e(g.get("name", "—")), _e(g.get("threshold", "—")), _e(g.get("value", "—")),
             '<span class="good">passed</span>' if g.get("passed") else '<span class="bad">MISSED</span>']
            for g in gates]
    return '<h2 id="gates">CI gates</h2>' + _table(["gate", "threshold", "final model", ""], rows, numeric=(1, 2))


def _warnings_section(report: dict) -> str:
    warnings = report.get("warnings") or []
    body = ("<ul>" + "".join(f"<li>{_label(w)}</li>" for w in warnings) + "</ul>") if warnings \
        else "<p>None.</p>"
    return '<h2 id="warnings">Warnings</h2>' + body


def _candidates_section(report: dict) -> str:
    out = ['<h2 id="candidates">All evaluated candidates</h2>']
    cands = _candidates(report)
    if not cands:
        return "".join(out) + _missing("No candidate was evaluated in this report.")
    chosen = _chosen_index(report)
    rows = [[_e(c["index"]), _e(c.get("origin") or ""), _pct(c.get("accuracy")), _ratio(c.get("ratio_to_baseline")),
             _ms(c.get("latency_ms")), _si(c.get("macs")), _si(c.get("params")),
             '<span class="good">yes</span>' if c.get("feasible") else "no",
             '<span class="bad">noisy</span>' if c.get("noisy") else _noise(c),
             "yes" if c.get("from_store") else "", _label(c.get("measured_on") or "")] for c in cands]
    out.append(_table(["#", "origin", "accuracy (search subset)", "ratio (p10)", "latency p10", "MACs", "params",
                       "feasible", "noise", "from store", "measured on"], rows, numeric=(0, 2, 3, 4, 5, 6),
                      highlight=lambda i: cands[i]["index"] == chosen))
    return "".join(out)


def _channels_table(report: dict) -> str:
    before, after = _get(report, "baseline", "channels"), _get(report, "final", "channels")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return ""
    rows = [[_e(k), _e(v), _e(after.get(k, "—"))] for k, v in before.items()]
    return ("<details><summary>Channels per layer (baseline → final)</summary>"
            + _table(["layer", "baseline", "final"], rows, numeric=(1, 2)) + "</details>")


def _blocks_table(report: dict) -> str:
    """Depth pruning: which residual blocks the search could drop, and which the final model dropped."""
    blocks = _get(report, "search", "groups", "blocks")
    if not isinstance(blocks, list) or not blocks:
        return ""
    dropped = set(_get(report, "final", "dropped_blocks") or [])
    rows = [[_e(b), "dropped (replaced by its identity shortcut)" if b in dropped else "kept"] for b in blocks]
    return (f"<details open><summary>Residual blocks: {len(dropped)} of {len(blocks)} dropped</summary>"
            + _table(["block", "final model"], rows) + "</details>")


def _kept_whole_table(report: dict) -> str:
    """What the search left whole and why: output layers, layers the pruner cannot follow, frozen groups."""
    groups = _get(report, "search", "groups")
    if not isinstance(groups, dict):
        return ""
    rows = [[_e(n), "output layer: its width is the number of classes"] for n in groups.get("ignored") or []]
    rows += [[_e(u), "a layer the pruner cannot follow"] for u in groups.get("unsupported") or []]
    rows += [[_e(f.get("name")), _e(f.get("reason"))] for f in groups.get("frozen") or [] if isinstance(f, dict)]
    if not rows:
        return ""
    searched = len(groups.get("groups") or [])
    return (f"<details><summary>Kept whole: {len(rows)} (searched: {searched} groups)</summary>"
            + _table(["layer or group", "why"], rows) + "</details>")
