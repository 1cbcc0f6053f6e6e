// Included by the averaging layers (ef_pool2d, ef_gpool), which define AW (the sum's width),
// ALIGN, DIV_M, DIV_SH and DMW = $clog2(DIV_M + 1): a window sum widened by ALIGN fractional bits
// and divided by the window size with truncation toward zero (hls4ml's ap_fixed division), as a
// multiplication by DIV_M and a right shift by DIV_SH (exact for every sum the input type allows,
// edgefpga.hw.rtlgen.exact_divider), with operands as narrow as the sum allows.
function signed [63:0] average(input [AW-1:0] sum);
    reg [AW-1:0] mag;
    reg [AW+ALIGN+DMW-1:0] prod;
    reg signed [63:0] quo;
    begin
        mag = $signed(sum) < 0 ? -sum : sum;
        prod = mag;
        prod = (prod << ALIGN) * DIV_M;
        quo = prod >> DIV_SH;                  // floor(|sum| * 2^ALIGN / count)
        average = $signed(sum) < 0 ? -quo : quo;
    end
endfunction
