// Included inside a layer module that has parameters SHIFT, OMIN and OMAX: the one cast every
// layer ends with, as in edgefpga.hw.intmodel.cast: round half to even by SHIFT bits, then
// saturate to [OMIN, OMAX].
function signed [63:0] requant(input signed [63:0] wide);
    reg signed [63:0] fl, rest;
    begin
        fl = wide >>> SHIFT;
        if (SHIFT > 0) begin
            rest = wide - (fl <<< SHIFT);
            if (rest > (64'sd1 <<< (SHIFT - 1)) || (rest == (64'sd1 <<< (SHIFT - 1)) && fl[0]))
                fl = fl + 1;
        end
        if (fl > OMAX) fl = OMAX;
        if (fl < OMIN) fl = OMIN;
        requant = fl;
    end
endfunction
