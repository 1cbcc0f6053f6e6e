// Included inside a layer module that has parameters SHIFT, OMIN and OMAX: the one cast every
// layer ends with, as in edgefpga.hw.intmodel.cast: round half to even by SHIFT bits, then
// saturate to [OMIN, OMAX]. A negative SHIFT (the result type has more fractional bits than the
// value: a dense layer's small scores, a conv whose result keeps fractional bits its accumulator
// lacks) is an exact left shift by -SHIFT, saturated before shifting so nothing overflows.
localparam RQ_RSH = (SHIFT > 0) ? SHIFT : 0;
localparam RQ_LSH = (SHIFT < 0) ? -SHIFT : 0;
function signed [63:0] requant(input signed [63:0] wide);
    reg signed [63:0] fl, rest, hi, lo;
    begin
        if (RQ_LSH > 0) begin
            hi = OMAX >>> RQ_LSH;              // floor(OMAX / 2^L): above it, wide * 2^L > OMAX
            lo = -((-OMIN) >>> RQ_LSH);        // ceil(OMIN / 2^L): below it, wide * 2^L < OMIN
            if (wide > hi) fl = OMAX;
            else if (wide < lo) fl = OMIN;
            else fl = wide <<< RQ_LSH;
        end else begin
            fl = wide >>> RQ_RSH;
            if (RQ_RSH > 0) begin
                rest = wide - (fl <<< RQ_RSH);
                if (rest > (64'sd1 <<< (RQ_RSH - 1)) || (rest == (64'sd1 <<< (RQ_RSH - 1)) && fl[0]))
                    fl = fl + 1;
            end
        end
        if (fl > OMAX) fl = OMAX;
        if (fl < OMIN) fl = OMIN;
        requant = fl;
    end
endfunction
