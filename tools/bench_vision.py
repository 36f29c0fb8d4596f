"""End to end on real torchvision (and timm) architectures: train briefly, then ``edgeprune compile`` and
``edgeprune verify`` through the command line, as a user runs them (issue 10, part 6).

    /work/venv-vision/bin/python tools/bench_vision.py
    /work/venv-vision/bin/python tools/bench_vision.py --models resnet18,timm:efficientnet_b0 --budget 30 --keep
    /work/venv-vision/bin/python tools/bench_vision.py --models resnet18 --images 600 --train-epochs 1 --budget 3 \\
        --finetune-epochs 0 --agent random --json /tmp/bench_vision_smoke.json        # smoke run, a few minutes

Needs the vision environment (torch + torchvision + timm, README "Your torchvision or timm model").
For each model of ``--models`` (torchvision names, or ``timm:NAME``):

1. Data: ``--images`` images of the built-in shapes task (``edgeprune.data.builtin.make_shapes(n, seed=7)``,
   generated at 32×32), or with ``--task digits`` scikit-learn's 1797 real handwritten digits (8×8, upsampled
   to 32×32 RGB: learnable from scratch in a few epochs), as an ``.npz`` written once into the work folder;
   edgeprune brings them to ``--size``×``--size`` itself (training and compile alike) and splits them (validation, calibration, train).
2. The model with 10 classes, trained ``--train-epochs`` with ``tools/train.py``'s ``train_model`` (ImageNet
   normalisation, lr 0.05, batch 64, 2 threads; ``--recalibrate-bn``: BN statistics re-estimated on the
   training images after it), saved as a bare state dict ``<name>.pt``. "train acc" is its
   top-1 on the validation split.
3. ``edgeprune compile <name>.pt --arch torchvision.models:NAME --arch-kwargs num_classes=10 --input-shape
   3,S,S --normalize imagenet --data <npz> --target T --latency-target R --agent A --budget B
   --finetune-epochs E --out WORK/out --json`` in a subprocess (``python -m edgeprune.cli``, run from the work
   folder), its wall time measured; then ``edgeprune verify WORK/out/<name>`` when the compile wrote artifacts.

The default ``--target`` is a profile written into the work folder: ``edgeprune/targets/profiles/host.toml``
renamed ``host-ort`` with ``backend = "onnxruntime"`` (measure and deploy with ONNX Runtime only, as
tests/test_vision_cli.py does). With the stock ``host`` profile (``backend = "auto"``) the final model is also
compiled with TVM and timed: untuned TVM runs these models at tens to hundreds of ms per inference on this
machine (ResNet-18 at 64×64: ~300 ms, tests/test_vision_cli.py), against a few ms in ONNX Runtime, so ``auto``
spends minutes timing TVM and it never wins. ``--target host``
(or any profile name or TOML path) is accepted.

Columns: train acc (validation split, after training); baseline and final ms: medians of the final
comparison, measured interleaved in the same rounds on the target; ratio: the final p10 over the baseline's
p10 (what the target is checked on), with the target ("noisy" when the meter flagged the final comparison:
the machine's speed moved while timing it); met: ``final.meets_latency_target``; MACs before →
after; acc before → after: the pruned model's validation accuracy before and after fine-tuning (the unpruned
model's is in the JSON as ``baseline_acc``); frozen groups: channel groups the analysis keeps whole
(``search.groups.frozen``) out of all groups; candidates: evaluated (feasible); verify: ``edgeprune verify``'s
exit code; wall s: the compile's wall time (training not included; it is ``train_s`` in the JSON). A compile
that fails is a row with its exit code and its last stderr line, not a crash (exit 3, target not met, still
reads ``report.failed.json`` for what it measured). All rows go to ``--json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = "resnet18,mobilenet_v3_small,efficientnet_b0"


def train_tool():
    """tools/train.py as a module (tools/ is not a package), as tests/test_vision_cli.py loads it."""
    spec = importlib.util.spec_from_file_location("edgeprune_tools_train", ROOT / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arch_of(name: str) -> str:
    """``resnet18`` → ``torchvision.models:resnet18``; ``timm:NAME`` as it is."""
    return name if name.startswith("timm:") else f"torchvision.models:{name}"


def file_stem(name: str) -> str:
    return name.replace(":", "_")


def task_npz(work: Path, task: str, n: int) -> Path:
    """The task's images as an .npz, written once into ``work``: ``shapes``: the built-in shapes task's first
    ``n`` images (seed 7); ``digits``: scikit-learn's 1797 real handwritten digits (all of them; ``n`` caps
    them), the built-in ``digits`` data (upsampled to 32×32 RGB)."""
    import numpy as np

    from edgeprune.data import builtin

    path = work / f"{task}{n}.npz"
    if not path.exists():
        if task == "digits":
            x, y = builtin.make_digits()
            x, y = x[:n], y[:n]
        else:
            x, y = builtin.make_shapes(n, seed=7)
        tmp = work / f".{task}{n}.tmp.npz"
        np.savez(tmp, x=np.asarray(x), y=np.asarray(y))
        tmp.replace(path)
    return path


def host_ort_profile(work: Path) -> Path:
    """host.toml measured and deployed with ONNX Runtime only (no TVM build and timing)."""
    host = (ROOT / "edgeprune" / "targets" / "profiles" / "host.toml").read_text()
    text = host.replace('name = "host"', 'name = "host-ort"').replace('backend = "auto"', 'backend = "onnxruntime"')
    if 'name = "host-ort"' not in text or 'backend = "onnxruntime"' not in text:
        raise SystemExit("edgeprune/targets/profiles/host.toml changed: cannot derive the host-ort profile")
    path = work / "host-ort.toml"
    path.write_text(text)
    return path


def train(name: str, npz: Path, size: int, epochs: int, work: Path, recalibrate: bool = False) -> tuple[Path, dict]:
    """Train ``name`` with 10 classes and save its state dict; returns (path, facts). ``recalibrate``: BN
    statistics re-estimated on the training images after training (``tools/train.py``)."""
    import torch

    threads = torch.get_num_threads()
    tool = train_tool()
    t0 = time.time()
    model, splits, arch, kwargs, meta = tool.train_model(
        arch_of(name), data=str(npz), input_shape=(3, size, size), normalize="imagenet", epochs=epochs,
        lr=0.05, batch_size=64, threads=2, recalibrate=recalibrate)
    torch.set_num_threads(threads)
    acc = meta.get("val_accuracy")
    if acc is None:
        from edgeprune.model.evaluate import accuracy

        acc = accuracy(model, *splits.val)
    path = work / f"{file_stem(name)}.pt"
    torch.save(model.state_dict(), path)
    facts = {"train_acc": float(acc), "train_images": meta.get("train_images"), "val_images": int(len(splits.val[1])),
             "train_s": round(time.time() - t0, 1), "arch_kwargs": kwargs, "bn_recalibrated": recalibrate}
    del model, splits
    return path, facts


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def cli(*args: str, cwd: Path, timeout: float) -> tuple[int | str, str, str, float]:
    """``python -m edgeprune.cli ARGS`` as a user runs it: (exit code or "timeout", stdout, stderr, wall s)."""
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], capture_output=True, text=True,
                           timeout=timeout, cwd=cwd)
        return r.returncode, r.stdout, r.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return "timeout", out, err + f"\n(killed after {timeout:.0f} s)", time.time() - t0


def from_report(rep: dict) -> dict:
    """What the table and the JSON keep from a report.json (or report.failed.json)."""
    g = lambda d, *keys: _get(d, keys)  # noqa: E731
    final, base, search = rep.get("final") or {}, rep.get("baseline") or {}, rep.get("search") or {}
    groups = search.get("groups") or {}
    cands = rep.get("candidates") or []
    return {
        "status": rep.get("status"), "reason": rep.get("reason"),
        "target_name": g(rep, "target", "name"), "latency_target": g(rep, "target", "latency_target"),
        "target_ratio": g(rep, "target", "latency_target_ratio"), "target_ms": g(rep, "target", "latency_target_ms"),
        # The final comparison: final and baseline timed interleaved in the same rounds.
        "baseline_ms": g(final, "baseline_latency_same_run", "median_ms") or g(base, "latency", "median_ms"),
        "baseline_p10_ms": g(final, "baseline_latency_same_run", "p10_ms") or g(base, "latency", "p10_ms"),
        "final_ms": g(final, "latency", "median_ms"), "final_p10_ms": g(final, "latency", "p10_ms"),
        "ratio_p10": g(final, "latency", "ratio_to_baseline"),
        "ratio_median": g(final, "latency", "baseline_median_ratio"),
        "noisy": g(final, "latency", "noisy"),
        "met": final.get("meets_latency_target") if final else False,
        "macs_before": base.get("macs"), "macs_after": final.get("macs"),
        "params_before": base.get("params"), "params_after": final.get("params"),
        "baseline_acc": base.get("accuracy"),
        "acc_before_finetune": final.get("accuracy_before_finetune"), "acc_after_finetune": final.get("accuracy"),
        "groups": len(groups.get("groups") or []), "frozen_groups": len(groups.get("frozen") or []),
        "candidates": len(cands), "feasible": sum(bool(c.get("feasible")) for c in cands),
        "best_candidate_ratio_p10": min((c["ratio_to_baseline"] for c in cands
                                         if c.get("ratio_to_baseline") is not None), default=None),
        "search_s": search.get("wall_time_s"), "run_wall_s": rep.get("wall_time_s"),
        "deployed_runtime": g(rep, "deploy", "deployed_runtime"),
    }


def _get(d, keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def one_model(name: str, args, work: Path, npz: Path, target: str) -> dict:
    size = args.size
    row = {"model": name, "arch": arch_of(name), "input": f"3×{size}×{size}", "images": args.images,
           "train_epochs": args.train_epochs, "agent": args.agent, "budget": args.budget,
           "finetune_epochs": args.finetune_epochs, "target": target, "latency_target": args.target_ratio}
    print(f"[{name}] training {args.train_epochs} epoch(s) at {size}×{size} ...", flush=True)
    try:
        sd, facts = train(name, npz, size, args.train_epochs, work, args.recalibrate_bn)
    except Exception as e:  # noqa: BLE001 - one model's failure is a row, not the end of the benchmark
        row.update(exit_code="train", error=f"training failed: {type(e).__name__}: {last_line(str(e))}")
        print(f"[{name}] {row['error']}", flush=True)
        return row
    row.update(facts)
    row["arch_kwargs"] = json.loads(json.dumps(row["arch_kwargs"], default=repr))
    print(f"[{name}] trained in {facts['train_s']:.0f} s: val acc {facts['train_acc']:.3f}", flush=True)

    out = work / "out"
    cmd = ["compile", str(sd), "--arch", arch_of(name), "--arch-kwargs", "num_classes=10",
           "--input-shape", f"3,{size},{size}", "--normalize", "imagenet", "--data", str(npz), "--target", target,
           "--latency-target", args.target_ratio, "--agent", args.agent, "--budget", str(args.budget),
           "--seed", str(args.seed), "--finetune-epochs", str(args.finetune_epochs), "--out", str(out), "--json"]
    row["command"] = "edgeprune " + " ".join(cmd)
    print(f"[{name}] {row['command']}", flush=True)
    code, stdout, stderr, wall = cli(*cmd, cwd=work, timeout=args.timeout)
    row.update(exit_code=code, wall_s=round(wall, 1))
    try:
        summary = json.loads(stdout)
    except ValueError:
        summary = {}
    run_dir = Path(summary["out_dir"]) if summary.get("out_dir") else out / file_stem(name)
    row["out_dir"] = str(run_dir)
    for fname in ("report.json", "report.failed.json"):
        if (run_dir / fname).is_file():
            row.update(from_report(json.loads((run_dir / fname).read_text())))
            row["report"] = fname
            break
    if code != 0:
        row["error"] = summary.get("message") or last_line(stderr) or f"exit {code}"
        print(f"[{name}] compile exit {code}: {row['error']}", flush=True)
    if code == 0 and (run_dir / "report.json").is_file():
        vcode, vout, verr, _ = cli("verify", str(run_dir), cwd=work, timeout=args.timeout)
        row["verify"] = vcode
        if vcode != 0:
            row["verify_error"] = last_line(verr) or last_line(vout)
    else:
        row["verify"] = None
    print(f"[{name}] done in {wall:.0f} s: exit {code}, verify {row['verify']}", flush=True)
    return row


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _macs(v) -> str:
    return "-" if v is None else f"{v / 1e6:.0f}M"


def table(rows: list[dict]) -> str:
    head = ("| model | input | train acc | baseline ms | final ms | ratio (target) | met | MACs before→after "
            "| acc before→after | frozen groups | candidates (feasible) | verify | wall s |")
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        if r.get("exit_code") == "train":
            lines.append(f"| {r['model']} | {r['input']} | {r.get('error')} |" + " - |" * 10)
            continue
        target = r.get("target_ratio")
        ratio = f"{_f(r.get('ratio_p10'), '.3f')} ({_f(target, '.2f') if target is not None else r['latency_target']})"
        if r.get("noisy"):  # the meter's noise flag: the machine's speed moved while the final pair was timed
            ratio += " noisy"
        met = "yes" if r.get("met") else "no"
        if r.get("exit_code") != 0:
            met += f" (exit {r.get('exit_code')}: {r.get('error', '')})"
        verify = "-" if r.get("verify") is None else ("ok" if r["verify"] == 0 else f"exit {r['verify']}")
        frozen = f"{r['frozen_groups']} of {r['groups'] + r['frozen_groups']}" if "groups" in r else "-"
        cands = f"{r['candidates']} ({r['feasible']})" if "candidates" in r else "-"
        lines.append(
            f"| {r['model']} | {r['input']} | {_f(r.get('train_acc'), '.3f')} | {_f(r.get('baseline_ms'), '.2f')} "
            f"| {_f(r.get('final_ms'), '.2f')} | {ratio} | {met} "
            f"| {_macs(r.get('macs_before'))}→{_macs(r.get('macs_after'))} "
            f"| {_f(r.get('acc_before_finetune'), '.3f')}→{_f(r.get('acc_after_finetune'), '.3f')} | {frozen} "
            f"| {cands} | {verify} | {_f(r.get('wall_s'), '.0f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="torchvision names, or timm:NAME (comma-separated)")
    ap.add_argument("--task", choices=("shapes", "digits"), default="shapes",
                    help="built-in images: shapes (generated) or digits (scikit-learn's real 1797)")
    ap.add_argument("--images", type=int, default=3000, help="images in the .npz (all splits; digits: at most 1797)")
    ap.add_argument("--size", type=int, default=64, help="input height and width")
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--recalibrate-bn", action="store_true",
                    help="re-estimate BN statistics on the training images after training (tools/train.py)")
    ap.add_argument("--target", default=None,
                    help="profile name or TOML path (default: host-ort, host.toml with ONNX Runtime only)")
    ap.add_argument("--target-ratio", "--latency-target", dest="target_ratio", default="0.7x",
                    help="compile's --latency-target")
    ap.add_argument("--agent", default="bo")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per compile (and per verify)")
    ap.add_argument("--json", default=str(ROOT / "docs" / "bench_data" / "vision_e2e.json"))
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = ap.parse_args()

    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench_vision_"))
    print(f"work folder: {work}", flush=True)
    t0 = time.time()
    try:
        npz = task_npz(work, args.task, args.images)
        target = args.target or str(host_ort_profile(work))
        rows = []
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            rows.append(one_model(name, args, work, npz, target))
            _write(args, rows, t0)  # after every model: a stopped benchmark keeps what it finished
    finally:
        if not args.work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: {work}", flush=True)
    print(f"\n{args.images} {args.task} images at {args.size}×{args.size}, {args.train_epochs} training epoch(s); "
          f"target {Path(target).stem if target.endswith('.toml') else target}, {args.target_ratio}, agent "
          f"{args.agent}, budget {args.budget}, {args.finetune_epochs} fine-tuning epoch(s)\n")
    print(table(rows))
    print(f"\nrows: {args.json}")


def _write(args, rows: list[dict], t0: float) -> None:
    import torch

    try:
        import torchvision
        tv = torchvision.__version__
    except ImportError:
        tv = None
    doc = {"benchmark": "tools/bench_vision.py", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
           "conditions": {"models": args.models, "task": args.task, "images": args.images, "size": args.size,
                          "train_epochs": args.train_epochs, "recalibrate_bn": args.recalibrate_bn, "target": args.target or "host-ort",
                          "latency_target": args.target_ratio, "agent": args.agent, "budget": args.budget,
                          "seed": args.seed, "finetune_epochs": args.finetune_epochs},
           "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version(), "torch": str(torch.__version__), "torchvision": tv},
           "wall_s": round(time.time() - t0, 1), "rows": rows}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
