"""ONNX export: fp32 export, the int8 quantization ladder and the accuracy gate."""
