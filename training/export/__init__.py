"""Export a model directory to a self-contained ONNX bundle (fp32, fused, int8, fp16), checked against PyTorch."""

from training.export.exporter import ExportError, export_bundle

__all__ = ["ExportError", "export_bundle"]
