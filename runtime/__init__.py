"""Runtime: the Engine over board, RTL simulation, emulator and ONNX Runtime (issue 5), and the CLI."""
