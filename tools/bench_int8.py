"""INT8 after pruning: fp32 vs ONNX Runtime static INT8 (QDQ) on the bundled models, on this machine.

    python tools/bench_int8.py --models resnet20,resnet56,mobilenet_v2 --keep 0.5 --repeats 3

For each bundled checkpoint (``examples/<model>.pt``, trained on ``shapes``) and variant (``unpruned``;
``pruned``: every group kept at ``--keep`` of its width, multiples of 8, as tools/bench_runtimes.py builds
it, BatchNorm re-estimated on 500 calibration images, then fine-tuned ``--finetune-epochs`` on the training
split, as the pipeline fine-tunes after pruning: pruning alone leaves ResNet-20 at ~37% top-1), the fp32 model is exported and
verified (``export_verified``), then quantized with ``edgeprune.export.quantize.quantize_int8`` under each
configuration of ``--configs`` (``activations/calibration/weights[/range]``, range ``reduced`` — 7-bit
weights, the default — or ``full``; the first is the library's default)
from ``--calib-images`` images of the ``shapes`` calibration split.

Accuracy: ``check_int8`` (ONNX Runtime, top-1) on the first ``--val`` images of the ``shapes`` validation
split. Latency: the project's meter (``LocalMeter``, ONNX Runtime, 1 thread) opened with the fp32 model as
its baseline, each INT8 model timed **interleaved with it in the same rounds** (``meter.measure``),
``--repeats`` times; the table gives medians over the repeats of the median ms and of the ratio of medians
to fp32 measured in the same rounds. ``--no-latency`` checks accuracy only: for a run under
``qemu-x86_64 -cpu Haswell`` (a CPU without VNNI, emulated: accuracy is exact there, timings are not).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

DEFAULT_CONFIGS = "uint8/minmax/channel,uint8/minmax/channel/full,uint8/percentile/channel,uint8/entropy/channel,int8/minmax/channel,uint8/minmax/tensor"


def variants(name: str, keep: float, calib: torch.Tensor, train_split=None, epochs: int = 0):
    from edgeprune.model.evaluate import recalibrate_bn
    from edgeprune.model.finetune import TrainConfig, train
    from edgeprune.model.load import load_model
    from edgeprune.model.prune import analyse, prune

    lm = load_model(f"examples/{name}.pt")
    shape = tuple(lm.input_shape)
    if keep >= 1:  # --keep 1: the unpruned model only (no pruning, no fine-tuning)
        return shape, {"unpruned": lm.model.eval()}
    a = analyse(lm.model, shape, round_to=8)
    widths = tuple(min((c for c in g.choices if c >= keep * g.full), default=g.full) for g in a.groups)
    pruned, _ = prune(lm.model, shape, a, widths)
    recalibrate_bn(pruned, calib[:500])
    if epochs:
        train(pruned, *train_split, TrainConfig(epochs=epochs, lr=0.01))
    return shape, {"unpruned": lm.model.eval(), f"pruned {keep:g}": pruned.eval()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenet_v2")
    ap.add_argument("--keep", type=float, default=0.5, help="1: the unpruned models only")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="comma-separated activations/calibration/weights (weights: channel or tensor)")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning of the pruned variant (0: none)")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--runs-per-round", type=int, default=15)
    ap.add_argument("--no-latency", action="store_true", help="accuracy only (e.g. under qemu)")
    a = ap.parse_args()
    torch.set_num_threads(2)  # fine-tuning; ONNX Runtime runs with 1 thread (its own sessions)

    from edgeprune.data.splits import load_data
    from edgeprune.export.onnx import export_verified
    from edgeprune.export.quantize import check_int8, quantize_int8
    from edgeprune.latency import Artifact, LocalMeter, MeasureSettings, get_backend
    from edgeprune.model.evaluate import count_macs_params

    configs = [tuple((c.split("/") + ["reduced"])[:4]) for c in a.configs.split(",")]
    d = load_data("shapes")
    xc, x_val, y_val = d.calib[0], d.val[0][: a.val].numpy(), d.val[1][: a.val].numpy()
    settings = MeasureSettings(threads=1, warmup=20, rounds=a.rounds, runs_per_round=a.runs_per_round)
    ort = get_backend("onnxruntime")
    rows = []  # (model, variant, MMACs, config, bytes, accuracy, drop, agreement, median ms, ratio, quantize s, noisy)
    for name in a.models.split(","):
        shape, models = variants(name, a.keep, xc, d.train, a.finetune_epochs)
        for variant, model in models.items():
            fp32, _, _ = export_verified(model, shape, xc[:50])
            macs, _ = count_macs_params(model, shape)
            ints = {}
            for act, cal, w, rng in configs:
                t0 = time.perf_counter()
                q = quantize_int8(fp32, xc[: a.calib_images].numpy(), per_channel=(w == "channel"),
                                  activations=act, calibration=cal, reduce_range=(rng != "full"))
                ints[(act, cal, w, rng)] = (q, time.perf_counter() - t0, check_int8(fp32, q, x_val, y_val))
            chk = next(iter(ints.values()))[2]
            if a.no_latency:
                rows.append((name, variant, macs / 1e6, "fp32", len(fp32), chk["fp32_accuracy"], 0.0, 1.0, None,
                             None, None, False))
                rows += [(name, variant, macs / 1e6, "int8 " + "/".join(k), len(q), c["int8_accuracy"], c["drop"],
                          c["top1_agreement"], None, None, secs, False) for k, (q, secs, c) in ints.items()]
                print(f"done {name} {variant}", flush=True)
                continue
            meter = LocalMeter(ort, Artifact(fp32, label="fp32"), x_val[:1], settings, "host")
            lat = {k: [] for k in ints}
            for _ in range(a.repeats):
                for k, (q, _, _) in ints.items():
                    lat[k].append(meter.measure(Artifact(q, label="int8")))
            meter.close()
            base_med = statistics.median(p.baseline.median_ms for v in lat.values() for p in v)
            rows.append((name, variant, macs / 1e6, "fp32", len(fp32), chk["fp32_accuracy"], 0.0, 1.0, base_med,
                         1.0, None, False))
            for k, (q, secs, c) in ints.items():
                pairs = lat[k]
                rows.append((name, variant, macs / 1e6, "int8 " + "/".join(k), len(q), c["int8_accuracy"], c["drop"],
                             c["top1_agreement"], statistics.median(p.candidate.median_ms for p in pairs),
                             statistics.median(p.candidate.baseline_median_ratio for p in pairs), secs,
                             any(p.candidate.noisy for p in pairs)))
            print(f"done {name} {variant}", flush=True)

    import onnxruntime

    print(f"\nhost CPU, ONNX Runtime {onnxruntime.__version__}, 1 thread, batch 1, 3x32x32; accuracy on the first "
          f"{a.val} shapes validation images; INT8 calibrated on {a.calib_images} calibration images; latency: "
          f"{a.repeats} repeats x {a.rounds} rounds x {a.runs_per_round} runs, each INT8 model interleaved with "
          f"fp32 (medians over repeats){' (not measured: --no-latency)' if a.no_latency else ''}; pruned = keep "
          f"{a.keep} per group (multiples of 8) + BN re-estimated + {a.finetune_epochs} epoch(s) fine-tuning; "
          f"int8 config = activations/calibration/weights/weight range")
    print("| model | variant | MMACs | model | KB | top-1 % | drop (points) | top-1 agreement % | median ms | x fp32 "
          "| quantize s |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, variant, mmacs, cfg, size, acc, drop, agree, med, ratio, secs, noisy in rows:
        print(f"| {name} | {variant} | {mmacs:.1f} | {cfg} | {size / 1024:.0f} | {100 * acc:.2f} | "
              f"{100 * drop:+.2f} | {100 * agree:.2f} | {'' if med is None else f'{med:.3f}'}{' (noisy)' if noisy else ''} | "
              f"{'' if ratio is None else f'{ratio:.2f}'} | "
              f"{'' if secs is None else f'{secs:.1f}'} |")


if __name__ == "__main__":
    main()
