"""Formatting for the report pages: escaping (every string from a report comes from users), numbers with
units, tables, embedded images, and the pages' CSS."""

from __future__ import annotations

import base64
import html
import re
from typing import Any, Callable, Iterable

from edgeprune.reporting.charts import _num

# Labels that change what a number means: shown in bold wherever they appear in a cell.
_LABELS = re.compile(r"(STAND-IN|stand-in|EMULATED|emulated)")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d1d1f;
background:#fafafa;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:20px 28px 48px}
h1{font-size:1.6em;margin:0.2em 0 0.1em}h2{font-size:1.25em;margin:1.8em 0 0.5em;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:1.05em;margin:1.2em 0 0.4em}
.sub{color:#555;margin:0 0 1em}
.banner{padding:12px 16px;border-radius:6px;margin:12px 0;font-size:1.05em}
.banner.fail{background:#fde8e6;border:2px solid #c0392b;color:#7b1d12}
.banner.ok{background:#e7f5ee;border:1px solid #2e8b57;color:#1c5234}
.banner.missing{background:#fff6e0;border:1px solid #d9a400;color:#5c4500;font-size:0.95em}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff;font-size:0.92em}
th,td{border:1px solid #d8d8d8;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f0f0f3;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.hl td{background:#fffbd6}
table.kv th{width:230px}
code{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:0.88em;
word-break:break-all}
figure{margin:8px 0 16px;background:#fff;border:1px solid #e2e2e2;padding:8px;border-radius:4px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#555;font-size:0.9em;margin-top:6px}
.missing{color:#8a6d00;font-style:italic}
.bad{color:#b0281a;font-weight:600}.good{color:#1c7a45}
footer{color:#777;font-size:0.85em;margin-top:3em}
details summary{cursor:pointer;color:#0b5cad}
"""


# ---------------------------------------------------------------------------------------------- helpers


def _e(value: Any) -> str:
    """Escaped text (quotes too: the result may go into an attribute)."""
    return html.escape(str(value), quote=True)


def _label(value: Any) -> str:
    """Escaped text with STAND-IN / EMULATED in bold."""
    return _LABELS.sub(r"<strong>\1</strong>", _e(value))


def _ms(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:.3f} ms"


def _ratio(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:.3f}×"


def _pct(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return "—" if v is None else f"{v * 100:.{digits}f}%"


def _si(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "—"
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}"
    return f"{v:g}"


def _yes(x: Any) -> str:
    return {True: "yes", False: "no", None: "—"}.get(x, str(x)) if isinstance(x, (bool, type(None))) else str(x)


def _verdict(v: Any) -> str:
    """A verification dict as one line of HTML."""
    if not isinstance(v, dict):
        return '<span class="missing">not in the report</span>'
    ok = v.get("ok")
    head = ('<span class="good">passed</span>' if ok is True else '<span class="bad">FAILED</span>' if ok is False
            else "<strong>not checked numerically</strong>")
    parts = [head]
    if v.get("method"):
        parts.append(_label(v["method"]))
    if _num(v.get("max_abs_diff")) is not None:
        parts.append(f"max |diff| {v['max_abs_diff']:.3g}")
    if v.get("samples"):
        parts.append(f"{_e(v['samples'])} samples")
    if _num(v.get("atol")) is not None and _num(v.get("rtol")) is not None:
        parts.append(f"tolerance {v['atol']:g} + {v['rtol']:g}·|ref|")
    if _num(v.get("top1_agreement")) is not None:
        parts.append(f"top-1 agreement {_pct(v['top1_agreement'], 1)}")
    return "; ".join(parts)


def _noise(m: Any) -> str:
    if not isinstance(m, dict) or _num(m.get("noise")) is None:
        return "—"
    text = f"{m['noise'] * 100:.1f}%"
    return f'<span class="bad">{text} (noisy)</span>' if m.get("noisy") else text


def _missing(what: str) -> str:
    return f'<p class="missing">{_e(what)}</p>'


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], *, cls: str = "", highlight: Callable | None = None,
           numeric: Iterable[int] = ()) -> str:
    """A table; ``header`` is plain text (escaped here), cells are HTML already escaped by the caller."""
    num = set(numeric)
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        row = list(row)
        hl = ' class="hl"' if highlight and highlight(i) else ""
        out.append(f"<tr{hl}>" + "".join(f'<td class="num">{c}</td>' if j in num else f"<td>{c}</td>"
                                         for j, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table: plain-text keys (escaped here), HTML values."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _img(png: bytes | None, alt: str, caption: str, missing: str, img_id: str) -> str:
    if png is None:
        return _missing(missing)
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img id="{_e(img_id)}" src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def data_rows(data: dict) -> list:
    """How the data were normalised (and where that came from), resized, and what model.onnx expects."""
    def values(v) -> str:
        return "(" + ", ".join(f"{x:g}" for x in v) + ")" if isinstance(v, list) else str(v)

    rows = []
    norm = data.get("normalisation")
    if isinstance(norm, dict) and "mean" in norm:
        text = f"{norm.get('name') or 'custom'}: mean {values(norm['mean'])}, std {values(norm.get('std'))}"
        rows.append(("normalisation", _e(text + (f" — {norm['source']}" if norm.get("source") else ""))))
    if data.get("resize"):
        src = data.get("source_shape")
        src = "×".join(map(str, src)) if isinstance(src, list) else str(src)
        rows.append(("data resized", _e(f"from {src}: {data['resize']}")))
    for key, label in (("note", "data note"), ("onnx_input", "model.onnx input")):
        if data.get(key):
            rows.append((label, _e(str(data[key]))))
    return rows
