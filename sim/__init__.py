"""Simulation: Verilator builds and cocotb testbenches standing in for the board (issue 4)."""
