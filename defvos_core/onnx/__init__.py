"""defvos_core.onnx."""
