"""Deployable artifacts beyond ONNX: TVM compilation, cross-compilation, checks and tuning."""
