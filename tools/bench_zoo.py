"""Pruning robustness over the public model zoos: edgeprune's pruning next to plain Torch-Pruning.

Runs in the vision venv (torchvision + timm)::

    /work/venv-vision/bin/python tools/bench_zoo.py --zoo torchvision             # all ~80 classification models
    /work/venv-vision/bin/python tools/bench_zoo.py --zoo timm                    # one or two small models per family
    /work/venv-vision/bin/python tools/bench_zoo.py --zoo timm --models resnet18,vit_tiny_patch16_224 --out /tmp/t.jsonl
    /work/venv-vision/bin/python tools/bench_zoo.py --zoo torchvision --table-only --markdown docs/zoo_table.md
    /work/venv-vision/bin/python tools/bench_zoo.py --list --zoo timm             # the model names, nothing run

Resumable: results are appended, one JSON line per (model, method), to ``--out`` (default
``docs/bench_data/zoo_<zoo>.jsonl``); a rerun skips the pairs already there (``--redo`` runs them again; the table
then uses the newest line). ``--table`` prints the Markdown table after the sweep, ``--markdown PATH`` writes it,
``--table-only`` prints it from the file without running anything.

What is measured. Every model is built with random weights (``torch.manual_seed(0)``; torchvision
``get_model(name, weights=None)``, timm ``create_model(name, pretrained=False)``: nothing is downloaded), eval mode,
batch 1, input 3×224×224 (``--size``) except where the model needs another: torchvision ``inception_v3`` 299, and
timm models whose ``pretrained_cfg`` has ``fixed_input_size`` use its ``input_size`` (crossvit 240, …;
``--native-size`` uses ``pretrained_cfg["input_size"]`` for every timm model). Each (model, method) runs in its own
subprocess with ``--timeout`` seconds, so a crash, hang or out-of-memory kill is recorded and the sweep goes on.

* ``edgeprune``: ``analyse(model, (3, H, W), round_to=8)`` (timed: ``analysis_s``), then ``prune`` with every group
  at ``g.width(0.7)`` (timed: ``prune_s``). ``groups`` = prunable groups found, ``frozen`` = the analysis' frozen
  groups ([name, reason]; empty when the analysis has no such field), ``unsupported`` = layers it left unpruned.
* ``torch-pruning``: plain Torch-Pruning 1.6, the reference: ``MetaPruner(model, x, MagnitudeImportance(p=1),
  pruning_ratio=0.3, ignored_layers=[last nn.Linear, else the last conv], round_to=8).step()`` (timed:
  ``prune_s``), nothing else (no ``num_heads`` for attention models). ``groups`` = entries in its pruning history.

Then, for both: the pruned model's forward on ``torch.randn(1, 3, H, W)`` must run and give the original output
shape; MACs and parameters before/after with ``tp.utils.count_ops_and_params``; ONNX export, simplification and
verification against PyTorch with ``edgeprune.export.onnx.export_verified`` on 2 seeded random inputs
(``full_check=False``; ``onnx.checker.check_model`` is run on the result when it is under 2 GB). A pruned model
with more than 2 GB of parameters is not exported (a single ONNX protobuf cannot hold it and export_verified does
not write external data): status ``skipped-onnx``.

Status of a (model, method): ``verified`` (pruned, forward ok, ONNX verified, MACs ratio ≤ 0.8), ``no-cut`` (all
that, but MACs ratio > 0.8: the pruning barely cut anything), ``failed-prune`` (analyse/prune/MetaPruner raised),
``failed-forward`` (the pruned model raised or changed its output shape), ``failed-onnx`` (export, simplification,
checker or verification failed), ``skipped-onnx`` (> 2 GB, see above), ``failed-build`` (the model could not be
built at all), ``timeout``, ``crashed`` (the subprocess died: signal or exit code, its last stderr line, and the
stage it was in). ``error`` is the exception's class and first line (≤ 300 characters), ``where`` its innermost
frame, ``stage`` where the run stopped (build, analyse, prune, forward, onnx, done). ``wall_s`` is the whole
subprocess, ``peak_rss_mb`` its peak resident memory, ``out_abs_max`` the largest |output| of the pruned model on
the ONNX inputs: with random weights (and BN running statistics at their defaults) some models' logits reach 1e5 and
more, so ONNX-vs-PyTorch float32 differences of 100s pass or fail on ``rtol`` alone; the notes flag any
``max_abs_diff`` > 1e-3 with that scale (e.g. inception_v3).

Reading the table: one row per model, sorted by name; MACs (G) of the unpruned model at that input; for each method
its status and MACs ratio (pruned / original, ~0.5 expected for 0.7 width / 0.3 ratio on plain CNNs), for edgeprune
also ``pruned/frozen`` groups and the analysis time; notes are the first line of each method's error (``ep:`` /
``tp:``). The summary lines count, per method, the models verified with a real MACs cut (ratio ≤ 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("edgeprune", "torch-pruning")
KEEP = 0.7  # edgeprune width per group
RATIO = 0.3  # Torch-Pruning pruning_ratio (= 1 - KEEP)
ROUND_TO = 8
NO_CUT = 0.8  # a MACs ratio above this is not a real cut
ONNX_LIMIT = 2 ** 31  # protobuf's 2 GB

TIMM_MODELS = (
    "resnet18", "resnet26d", "resnet50", "resnext26ts", "seresnext26d_32x4d", "regnetx_002", "regnety_002",
    "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv2_100", "efficientnet_b0", "efficientnet_lite0",
    "tf_efficientnetv2_b0", "ghostnet_100", "mixnet_s", "mnasnet_100", "fbnetc_100", "rexnet_100", "dla34",
    "dpn48b", "densenet121", "hrnet_w18_small", "cspdarknet53", "cspresnet50", "darknet53", "vgg11", "repvgg_a0",
    "convnext_atto", "convnextv2_atto", "edgenext_xx_small", "poolformer_s12", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "levit_128s", "efficientformer_l1", "mobilevit_xxs",
    "coat_lite_tiny", "pit_ti_224", "cait_xxs24_224", "crossvit_tiny_240", "tnt_s_patch16_224",
    "xcit_nano_12_p16_224", "maxvit_tiny_tf_224",
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def first_line(e: BaseException | str, limit: int = 300) -> str:
    if not isinstance(e, str):
        msg = str(e).strip()
        e = f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}"
    text = e
    return text.strip()[:limit]


# ---------------------------------------------------------------------------------------------- model lists


def zoo_models(zoo: str) -> list[str]:
    if zoo == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models(module=torchvision.models))
    import timm

    known = set(timm.list_models())
    missing = [n for n in TIMM_MODELS if n not in known]
    if missing:
        log(f"timm {timm.__version__} has no {', '.join(missing)}: left out")
    return [n for n in TIMM_MODELS if n in known]


def build(zoo: str, name: str, size: int, native: bool):
    """(model in eval mode, input size H) with seeded random weights."""
    import torch

    torch.manual_seed(0)
    if zoo == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
        h = 299 if name == "inception_v3" else size
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        h = size
        if "input_size" in cfg and (native or cfg.get("fixed_input_size")):
            h = int(cfg["input_size"][-1])
    return model.eval(), h


def classifier(model):
    """What plain Torch-Pruning users ignore: the last nn.Linear, else the last conv."""
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return [linears[-1]]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1:]


# --------------------------------------------------------------------------------------- one (model, method)


def shapes(out):
    import torch

    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (tuple, list)):
        return [shapes(o) for o in out]
    if isinstance(out, dict):
        return {k: shapes(v) for k, v in out.items()}
    return type(out).__name__


def where(e: BaseException) -> str | None:
    """The innermost frame of the exception, 'package/file.py:line in function', and edgeprune's innermost."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return None

    def fmt(f):
        path = f.filename.replace(os.sep, "/")
        for cut in ("site-packages/", f"{ROOT.as_posix()}/"):
            if cut in path:
                path = path.split(cut, 1)[1]
        return f"{path}:{f.lineno} in {f.name}"

    text = fmt(frames[-1])
    ours = [f for f in frames if "/edgeprune/" in f.filename.replace(os.sep, "/")]
    if ours and ours[-1] is not frames[-1]:
        text += f" (from {fmt(ours[-1])})"
    return text[:300]


def peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def blank(model: str, zoo: str, method: str) -> dict:
    return {"model": model, "zoo": zoo, "method": method, "input_size": None, "params_M": None, "macs_G": None,
            "pruned_params_M": None, "pruned_macs_G": None, "macs_ratio": None, "analysis_s": None, "prune_s": None,
            "groups": None, "frozen": [], "unsupported": [], "forward_ok": False, "onnx_ok": False,
            "max_abs_diff": None, "out_abs_max": None, "error": None, "where": None, "status": None, "stage": "build"}


def worker(args) -> None:
    """Runs one (model, method); writes the record to --result after every stage (the parent reads the last one)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rec = blank(args.model, args.zoo, args.method)

    def save(**kw):
        rec.update(kw, peak_rss_mb=peak_rss_mb())
        tmp = args.result + ".tmp"
        Path(tmp).write_text(json.dumps(rec))
        os.replace(tmp, args.result)

    def fail(status, e):
        save(status=status, error=first_line(e), where=where(e))

    save()
    import torch_pruning as tp

    try:
        model, h = build(args.zoo, args.model, args.size, args.native_size)
        shape = (3, h, h)
        x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = shapes(model(x))
        macs, params = tp.utils.count_ops_and_params(model, x)
    except Exception as e:  # noqa: BLE001
        return fail("failed-build", e)
    save(input_size=list(shape), params_M=round(params / 1e6, 3), macs_G=round(macs / 1e9, 4),
         stage="analyse" if args.method == "edgeprune" else "prune")

    try:
        if args.method == "edgeprune":
            from edgeprune.model.prune import analyse, prune

            t = time.perf_counter()
            an = analyse(model, shape, round_to=ROUND_TO)
            analysis_s = time.perf_counter() - t
            frozen = [[str(n), str(r)] for n, r in (getattr(an, "frozen", ()) or ())]
            save(analysis_s=round(analysis_s, 3), groups=len(an.groups), frozen=frozen,
                 unsupported=[str(u) for u in an.unsupported], stage="prune")
            widths = tuple(g.width(KEEP) for g in an.groups)
            t = time.perf_counter()
            pruned, _hist = prune(model, shape, an, widths)
            save(prune_s=round(time.perf_counter() - t, 3))
        else:
            t = time.perf_counter()
            pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                          pruning_ratio=RATIO, ignored_layers=classifier(model), round_to=ROUND_TO)
            pruner.step()
            pruned = model
            groups = len(pruner.DG.pruning_history()) if hasattr(pruner, "DG") else None
            save(prune_s=round(time.perf_counter() - t, 3), groups=groups)
    except Exception as e:  # noqa: BLE001
        return fail("failed-prune", e)
    save(stage="forward")

    pruned.eval()
    try:
        with torch.no_grad():
            got = shapes(pruned(x))
        if got != want:
            raise ValueError(f"output shape {got} != original {want}")
        macs2, params2 = tp.utils.count_ops_and_params(pruned, x)
    except Exception as e:  # noqa: BLE001
        return fail("failed-forward", e)
    save(forward_ok=True, pruned_params_M=round(params2 / 1e6, 3), pruned_macs_G=round(macs2 / 1e9, 4),
         macs_ratio=round(macs2 / macs, 4) if macs else None, stage="onnx")

    nbytes = sum(p.numel() * p.element_size() for p in pruned.parameters()) + \
        sum(b.numel() * b.element_size() for b in pruned.buffers())
    if nbytes >= ONNX_LIMIT:
        return save(status="skipped-onnx", stage="done",
                    error=f"> 2 GB: {nbytes / 2 ** 30:.2f} GiB of weights, export_verified has no external data")
    try:
        import onnx

        from edgeprune.export.onnx import export_verified

        inputs = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():  # how large the outputs are: random weights can blow activations up (then the
            ref = pruned(inputs)  # float32 ONNX-vs-PyTorch difference is large in absolute terms)
        if isinstance(ref, torch.Tensor):
            save(out_abs_max=float(ref.abs().max()))
        data, _tool, verdict = export_verified(pruned, shape, inputs, full_check=False)
        save(max_abs_diff=float(verdict.max_abs_diff))
        if len(data) < ONNX_LIMIT:
            onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as e:  # noqa: BLE001
        m = re.search(r"max \|diff\| ([0-9.eE+-]+|nan|inf)", str(e))
        if m and rec["max_abs_diff"] is None:
            rec["max_abs_diff"] = float(m.group(1))
        return fail("failed-onnx", e)
    ratio = rec["macs_ratio"]
    save(onnx_ok=True, stage="done", status="verified" if ratio is not None and ratio <= NO_CUT else "no-cut")


# -------------------------------------------------------------------------------------------------- the sweep


def run_pair(zoo, model, method, args) -> dict:
    fd, result = tempfile.mkstemp(prefix="zoo_", suffix=".json")
    os.close(fd)
    os.unlink(result)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--zoo", zoo, "--model", model,
           "--method", method, "--size", str(args.size), "--result", result]
    if args.native_size:
        cmd.append("--native-size")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t = time.perf_counter()
    timed_out, rc = False, None
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    wall = round(time.perf_counter() - t, 2)
    try:
        rec = json.loads(Path(result).read_text())
    except (OSError, ValueError):
        rec = blank(model, zoo, method) | {"stage": "start"}
    finally:
        Path(result).unlink(missing_ok=True)
    if timed_out:
        rec.update(status="timeout", error=f"no result after {args.timeout} s (in stage {rec.get('stage')})")
    elif rec.get("status") is None:
        how = f"killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 else f"exit code {rc}"
        if rc == -signal.SIGKILL:
            how += " (out of memory?)"
        last = lines[-1].strip() if lines else "no stderr"
        rec.update(status="crashed", error=first_line(f"{how} in stage {rec.get('stage')}: {last}"))
    rec["wall_s"] = wall
    return rec


def load(path: Path) -> dict:
    """(model, method) -> newest record."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                done[(r["model"], r["method"])] = r
    return done


def sweep(args, models, out: Path) -> None:
    done = {} if args.redo else load(out)
    pairs = [(m, meth) for m in models for meth in args.methods if (m, meth) not in done]
    skipped = len(models) * len(args.methods) - len(pairs)
    log(f"{len(pairs)} (model, method) pairs to run, {skipped} already in {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, (model, method) in enumerate(pairs, 1):
        rec = run_pair(args.zoo, model, method, args)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        ratio = rec.get("macs_ratio")
        log(f"[{i}/{len(pairs)}] {model:32s} {method:14s} {rec['status']:15s} "
            f"macs {rec.get('macs_G')}G ratio {ratio if ratio is not None else '-'} wall {rec['wall_s']}s"
            + (f"  {rec['error'][:100]}" if rec.get("error") else ""))


# -------------------------------------------------------------------------------------------------- the table


def _f(v, fmt="{:.2f}"):
    return "–" if v is None else fmt.format(v)


def _note(err, n=80):
    err = (err or "").replace("\n", " ")
    err = re.sub(r"ONNX export does not match PyTorch within atol=\S+ rtol=\S+ ", "ONNX != PyTorch ", err)
    err = err.replace("|", "/")
    return err if len(err) <= n else err[: n - 1] + "…"


def table(records: dict, zoo: str) -> str:
    models = sorted({m for m, _ in records})
    lines = [f"Zoo: {zoo}. edgeprune: every group at {KEEP} width; torch-pruning: MetaPruner, pruning_ratio={RATIO}, "
             f"L1 magnitude; round_to={ROUND_TO}; batch 1, random weights.", "",
             "| model | input | MACs (G) | edgeprune | ep MACs ratio | ep groups pruned/frozen | ep analysis s "
             "| torch-pruning | tp MACs ratio | notes |",
             "|---|---|---:|---|---:|---:|---:|---|---:|---|"]
    for m in models:
        ep, tpr = records.get((m, "edgeprune"), {}), records.get((m, "torch-pruning"), {})
        size = ep.get("input_size") or tpr.get("input_size")
        size = f"{size[1]}×{size[2]}" if size else "–"
        macs = ep.get("macs_G") if ep.get("macs_G") is not None else tpr.get("macs_G")
        groups = f"{ep['groups']}/{len(ep.get('frozen') or [])}" if ep.get("groups") is not None else "–"
        notes = []
        for tag, r in (("ep", ep), ("tp", tpr)):
            if r.get("error"):
                notes.append(f"{tag}: {_note(r['error'])}")
        for tag, r in (("ep", ep), ("tp", tpr)):
            if (r.get("max_abs_diff") or 0) > 1e-3:
                scale = _f(r.get("out_abs_max"), "{:.3g}")
                notes.append(f"{tag}: ONNX max abs diff {r['max_abs_diff']:.3g} on outputs up to {scale}")
        if ep.get("unsupported"):
            notes.append(f"ep: {len(ep['unsupported'])} unsupported layer(s) kept whole")
        lines.append(f"| {m} | {size} | {_f(macs, '{:.3f}')} | {ep.get('status', '–')} | {_f(ep.get('macs_ratio'))} "
                     f"| {groups} | {_f(ep.get('analysis_s'), '{:.1f}')} | {tpr.get('status', '–')} "
                     f"| {_f(tpr.get('macs_ratio'))} | {'; '.join(notes)} |")
    lines.append("")
    for meth in METHODS:
        rs = [r for (m, me), r in records.items() if me == meth]
        ok = sum(r.get("status") == "verified" for r in rs)
        lines.append(f"- {meth}: verified with a real MACs cut (ratio ≤ {NO_CUT}): {ok} / {len(rs)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--zoo", choices=("torchvision", "timm"), default="torchvision")
    p.add_argument("--models", help="comma-separated names (default: the whole zoo list)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {METHODS}")
    p.add_argument("--size", type=int, default=224, help="input H=W where the model does not need its own")
    p.add_argument("--native-size", action="store_true", help="timm: pretrained_cfg input_size for every model")
    p.add_argument("--timeout", type=float, default=600, help="seconds per (model, method) subprocess")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the subprocess (0: torch's default)")
    p.add_argument("--out", type=Path, help="JSON lines (default docs/bench_data/zoo_<zoo>.jsonl)")
    p.add_argument("--redo", action="store_true", help="run pairs already in --out again")
    p.add_argument("--table", action="store_true", help="print the Markdown table after the sweep")
    p.add_argument("--table-only", action="store_true", help="print the table from --out; run nothing")
    p.add_argument("--markdown", type=Path, help="also write the table to this file")
    p.add_argument("--list", action="store_true", help="print the model names and exit")
    # internal: one (model, method) in this process
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        worker(args)
        return 0
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; known: {METHODS}")
    out = args.out or ROOT / "docs" / "bench_data" / f"zoo_{args.zoo}.jsonl"
    if not args.table_only:
        models = zoo_models(args.zoo)
        if args.models:
            wanted = [m.strip() for m in args.models.split(",") if m.strip()]
            unknown = [m for m in wanted if m not in models]
            if unknown:
                log(f"not in the {args.zoo} list (run anyway): {', '.join(unknown)}")
            models = wanted
        if args.list:
            print("\n".join(models))
            return 0
        sweep(args, models, out)
    if args.table or args.table_only or args.markdown:
        text = table(load(out), args.zoo)
        if args.table or args.table_only:
            print(text)
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
