"""A run's report as one self-contained HTML page (``report.html``), for a person instead of ``report.json``.

The page is built from the report dict alone (``Report.to_dict()``, or ``report.json`` / ``report.failed.json``
read back), so it works on any report, including one of a failed run whose later sections are None: what is
missing is said on the page. Charts are drawn with matplotlib's Agg canvas (no pyplot, no global backend
change) and embedded as PNG data URIs; the page loads nothing from anywhere else. Every string taken from
the report is escaped: model names, paths and reasons come from users.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeprune.outputs import atomic_write
from edgeprune.reporting.charts import (_candidates, _chosen_index, _get, _num, channel_rows, channels_chart,
                                        convergence_chart, pareto_chart)

from edgeprune.reporting.sections import (_blocks_table, _candidates_section, _channels_table, _gates_section,
                                          _int8_section, _kept_whole_table, _layers_section, _warnings_section)
from edgeprune.reporting.fmt import (_CSS, _e, _img, _kv, _label, _missing, _ms, _noise, _pct, _ratio, _si, _table,
                                     _verdict, _yes, data_rows)

REPORT_HTML = "report.html"

# ---------------------------------------------------------------------------------------------- sections


_SECTIONS = (("baseline", "baseline measurement"), ("search", "search"), ("final", "final model"),
             ("deploy", "deployment (runtimes compared, TVM library)"))


def _head(report: dict) -> str:
    model = report.get("model") if isinstance(report.get("model"), dict) else {}
    name = model.get("name") or "unnamed model"
    status = str(report.get("status") or "unknown")
    out = [f"<h1>edgeprune report: {_e(name)}</h1>",
           f'<p class="sub">run <code>{_e(report.get("run_id") or "—")}</code> · status <strong>{_e(status)}</strong>'
           f' · target {_e(_get(report, "target", "name") or "—")} · wall time '
           f'{_e(report.get("wall_time_s", "—"))} s</p>']
    if status != "ok":
        reason = report.get("reason") or "no reason was recorded"
        out.append(f'<div class="banner fail" role="alert" id="status-banner"><strong>Run {_e(status)}</strong>: '
                   f"{_label(reason)}</div>")
    else:
        fin = report.get("final") or {}
        bits = []
        if _num(_get(fin, "latency", "median_ms")) is not None:
            same = _get(fin, "baseline_latency_same_run", "median_ms")
            bits.append(f"latency {_ms(fin['latency']['median_ms'])} vs {_ms(same)} "
                        f"({_ratio(_get(fin, 'latency', 'baseline_median_ratio'))}, medians in the same run)")
        if _num(fin.get("accuracy")) is not None:
            bits.append(f"accuracy {_pct(_get(report, 'baseline', 'accuracy'))} → {_pct(fin['accuracy'])}")
        if _get(report, "deploy", "deployed_runtime"):
            bits.append(f"deployed with {_e(report['deploy']['deployed_runtime'])}")
        out.append(f'<div class="banner ok" id="status-banner"><strong>Run ok</strong>'
                   f'{": " + "; ".join(bits) if bits else ""}</div>')
    absent = [label for key, label in _SECTIONS if not report.get(key)]
    if not report.get("candidates"):
        absent.append("evaluated candidates")
    if absent:
        out.append('<div class="banner missing" id="missing-sections">Not in this report (the run stopped before '
                   "these stages, or they did not apply): " + ", ".join(_e(a) for a in absent) + ".</div>")
    return "".join(out)


def _run_section(report: dict) -> str:
    model, data, target, search = (report.get(k) if isinstance(report.get(k), dict) else {}
                                   for k in ("model", "data", "target", "search"))
    shape = model.get("input_shape")
    rows = [("model", _e(model.get("name") or "—")), ("architecture", _e(model.get("arch") or "—")),
            ("model file", f"<code>{_e(model.get('path') or '—')}</code>"),
            ("input shape", _e("×".join(map(str, shape)) if isinstance(shape, list) else "—")),
            ("data", _e(f"{data.get('name', '—')} (" + ", ".join(f"{k} {data[k]}" for k in ("train", "val", "calib")
                                                                 if k in data) + " images)" if data else "—")),
            *data_rows(data),
            ("target profile", _label(target.get("name") or "—")),
            ("latency target", _e(target.get("latency_target") or "—")
             + (f" = {_ratio(target.get('latency_target_ratio'))} the baseline"
                if _num(target.get("latency_target_ratio")) is not None else "")
             + (f" = {_ms(target.get('latency_target_ms'))} (p10)" if _num(target.get("latency_target_ms")) else "")),
            ("output folder", f"<code>{_e(report.get('out_dir') or '—')}</code>")]
    if search:
        rows += [("agent", _e(search.get("agent") or "—")), ("budget, seed", _e(f"{search.get('budget')}, "
                                                                                    f"{search.get('seed')}")),
                 ("evaluations", _e(f"{search.get('evaluations')} ({search.get('evaluated_this_session')} this "
                                    "session)")),
                 ("search wall time", _e(f"{search.get('wall_time_s')} s"))]
    return '<h2 id="run">Run</h2>' + _kv(rows)


def _conditions_section(report: dict) -> str:
    target = report.get("target") if isinstance(report.get("target"), dict) else {}
    base_lat = _get(report, "baseline", "latency")
    deploy = report.get("deploy") if isinstance(report.get("deploy"), dict) else {}
    rows = [("measured on", _label(target.get("where_measured") or "—"))]
    if target.get("measured_on_stand_in") or deploy.get("stand_in"):
        rows.append(("stand-in", "<strong>STAND-IN: latency was measured on a stand-in, not on the target "
                                 "device</strong>"))
    if target.get("limitations"):
        rows.append(("target limitations", _label(target["limitations"])))
    if isinstance(base_lat, dict):
        rows += [("runtime (search)", _e(deploy.get("search_runtime") or base_lat.get("backend") or "—")),
                 ("backend version", _e(f"{base_lat.get('backend')} {base_lat.get('backend_version')}")),
                 ("threads", _e(base_lat.get("threads", "—"))),
                 ("baseline timing plan", _e(f"{base_lat.get('warmup')} warm-up runs, {base_lat.get('rounds')} rounds, "
                                             f"{base_lat.get('repeats')} timed runs, interleaved")),
                 ("baseline noise (CV of per-round p10)", _noise(base_lat))]
    else:
        rows.append(("runtime", _missing("no baseline measurement in this report")))
    fin_lat = _get(report, "final", "latency")
    if isinstance(fin_lat, dict):
        rows.append(("final comparison noise", _noise(fin_lat)))
    cands = _candidates(report)
    if cands:
        n_noisy = sum(1 for c in cands if c.get("noisy"))
        rows.append(("noisy candidate measurements", (f'<span class="bad">{n_noisy}</span>' if n_noisy else "0")
                     + f" of {len(cands)}"))
        where = sorted({str(c.get("measured_on")) for c in cands if c.get("measured_on")})
        if where and where != [target.get("where_measured")]:
            rows.append(("candidates measured on", "<br>".join(_label(w) for w in where)))
    if deploy.get("measured_on"):
        rows.append(("deployment compared on", _label(deploy["measured_on"])))
    remote = deploy.get("remote")
    if isinstance(remote, dict):
        rows.append(("devices (TVM RPC)", _e(f"tracker {remote.get('tracker')}, key {remote.get('key')}, "
                                             f"{remote.get('parallel')} in parallel, failures {remote.get('failures')}")))
    return '<h2 id="conditions">Measurement conditions</h2>' + _kv(rows)


def _change(a: Any, b: Any, *, points: bool = False) -> str:
    x, y = _num(a), _num(b)
    if x is None or y is None:
        return "—"
    if points:
        return f"{(y - x) * 100:+.2f} points"
    return f"{y / x:.3f}×" if x else "—"


def _comparison_section(report: dict) -> str:
    base, fin = report.get("baseline"), report.get("final")
    out = ['<h2 id="comparison">Baseline vs final model</h2>']
    if not isinstance(base, dict) and not isinstance(fin, dict):
        return "".join(out) + _missing("Neither the baseline nor a final model is in this report.")
    base = base if isinstance(base, dict) else {}
    fin = fin if isinstance(fin, dict) else {}
    bl, same, fl = base.get("latency") or {}, fin.get("baseline_latency_same_run") or {}, fin.get("latency") or {}
    rows = []
    for label, key in (("latency median", "median_ms"), ("latency p10", "p10_ms"), ("latency p90", "p90_ms")):
        rows.append([_e(label), _ms(bl.get(key)), _ms(same.get(key)), _ms(fl.get(key)),
                     _change(same.get(key), fl.get(key))])
    rows.append(["latency ratio (p10, interleaved)", _ratio(bl.get("ratio_to_baseline")),
                 _ratio(same.get("ratio_to_baseline")), _ratio(fl.get("ratio_to_baseline")), "—"])
    rows.append(["measurement noise", _noise(bl), _noise(same), _noise(fl), "—"])
    rows.append(["MACs", _si(base.get("macs")), "—", _si(fin.get("macs")), _change(base.get("macs"), fin.get("macs"))])
    rows.append(["parameters", _si(base.get("params")), "—", _si(fin.get("params")),
                 _change(base.get("params"), fin.get("params"))])
    rows.append(["accuracy (validation set)", _pct(base.get("accuracy")), "—", _pct(fin.get("accuracy")),
                 _change(base.get("accuracy"), fin.get("accuracy"), points=True)])
    if "accuracy_before_finetune" in fin:
        rows.append(["accuracy before fine-tuning", "—", "—", _pct(fin.get("accuracy_before_finetune")),
                     _change(base.get("accuracy"), fin.get("accuracy_before_finetune"), points=True)])
    if fin:
        out.append(_table(["", "baseline (start of run)", "baseline (re-measured with the final model)", "final model",
                           "final vs baseline"], rows, numeric=(1, 2, 3, 4)))
        out.append('<p class="sub">Latencies of the final model are compared with the baseline re-measured in the '
                   "same rounds, interleaved; accuracies are on the full validation set.</p>")
    else:
        out.append(_table(["", "baseline (start of run)"], [r[:2] for r in rows if r[1] != "—"], numeric=(1,)))
    if fin:
        meets = fin.get("meets_latency_target")
        ft = fin.get("finetune") if isinstance(fin.get("finetune"), dict) else {}
        out.append(_kv([("ONNX export verified (baseline)", _verdict(base.get("onnx_verification")) if base else "—"),
                        ("ONNX export verified (final)", _verdict(fin.get("onnx_verification"))),
                        ("meets the latency target", '<span class="good">yes</span>' if meets is True
                         else '<span class="bad">no</span>' if meets is False else "—"),
                        ("chosen candidate", _e(fin.get("candidate_index", "—"))),
                        ("fine-tuning", _e(", ".join(f"{k} {v}" for k, v in ft.items()) or "—")),
                        ("ONNX simplifier", _e(fin.get("simplifier") or "—"))]))
    else:
        if base:
            out.append(_kv([("ONNX export verified (baseline)", _verdict(base.get("onnx_verification")))]))
        out.append(_missing("No final model in this report: the run stopped before fine-tuning and the final "
                            "measurement."))
    return "".join(out)


def _deploy_section(report: dict) -> str:
    out = ['<h2 id="deploy">Deployment: runtimes compared</h2>']
    dep = report.get("deploy")
    if not isinstance(dep, dict):
        return "".join(out) + _missing("No deployment in this report: the run stopped before the deploy stage.")
    deployed = dep.get("deployed_runtime")
    runtimes = dep.get("runtimes") if isinstance(dep.get("runtimes"), dict) else {}
    rows, names = [], []
    for rt, r in runtimes.items():
        r = r if isinstance(r, dict) else {}
        lat, b = r.get("latency") or {}, r.get("baseline_same_run") or {}
        rows.append([_e(rt), _ms(lat.get("median_ms")), _ms(lat.get("p10_ms")), _ms(b.get("median_ms")),
                     _ratio(r.get("speedup_median")), _ratio(lat.get("ratio_to_baseline")), _noise(lat),
                     "<strong>deployed</strong>" if rt == deployed else "timed"])
        names.append(rt)
    for rt, why in (dep.get("not_timed") or {}).items():
        rows.append([_e(rt), "—", "—", "—", "—", "—", "—", "not timed: " + _label(why)])
        names.append(rt)
    if rows:
        out.append(_table(["runtime", "final median", "final p10", "baseline median (same run)", "speed-up (median)",
                           "ratio (p10)", "noise", "status"], rows, numeric=(1, 2, 3, 4, 5),
                          highlight=lambda i: names[i] == deployed))
    else:
        out.append(_missing("No runtime was timed."))
    out.append(_kv([("deployed runtime", f"<strong>{_e(deployed or '—')}</strong>"),
                    ("policy", _e(dep.get("policy") or "—")), ("basis", _label(dep.get("basis") or "—")),
                    ("measured on", _label(dep.get("measured_on") or "—"))]))
    bpr = dep.get("baseline_per_runtime")
    if isinstance(bpr, dict) and bpr:
        out.append("<h3>Baseline per runtime (start of run)</h3>")
        out.append(_table(["runtime", "median", "p10", "timed runs", "noise"],
                          [[_e(rt), _ms(_get(m, "median_ms")), _ms(_get(m, "p10_ms")), _e(_get(m, "repeats") or "—"),
                            _noise(m)] for rt, m in bpr.items()], numeric=(1, 2, 3)))
    out.append('<h3 id="tvm">TVM library</h3>')
    tvm = dep.get("tvm")
    if not isinstance(tvm, dict):
        out.append(_missing("No TVM section in the deployment."))
    elif not tvm.get("built"):
        out.append(_kv([("built", "no"), ("why", _label(tvm.get("reason") or "—"))]))
    else:
        lib = tvm.get("library") if isinstance(tvm.get("library"), dict) else {}
        load = tvm.get("load") if isinstance(tvm.get("load"), dict) else {}
        tuning = tvm.get("tuning")
        out.append(_kv([("file", f"<code>{_e(tvm.get('file') or '—')}</code>"),
                        ("verification", _verdict(tvm.get("verification"))),
                        ("triple", _e(tvm.get("triple") or "—")),
                        ("TVM target", f"<code>{_e(tvm.get('target') or '—')}</code>"),
                        ("library", _e(f"{lib.get('arch', '—')}, embedded device modules "
                                       f"{lib.get('embedded_device_modules') or 'none'}")),
                        ("compile time", _e(f"{tvm.get('compile_seconds', '—')} s")),
                        ("tuning", _e(", ".join(f"{k} {v}" for k, v in tuning.items()) if isinstance(tuning, dict)
                                      else "not tuned")),
                        ("load with", f"<code>{_e(load.get('python') or '—')}</code>")]))
    return "".join(out)


def _confirmations_section(report: dict) -> str:
    out = ['<h2 id="confirmations">Confirmations (top candidates re-measured with the long plan)</h2>']
    search = report.get("search")
    if not isinstance(search, dict):
        return "".join(out) + _missing("No search in this report.")
    conf = [c for c in search.get("confirmations") or [] if isinstance(c, dict)]
    if not conf:
        return "".join(out) + _missing("No candidate was re-measured.")
    target = _num(_get(report, "target", "latency_target_ratio"))
    chosen = _chosen_index(report)
    rows = []
    for c in conf:
        r = _num(c.get("confirmed_ratio"))
        verdict = "—" if r is None or target is None else (
            '<span class="good">under the target</span>' if r <= target else '<span class="bad">over the target</span>')
        rows.append([_e(c.get("index", "—")), _ratio(c.get("search_ratio")), _ratio(c.get("confirmed_ratio")),
                     verdict, _pct(c.get("accuracy")), _noise(c)])
    out.append(_table(["candidate", "ratio in the search", "confirmed ratio", "vs the target", "accuracy (search)",
                       "noise"], rows,
                      numeric=(1, 2, 4), highlight=lambda i: conf[i].get("index") == chosen))
    confirmed = search.get("confirmed")
    out.append(f"<p>Confirmed: <strong>{_e(_yes(confirmed))}</strong></p>")
    return "".join(out)


def render_html(report: dict) -> str:
    """The page for ``report`` (the dict in report.json or report.failed.json), as one string."""
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict (the contents of report.json), not {type(report).__name__}")
    name = _get(report, "model", "name") or "unnamed model"
    target = _num(_get(report, "target", "latency_target_ratio"))
    chosen = _chosen_index(report)
    pareto_caption = (
        "Every evaluated candidate: its latency measured on the target as a ratio to the baseline timed in the "
        "same rounds, against its accuracy on the search's validation subset"
        + (f"; candidates right of the dashed line (target {target:.3g}×) are infeasible" if target else "")
        + ". The step line is the Pareto front: no other candidate is both faster and more accurate."
        + (f" The star is the chosen candidate ({chosen}); the plus is the final model after fine-tuning, its "
           "accuracy on the full validation set." if chosen is not None else "")
        + " Orange rings mark measurements that stayed noisy.")
    parts = [_head(report), _run_section(report), _conditions_section(report), _comparison_section(report),
             '<h2 id="pareto">Pareto view</h2>',
             _img(pareto_chart(report), "accuracy vs measured latency ratio of every candidate", _e(pareto_caption),
                  "No candidate with a measured latency and accuracy: nothing to plot.", "img-pareto"),
             '<h2 id="convergence">Search convergence</h2>',
             _img(convergence_chart(report), "best feasible accuracy vs evaluation index",
                  "The best accuracy among feasible candidates after each evaluation (the step line); dots are "
                  "the candidates themselves.", "No candidate was evaluated: nothing to plot.", "img-convergence"),
             '<h2 id="channels">Channels before and after</h2>']
    found = channel_rows(report)
    parts.append(_img(channels_chart(report), "channels per group before and after pruning",
                      "Grey: the baseline's channels; blue: the final model's. "
                      + ("Each prunable group is named after one of its layers; layers coupled to it (a residual "
                         "stream, a depthwise pair) keep the same number." if found and found[0] == "group" else ""),
                      "No final model in this report: no channel counts after pruning.", "img-channels"))
    parts.append(_channels_table(report))
    parts.append(_blocks_table(report))
    parts.append(_kept_whole_table(report))
    parts += [_layers_section(report), _int8_section(report), _deploy_section(report), _confirmations_section(report), _gates_section(report),
              _warnings_section(report), _candidates_section(report),
              f"<footer>Written by edgeprune from the run's report on {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}. "
              "The numbers are those of report.json; this page adds nothing to them.</footer>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            '<link rel="icon" href="data:,">'
            f"<title>edgeprune report: {_e(name)} ({_e(report.get('status') or 'unknown')})</title>"
            f"<style>{_CSS}</style></head><body><main>\n" + "\n".join(p for p in parts if p)
            + "\n</main></body></html>\n")


def write_html_report(report: dict, out_dir: str | Path, *, filename: str = REPORT_HTML) -> Path:
    """Write ``out_dir/filename`` (``report.html``; ``report.failed.html`` for a failed run, beside the previous
    good page; charts embedded, nothing else written) and return its path. ``report`` is the dict in
    ``report.json`` or ``report.failed.json``; sections a failed run did not reach may be None."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    atomic_write(path, render_html(report).encode("utf-8"))
    return path
