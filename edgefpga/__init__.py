"""edgefpga: small CNN (ONNX) -> hls4ml -> FPGA accelerator -> PYNQ runtime -> ROS 2 nodes.

The parts of the road are subpackages mapped from the repository's top-level folders:
``edgefpga.models`` (data, training, ONNX export), ``edgefpga.hw`` (hls4ml conversion, RTL),
``edgefpga.sim`` (Verilator + cocotb), ``edgefpga.runtime`` (Engine, CLI) and
``edgefpga.ros_nodes`` (ROS 2). Imports flow one way, down that road.
"""

__version__ = "0.1.0"
