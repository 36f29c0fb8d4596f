"""Train a zoo model on a built-in or user data set and save an edgeprune checkpoint.

    python tools/train.py resnet20 --data shapes --epochs 15 --out examples/resnet20.pt
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from edgeprune.data import load_data
from edgeprune.model.evaluate import accuracy
from edgeprune.model.finetune import TrainConfig, train
from edgeprune.model.load import build, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = load_data(a.data)
    kwargs = {"num_classes": data.num_classes}
    model = build(a.arch, kwargs)
    t0 = time.time()

    def progress(step, total, loss):
        if step % 50 == 0 or step == total:
            print(f"step {step}/{total} loss {loss:.3f} ({time.time() - t0:.0f} s)", flush=True)

    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    train(model, *data.train, cfg, on_step=progress)
    acc = accuracy(model, *data.val)
    meta = {"data": a.data, "val_accuracy": acc, "epochs": a.epochs, "lr": a.lr, "seed": a.seed,
            "train_seconds": round(time.time() - t0, 1), "torch": str(torch.__version__),
            "command": f"python tools/train.py {a.arch} --data {a.data} --epochs {a.epochs} --lr {a.lr} "
                       f"--seed {a.seed} --threads {a.threads} --out {a.out}", "threads": a.threads}
    save_checkpoint(a.out, model=model, arch=a.arch, arch_kwargs=kwargs, input_shape=data.input_shape, meta=meta)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
