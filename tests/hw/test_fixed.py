"""FixedType mirrors ap_fixed<W,I,AP_RND_CONV,AP_SAT>: range, rounding to even, saturation."""

import numpy as np
import pytest

from edgefpga.hw.fixed import FixedType, integer_bits_for, parse_hls_type, type_for_range


def test_signed_range_and_string():
    t = FixedType(8, 3)
    assert (t.low, t.high, t.step) == (-4.0, 4.0 - 2 ** -5, 2 ** -5)
    assert str(t) == "ap_fixed<8,3,AP_RND_CONV,AP_SAT>"


def test_unsigned_and_negative_integer_bits():
    assert FixedType(8, 8, signed=False).high == 255.0
    t = FixedType(4, -3)  # step 2^-7, values within +-2^-4
    assert t.step == 2 ** -7 and t.high == 2 ** -4 - 2 ** -7


def test_quantize_rounds_half_to_even_and_saturates():
    t = FixedType(4, 4)  # integers -8..7
    assert t.quantize(np.array([0.5, 1.5, 2.5, -0.5, 100.0, -100.0])).tolist() == [0, 2, 2, -0, 7, -8]


@pytest.mark.parametrize("max_abs, signed, bits", [(3.23, True, 3), (4.0, True, 4), (0.05, True, -3),
                                                    (255.0, False, 8), (0.9, False, 0)])
def test_integer_bits_cover_the_range(max_abs, signed, bits):
    assert integer_bits_for(max_abs, signed) == bits
    t = type_for_range(12, max_abs, signed)
    assert t.high >= max_abs - t.step


def test_parse_override_spellings():
    assert parse_hls_type("ap_fixed<6, 2>") == FixedType(6, 2)
    assert parse_hls_type("ap_ufixed<8,8,AP_TRN,AP_WRAP>") == FixedType(8, 8, signed=False)
    assert parse_hls_type("ap_uint<8>") == FixedType(8, 8, signed=False)
    with pytest.raises(ValueError, match="float16"):
        parse_hls_type("float16")
