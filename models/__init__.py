"""Models: the ELPV dataset and split, FPGA-sized architectures, training, ONNX export, cards.

This part imports no other part of edgefpga: it is the start of the road.
"""
