"""Compilation of the final model: ONNX → TVM Relax → a library for the target, and MetaSchedule tuning."""
