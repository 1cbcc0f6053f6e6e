"""Hardware generation: ONNX -> hls4ml conversion, fixed-point precision, RTL (issues 3 and 4)."""
