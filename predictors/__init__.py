"""KServe predictors for text models: classification, embedding and token classification over
HuggingFace transformers (torch) or ONNX Runtime."""

__version__ = "0.1.0"
