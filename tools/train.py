"""Train any architecture edgeprune accepts on a built-in or user data set and save an edgeprune checkpoint.

    python tools/train.py resnet20 --data shapes --epochs 15 --out examples/resnet20.pt
    python tools/train.py torchvision.models:resnet18 --input-shape 3,64,64 --normalize imagenet \\
        --data shapes --epochs 1 --limit-train 1500 --out resnet18.pt

ARCH is what ``edgeprune compile --arch`` accepts: a zoo name, ``package.module:factory``,
``path/to/file.py:factory`` or ``timm:NAME`` (inline arguments allowed: ``'mymodels:mynet(width=16)'``).
The data are brought to ``--input-shape`` (default: the data's own size) and normalised with
``--normalize`` (default: edgeprune's legacy mean 0.5, std 0.25 for zoo names, as the bundled examples were
trained; ImageNet's for anything else). The checkpoint's meta records the normalisation (``normalisation``,
as ``edgeprune compile`` reads it back) and the input shape.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from edgeprune.config import parse_arch_kwargs
from edgeprune.data import load_data
from edgeprune.data.normalisation import IMAGENET, LEGACY, Normalisation, parse_normalisation
from edgeprune.model.evaluate import accuracy
from edgeprune.model.finetune import TrainConfig, train
from edgeprune.model.arch import arch_recipe, build, parse_arch
from edgeprune.model.load import check_input_shape, save_checkpoint
from edgeprune.model.zoo import ZOO


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,64,64"`` (or ``3x64x64``) → ``(3, 64, 64)``; None stays None."""
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"--input-shape {text!r}: give C,H,W, e.g. 3,64,64") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input-shape {text!r}: give C,H,W, e.g. 3,64,64")
    return shape


def default_normalisation(arch: str) -> Normalisation:
    """Legacy (0.5/0.25) for edgeprune's zoo names, as today; ImageNet's for anything else."""
    return LEGACY if parse_arch(arch)[0] in ZOO else IMAGENET


def train_model(arch: str, *, data: str = "shapes", input_shape: tuple[int, ...] | None = None,
                normalize: str | Normalisation | None = None, arch_kwargs: dict | str | None = None,
                epochs: int = 15, lr: float = 0.1, batch_size: int = 128, seed: int = 0,
                limit_train: int | None = None, threads: int | None = None, out: str | Path | None = None,
                command: str | None = None, on_step=None, recalibrate: bool = False):
    """Build ``arch``, train it and (with ``out``) save an edgeprune checkpoint there. ``recalibrate``: after
    training, re-estimate every BatchNorm's running statistics on the training images (a short training
    leaves them mostly at their initial values where the model's BN momentum is small: torchvision's
    MobileNetV3 uses 0.01, so after ~100 steps its eval-mode accuracy is at chance).

    Returns ``(model, splits, arch, arch_kwargs, meta)``: ``arch`` without inline arguments and the merged
    keyword arguments, as recorded in the checkpoint (``num_classes`` defaults to the data's class count).
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if normalize is None:
        norm = default_normalisation(arch)
    elif isinstance(normalize, Normalisation):
        norm = normalize
    else:
        norm = parse_normalisation(normalize)
    splits = load_data(data, normalisation=norm, input_shape=input_shape)
    base, kwargs = arch_recipe(arch, parse_arch_kwargs(arch_kwargs) if isinstance(arch_kwargs, str) else arch_kwargs)
    kwargs.setdefault("num_classes", splits.num_classes)
    model = build(base, kwargs)
    shape = tuple(splits.input_shape)
    classes = check_input_shape(model, shape)
    if classes != splits.num_classes:
        raise ValueError(f"{arch} gives {classes} outputs but data {data!r} has {splits.num_classes} classes")
    x, y = splits.train
    if limit_train is not None:
        x, y = x[:limit_train], y[:limit_train]
    t0 = time.time()
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    train(model, x, y, cfg, on_step=on_step)
    if recalibrate:
        from edgeprune.model.evaluate import recalibrate_bn

        recalibrate_bn(model, x)
    train_seconds = round(time.time() - t0, 1)
    acc = accuracy(model, *splits.val)
    # ``normalisation`` in the form edgeprune reads back from a checkpoint's meta (Normalisation.from_dict).
    meta = {"data": data, "val_accuracy": acc, "epochs": epochs, "lr": lr, "seed": seed, "bn_recalibrated": recalibrate,
            "train_images": int(len(y)), "train_seconds": train_seconds, "torch": str(torch.__version__),
            "normalisation": splits.normalisation.to_dict(), "input_shape": list(shape),
            "threads": torch.get_num_threads()}
    if splits.resize:
        meta["resize"] = splits.resize
    if command:
        meta["command"] = command
    if out is not None:
        save_checkpoint(out, model=model, arch=base, arch_kwargs=kwargs, input_shape=shape, meta=meta)
    return model, splits, base, kwargs, meta


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--input-shape", metavar="C,H,W", help="bring the data to this shape (default: its own)")
    ap.add_argument("--normalize", metavar="NORM",
                    help="imagenet, unit, MEAN,STD or M1,M2,M3,S1,S2,S3 (default: legacy 0.5,0.25 for zoo "
                         "names, imagenet otherwise)")
    ap.add_argument("--arch-kwargs", metavar="K=V,...", help="factory arguments (num_classes defaults to the "
                                                              "data's class count)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    try:
        shape = parse_shape(a.input_shape)
    except ValueError as e:
        ap.error(str(e))
    if a.limit_train is not None and a.limit_train < 1:
        ap.error("--limit-train must be at least 1")
    t0 = time.time()

    def progress(step, total, loss):
        if step % 50 == 0 or step == total:
            print(f"step {step}/{total} loss {loss:.3f} ({time.time() - t0:.0f} s)", flush=True)

    *_, meta = train_model(a.arch, data=a.data, input_shape=shape, normalize=a.normalize,
                           arch_kwargs=a.arch_kwargs, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                           seed=a.seed, limit_train=a.limit_train, threads=a.threads, out=a.out,
                           command="python tools/train.py " + shlex.join(argv), on_step=progress)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
