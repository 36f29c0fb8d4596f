"""Option parsing shared by the commands (``cli``, ``cli_calibrate``): input shapes, fractions, and the
options that say what the model is and how it is fed."""

from __future__ import annotations

import click


def _shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give C,H,W, e.g. 3,32,32") from None
    if len(shape) != 3 or min(shape) < 1:
        raise click.BadParameter(f"{text!r}: give C,H,W, e.g. 3,32,32")
    return shape


def _fraction(ctx, param, text: str | None) -> float | None:
    """'0.93' or '93%' → 0.93."""
    if text is None:
        return None
    try:
        return float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a fraction (0.93) or a percentage (93%)") from None


def _model_input_options(command):
    """The options that say what the model is and how it is fed, shared by compile and analyze."""
    options = [
        click.option("--arch", default=None,
                     help="Architecture of a bare state dict: zoo name, package.module:factory, "
                          "path/to/file.py:factory or timm:NAME; literal arguments may follow inline: "
                          "'mymodels:mynet(width=16)'."),
        click.option("--arch-kwargs", default=None, metavar="K=V,...",
                     help="Arguments of the architecture's factory, e.g. num_classes=10,width=16 (Python literals, "
                          "else strings); they win over inline ones."),
        click.option("--train-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="Where fine-tuning, BN recalibration and accuracy run (auto: cuda when available). "
                          "Latency is always measured on the target."),
        click.option("--input-shape", default=None, help="C,H,W (batch excluded); the data are resized to it."),
        click.option("--normalize", default=None, metavar="NORM",
                     help="Input normalisation the model expects: imagenet, unit (mean 0, std 1), MEAN,STD or "
                          "M1,M2,M3,S1,S2,S3 (RGB in [0,1], then (x - mean)/std). Default: the checkpoint's, else "
                          "the model's config (timm), else imagenet with a warning."),
        click.option("--trust-model-code", is_flag=True,
                     help="Allow loading a pickled nn.Module (runs code from the file)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
