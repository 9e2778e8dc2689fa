"""Text embedding: the model directory, its ONNX graph, the encoder over ONNX Runtime and the
scheduler that batches texts for it."""
