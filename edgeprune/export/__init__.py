"""ONNX export, simplification and numeric verification against the PyTorch model."""
