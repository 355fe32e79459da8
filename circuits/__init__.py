"""The in-circuit fingerprint computation, its ONNX export and ezkl compilation."""
