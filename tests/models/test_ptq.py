import numpy as np
import torch

from edgefpga.models.ptq import fixed_point, integer_bits


def test_fixed_point_truncates_and_saturates():
    x = torch.tensor([0.30, -0.30, 1.9, -2.5, 0.0])
    # ap_fixed<4,2>: step 0.25, range [-2, 1.75]
    np.testing.assert_allclose(fixed_point(x, 4, 2).numpy(), [0.25, -0.5, 1.75, -2.0, 0.0])
    np.testing.assert_allclose(fixed_point(x, 4, 2, rounding="rnd").numpy(), [0.25, -0.25, 1.75, -2.0, 0.0])


def test_integer_bits_hold_the_range():
    for value in [0.1, 0.5, 0.99, 1.0, 3.7, 100.0]:
        ib = integer_bits(value)
        assert 2 ** (ib - 1) > value
        assert ib == 1 or 2 ** (ib - 2) <= value
