"""The charts of ``report.html``, drawn from the report dict with matplotlib's Agg canvas (no pyplot, no
global backend change) as PNG bytes: the Pareto view, the search's convergence, channels per group."""

from __future__ import annotations

import io
import math
from typing import Any

# Colours (colour-blind safe, from the Okabe-Ito palette) and markers of the charts.
C_FEASIBLE, C_INFEASIBLE, C_NOISY = "#009E73", "#D55E00", "#E69F00"
C_FRONT, C_TARGET, C_CHOSEN, C_FINAL = "#0072B2", "#444444", "#F0E442", "#CC79A7"


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _candidates(report: dict) -> list[dict]:
    """Candidates with an index, sorted by it."""
    cands = [c for c in report.get("candidates") or [] if isinstance(c, dict) and isinstance(c.get("index"), int)]
    return sorted(cands, key=lambda c: c["index"])


def _plottable(cands: list[dict]) -> list[dict]:
    return [c for c in cands if _num(c.get("ratio_to_baseline")) is not None and _num(c.get("accuracy")) is not None]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency ratio, accuracy) points no other point beats on both (lower ratio, higher accuracy),
    sorted by ratio."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def best_so_far(cands: list[dict]) -> list[float | None]:
    """For each candidate in index order, the best accuracy among the feasible ones up to it (None before any)."""
    best, out = None, []
    for c in cands:
        acc = _num(c.get("accuracy"))
        if c.get("feasible") and acc is not None:
            best = acc if best is None else max(best, acc)
        out.append(best)
    return out


# ---------------------------------------------------------------------------------------------- charts


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _chosen_index(report: dict) -> int | None:
    idx = _get(report, "final", "candidate_index")
    return idx if isinstance(idx, int) and not isinstance(idx, bool) else None


def pareto_chart(report: dict) -> bytes | None:
    """Accuracy vs measured latency ratio of every candidate; None when there is nothing to plot."""
    from matplotlib.ticker import PercentFormatter

    cands = _plottable(_candidates(report))
    base_acc = _num(_get(report, "baseline", "accuracy"))
    target = _num(_get(report, "target", "latency_target_ratio"))
    if not cands:
        return None
    fig = _figure(9.5, 5.4)
    ax = fig.add_subplot()
    xs = [c["ratio_to_baseline"] for c in cands]
    feas = [c for c in cands if c.get("feasible")]
    infeas = [c for c in cands if not c.get("feasible")]
    noisy = [c for c in cands if c.get("noisy")]
    x_hi = max(xs + [1.0] + ([target] if target else []))
    if target is not None:
        ax.axvspan(target, x_hi * 1.05, color="#999999", alpha=0.14, lw=0)
        ax.axvline(target, color=C_TARGET, ls="--", lw=1.4, label=f"latency target {target:.3g}×", zorder=1)
    front = pareto_front([(c["ratio_to_baseline"], c["accuracy"]) for c in cands])
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=C_FRONT, lw=1.6, alpha=0.85,
                label="Pareto front (all candidates)", zorder=2)
    if feas:
        ax.scatter([c["ratio_to_baseline"] for c in feas], [c["accuracy"] for c in feas], s=38, marker="o",
                   color=C_FEASIBLE, edgecolors="white", linewidths=0.5, label=f"feasible ({len(feas)})", zorder=4)
    if infeas:
        ax.scatter([c["ratio_to_baseline"] for c in infeas], [c["accuracy"] for c in infeas], s=55, marker="X",
                   color=C_INFEASIBLE, edgecolors="white", linewidths=0.5, label=f"infeasible ({len(infeas)})",
                   zorder=4)
    if noisy:
        ax.scatter([c["ratio_to_baseline"] for c in noisy], [c["accuracy"] for c in noisy], s=190, marker="o",
                   facecolors="none", edgecolors=C_NOISY, linewidths=1.8, label=f"noisy measurement ({len(noisy)})",
                   zorder=3)
    chosen = _chosen_index(report)
    hit = [c for c in cands if c["index"] == chosen]
    if hit:
        ax.scatter([hit[0]["ratio_to_baseline"]], [hit[0]["accuracy"]], s=330, marker="*", color=C_CHOSEN,
                   edgecolors="black", linewidths=0.9, label=f"chosen: candidate {chosen}", zorder=6)
    f_ratio, f_acc = _num(_get(report, "final", "latency", "ratio_to_baseline")), _num(_get(report, "final", "accuracy"))
    if f_ratio is not None and f_acc is not None:
        ax.scatter([f_ratio], [f_acc], s=90, marker="P", color=C_FINAL, edgecolors="black", linewidths=0.7,
                   label="final model (fine-tuned, full validation set)", zorder=5)
    if base_acc is not None:
        ax.scatter([1.0], [base_acc], s=70, marker="D", color="black", label="baseline (1.0×)", zorder=5)
    ax.set_xlim(right=x_hi * 1.05)
    ax.set_xlabel("measured latency / baseline  (p10, timed interleaved with the baseline)")
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(alpha=0.3)
    ax.set_title("Candidates: accuracy vs measured latency (left and up is better)", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    return _png(fig)


def convergence_chart(report: dict) -> bytes | None:
    """The best feasible accuracy found after each evaluation; None without candidates."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    cands = [c for c in _candidates(report) if _num(c.get("accuracy")) is not None]
    if not cands:
        return None
    fig = _figure(9.5, 4.0)
    ax = fig.add_subplot()
    idx = [c["index"] for c in cands]
    best = best_so_far(cands)
    feas = [c for c in cands if c.get("feasible")]
    infeas = [c for c in cands if not c.get("feasible")]
    if feas:
        ax.scatter([c["index"] for c in feas], [c["accuracy"] for c in feas], s=24, marker="o", color=C_FEASIBLE,
                   label="feasible candidate", zorder=3)
    if infeas:
        ax.scatter([c["index"] for c in infeas], [c["accuracy"] for c in infeas], s=28, marker="X",
                   color=C_INFEASIBLE, label="infeasible candidate", zorder=3)
    pts = [(i, b) for i, b in zip(idx, best) if b is not None]
    if pts:
        ax.step([p[0] for p in pts] + [idx[-1]], [p[1] for p in pts] + [pts[-1][1]], where="post", color=C_FRONT,
                lw=2.0, label="best feasible so far", zorder=4)
    else:
        ax.text(0.5, 0.5, "no feasible candidate", transform=ax.transAxes, ha="center", va="center",
                color=C_INFEASIBLE, fontsize=12)
    chosen = _chosen_index(report)
    hit = [c for c in cands if c["index"] == chosen]
    if hit:
        ax.scatter([chosen], [hit[0]["accuracy"]], s=260, marker="*", color=C_CHOSEN, edgecolors="black",
                   linewidths=0.9, label=f"chosen: candidate {chosen}", zorder=6)
    base_acc = _num(_get(report, "baseline", "accuracy"))
    if base_acc is not None:
        ax.axhline(base_acc, color="black", ls=":", lw=1.2, label="baseline accuracy", zorder=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("evaluation index")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.set_title("Search convergence", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    return _png(fig)


def channel_rows(report: dict) -> tuple[str, list[tuple[str, int, int]]] | None:
    """("group" or "layer", [(name, before, after)]): the search's groups with the final widths when the
    report has both, else the per-layer channel counts of the baseline and the final model; None without
    a final model."""
    groups = _get(report, "search", "groups", "groups")
    widths = _get(report, "final", "widths")
    if isinstance(groups, list) and isinstance(widths, list) and groups and len(groups) == len(widths) \
            and all(isinstance(g, dict) and "name" in g and _num(g.get("full")) is not None for g in groups) \
            and all(_num(w) is not None for w in widths):
        return "group", [(str(g["name"]), int(g["full"]), int(w)) for g, w in zip(groups, widths)]
    before, after = _get(report, "baseline", "channels"), _get(report, "final", "channels")
    if isinstance(before, dict) and isinstance(after, dict):
        rows = [(str(k), int(v), int(after[k])) for k, v in before.items()
                if _num(v) is not None and _num(after.get(k)) is not None]
        if rows:
            return "layer", rows
    return None


def channels_chart(report: dict) -> bytes | None:
    found = channel_rows(report)
    if found is None:
        return None
    kind, rows = found
    n = len(rows)
    fig = _figure(9.5, max(2.6, 0.34 * n + 1.3))
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]  # the first group at the top
    before = [r[1] for r in rows]
    after = [r[2] for r in rows]
    ax.barh(ys, before, height=0.72, color="#d9d9d9", edgecolor="#9a9a9a", linewidth=0.6, label="before (baseline)")
    ax.barh(ys, after, height=0.46, color=C_FRONT, label="after (final model)")
    top = max(before + after)
    for y, b, a in zip(ys, before, after):
        ax.text(b + top * 0.01, y, f"{a}/{b}  ({a / b:.0%})" if b else f"{a}/{b}", va="center", fontsize=8.5,
                color="#333333")
    ax.set_yticks(ys)
    ax.set_yticklabels([r[0].replace("$", r"\$") for r in rows], fontsize=8.5)  # names are text, not mathtext
    ax.set_xlim(0, top * 1.22)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("output channels kept")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Channels per " + ("prunable group" if kind == "group" else "layer") + ": before vs after",
                 fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    return _png(fig)
