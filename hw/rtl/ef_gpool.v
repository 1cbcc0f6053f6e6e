// ef_gpool: global pooling over a whole H x W map of C channels (any map size), one
// accumulator per channel instead of a line buffer.
//
// Each input pixel is folded into a ring of C accumulators, CI channels per cycle (the ring
// rotates by CI), so a pixel takes C/CI cycles. MODE 0 (max): the largest value, same type out.
// MODE 1 (average): the sum, widened by ALIGN fractional bits, divided by H*W with truncation
// toward zero (a multiplication by DIV_M and a right shift by DIV_SH, exact for every sum the
// input type allows), rounded half to even by SHIFT bits and saturated to [OMIN, OMAX]; one
// divider serves the channels in turn. One output pixel per frame.
//
// Pipelined for the clock (docs/rtl.md, Timing): when the frame is complete its C sums are read
// from the bottom of the rotating ring, one a cycle as before, into four registered steps (the
// magnitude and sign of the sum; the product by DIV_M shifted right by DIV_SH; the sign restored;
// rounded with its saturation flags; the saturated value chosen as it enters the output vector),
// instead of one path from the ring through the divider to the output.
// The steps drain while the next frame's pixels are folded in; the last channel waits in the
// last step while the output register is full (out_valid, a register: out_ready reaches no
// counter). The arithmetic and the cycles per frame are unchanged; the output comes 4 cycles later.
module ef_gpool #(
    parameter H = 4, W = 4, C = 1, CI = 1,
    parameter MODE = 1,
    parameter XW = 8, XSIGNED = 0,
    parameter OW = 8,
    parameter ALIGN = 0, SHIFT = 0, SUMW = 32,
    parameter DIV_M = 1, DIV_SH = 0,
    parameter signed [63:0] OMIN = 0,
    parameter signed [63:0] OMAX = 255
) (
    input  wire                 clk,
    input  wire                 rst_n,
    input  wire                 in_valid,
    output wire                 in_ready,
    input  wire [C*XW-1:0]      in_data,
    output reg                  out_valid,
    input  wire                 out_ready,
    output wire [C*OW-1:0]      out_data,
    output wire                 busy
);
    localparam CHUNKS = C / CI;
    localparam AW = (MODE == 0) ? XW + 1 : SUMW;
    localparam NPIX = H * W;
    localparam PB = $clog2(NPIX + 1);
    localparam CB = (CHUNKS > 1) ? $clog2(CHUNKS) : 1;
    localparam DB = (C > 1) ? $clog2(C) : 1;

    reg [C*XW-1:0] x;                          // the pixel being folded in, rotated by CI per step
    reg have_x;
    reg [CB-1:0] chunk;
    reg [PB-1:0] pix;                          // pixels of the frame folded in so far
    reg [C*AW-1:0] acc;                        // ring: entry 0 is the chunk being folded
    reg reading;                               // frame complete: its sums go to the divider / output
    reg [DB-1:0] dc;
    assign in_ready = !have_x && !reading;
    wire step = have_x;
    assign busy = step;
    wire first = (pix == 0);

    // fold CI channels of the pixel into the bottom of the ring
    reg [CI*AW-1:0] folded;
    reg signed [XW:0] xv;
    reg signed [AW-1:0] a, n;
    integer i;
    always @* begin
        for (i = 0; i < CI; i = i + 1) begin
            xv = XSIGNED ? $signed({x[i * XW + XW - 1], x[i * XW +: XW]}) : $signed({1'b0, x[i * XW +: XW]});
            a = acc[i * AW +: AW];
            if (first) n = xv;
            else if (MODE == 0) n = (xv > a) ? xv : a;
            else n = a + xv;
            folded[i * AW +: AW] = n;
        end
    end

    // the output of channel 0 of the ring in four registered steps, one channel per cycle:
    // d1 the sum's magnitude and sign (max: the value), d2 the product by DIV_M shifted right by
    // DIV_SH (ef_average.vh's division; max: the value), d3 the sign restored, d4 rounded with
    // its saturation flags (requant_part; max: the value's low OW bits), then requant_pick
    localparam DMW = $clog2(DIV_M + 1);
    localparam QW = AW + ALIGN + DMW;
    `include "ef_requant.vh"
    // requant (ef_requant.vh) in two steps: requant_part gives the value's low OW bits once
    // rounded (or shifted left) and whether it saturates high or low, compared on the value before
    // the rounding's carry; requant_pick chooses OMAX, OMIN or the value: together, requant.
    function [OW+1:0] requant_part(input signed [63:0] wide);   // {high, low, value}
        reg signed [63:0] fl, rest, v;
        reg inc, hi, lo;
        begin
            if (RQ_LSH > 0) begin
                hi = wide > (OMAX >>> RQ_LSH);
                lo = wide < -((-OMIN) >>> RQ_LSH);
                v = wide <<< RQ_LSH;
            end else begin
                fl = wide >>> RQ_RSH;
                inc = 1'b0;
                if (RQ_RSH > 0) begin
                    rest = wide - (fl <<< RQ_RSH);
                    inc = (rest > (64'sd1 <<< (RQ_RSH - 1))) || (rest == (64'sd1 <<< (RQ_RSH - 1)) && fl[0]);
                end
                hi = inc ? (fl >= OMAX) : (fl > OMAX);
                lo = inc ? (fl < OMIN - 1) : (fl < OMIN);
                v = fl + inc;
            end
            requant_part = {hi, lo, v[OW-1:0]};
        end
    endfunction
    function [OW-1:0] requant_pick(input [OW+1:0] part);
        requant_pick = part[OW+1] ? OMAX[OW-1:0] : part[OW] ? OMIN[OW-1:0] : part[OW-1:0];
    endfunction
    reg d1_valid, d1_last, d1_neg, d2_valid, d2_last, d2_neg, d3_valid, d3_last, d4_valid, d4_last;
    reg [AW-1:0] d1_mag;
    reg [QW-1:0] prod, d2_quo;
    reg signed [QW:0] d3_s;
    reg [OW+1:0] d4_part;
    wire [OW-1:0] d4_q = requant_pick(d4_part);
    wire hold = d4_valid && d4_last && out_valid;   // the frame's last channel waits for the output register
    always @* begin
        prod = d1_mag;
        if (MODE == 1) prod = (prod << ALIGN) * DIV_M;
    end

    reg [C*OW-1:0] result, out_reg;           // divided outputs shift into result; out_reg is sent
    wire [C*AW-1:0] acc_fold, acc_one;
    wire [C*OW-1:0] result_next;
    wire [C*XW-1:0] x_rot;
    generate
        if (CHUNKS > 1) begin : ring
            assign acc_fold = {folded, acc[C*AW-1:CI*AW]};
            assign x_rot = {x[CI*XW-1:0], x[C*XW-1:CI*XW]};
        end else begin : whole
            assign acc_fold = folded;
            assign x_rot = x;
        end
        if (C > 1) begin : one
            assign acc_one = {acc[AW-1:0], acc[C*AW-1:AW]};
            assign result_next = {d4_q, result[C*OW-1:OW]};
        end else begin : single
            assign acc_one = acc;
            assign result_next = d4_q;
        end
    endgenerate

    always @(posedge clk) begin
        if (!rst_n) begin
            have_x <= 1'b0; chunk <= 0; pix <= 0; reading <= 1'b0; dc <= 0; out_valid <= 1'b0;
            d1_valid <= 1'b0; d2_valid <= 1'b0; d3_valid <= 1'b0; d4_valid <= 1'b0;
        end else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (in_valid && in_ready) begin x <= in_data; have_x <= 1'b1; end
            if (step) begin
                acc <= acc_fold;
                x <= x_rot;
                if (chunk == CHUNKS - 1) begin
                    chunk <= 0; have_x <= 1'b0;
                    if (pix == NPIX - 1) begin pix <= 0; reading <= 1'b1; dc <= 0; end
                    else pix <= pix + 1;
                end else chunk <= chunk + 1;
            end
            if (!hold) begin
                d1_valid <= reading; d1_last <= (dc == C - 1);
                d1_neg <= (MODE == 1) && $signed(acc[AW-1:0]) < 0;
                d1_mag <= (MODE == 1 && $signed(acc[AW-1:0]) < 0) ? -acc[AW-1:0] : acc[AW-1:0];
                d2_valid <= d1_valid; d2_last <= d1_last; d2_neg <= d1_neg;
                d2_quo <= (MODE == 1) ? prod >> DIV_SH : prod;   // floor(|sum| * 2^ALIGN / count)
                d3_valid <= d2_valid; d3_last <= d2_last;
                d3_s <= (MODE == 1 && d2_neg) ? -$signed({1'b0, d2_quo}) : $signed({1'b0, d2_quo});
                d4_valid <= d3_valid; d4_last <= d3_last;
                d4_part <= (MODE == 1) ? requant_part(d3_s) : {2'b00, d3_s[OW-1:0]};
                if (d4_valid) begin
                    if (d4_last) begin out_reg <= result_next; out_valid <= 1'b1; end
                    else result <= result_next;
                end
                if (reading) begin
                    acc <= acc_one;
                    dc <= dc + 1;
                    if (dc == C - 1) reading <= 1'b0;
                end
            end
        end
    end
    assign out_data = out_reg;
endmodule
