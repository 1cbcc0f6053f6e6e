// ef_pool2d: streaming KH x KW pooling (strides SH, SW; windows may overlap) over all C channels
// at once, with PT rows of padding above and PL columns left (the output size OH x OWD sets the
// padding below and right).
//
// MODE 0 (max): the window's largest value over the pixels inside the map (padding never wins,
// as ONNX defines it), same type out as in.
// MODE 1 (average): the window sum (padding counts as zeros), widened by ALIGN fractional bits,
// divided by KH*KW with truncation toward zero (hls4ml's ap_fixed division), then rounded half
// to even by SHIFT bits and saturated to [OMIN, OMAX]. The division is a multiplication by DIV_M and a right shift by
// DIV_SH, exact for every sum the input type allows (the generator checks that); one divider
// serves the channels in turn (C cycles per output pixel) instead of C wide multipliers.
// One window position per cycle; pixel streams as in ef_conv2d.
//
// Written for small synthesis results (docs/rtl.md, Resources): the line buffer is read
// synchronously (block or distributed RAM, not registers and a wide multiplexer) at address
// {row mod R, column}, window positions are counters, and the divider takes the channels from a
// rotating accumulator and shifts its results into the output vector (no channel multiplexers).
module ef_pool2d #(
    parameter H = 4, W = 4, C = 1, KH = 2, KW = 2, SH = 2, SW = 2, PT = 0, PL = 0, OH = 2, OWD = 2,
    parameter MODE = 0,
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
    localparam RN = KH + SH;
    localparam R = (RN <= 2) ? 2 : (RN <= 4) ? 4 : (RN <= 8) ? 8 : (RN <= 16) ? 16 :
                   (RN <= 32) ? 32 : (RN <= 64) ? 64 : 128;
    localparam RB = $clog2(R);
    localparam WB = (W > 1) ? $clog2(W) : 1;
    localparam KB = $clog2((KH > KW ? KH : KW) + 1);
    localparam CB = (C > 1) ? $clog2(C) : 1;
    localparam AW = (MODE == 0) ? XW + 1 : SUMW;   // accumulator: a value (max) or a sum (average)
    localparam NB = 16;
    localparam signed [NB-1:0] LAST_COL0 = (OWD - 1) * SW - PL;
    localparam signed [NB-1:0] LAST_ROW0 = (OH - 1) * SH - PT;

    reg [C*XW-1:0] lb [0:R*(1<<WB)-1];
    reg signed [NB-1:0] in_row, in_col, row0, col0;   // next input pixel; window origin (oy*SH-PT, ox*SW-PL)
    reg [KB-1:0] ky, kx;
    reg frame_done;

    // rows past the last window (the stride leaves them unused) are still read, so frames stay aligned
    wire input_free = (in_row < H) && (frame_done || (in_row - row0 < R));
    assign in_ready = input_free;
    always @(posedge clk) if (in_valid && in_ready) lb[{in_row[RB-1:0], in_col[WB-1:0]}] <= in_data;

    wire signed [NB-1:0] need_row = (row0 + KH - 1 < H) ? row0 + KH - 1 : H - 1;
    wire signed [NB-1:0] need_col = (col0 + KW - 1 < W) ? col0 + KW - 1 : W - 1;
    wire arrived = (in_row >= H) || (in_row > need_row) || (in_row == need_row && in_col > need_col);
    wire a_last = (ky == KH - 1) && (kx == KW - 1);
    wire a_first = (ky == 0) && (kx == 0);
    wire signed [NB-1:0] ry = row0 + $signed({1'b0, ky});
    wire signed [NB-1:0] rx = col0 + $signed({1'b0, kx});

    // stage A issues a window position (synchronous line-buffer read), stage B folds it in
    reg b_valid, b_first, b_last, b_inside;
    reg [C*XW-1:0] b_pix;
    reg dividing;                              // MODE 1: dividing the finished window's sums
    wire div_busy = (MODE == 1) && dividing;
    reg [CB-1:0] dc;                           // channel being divided
    wire stall = b_valid && (div_busy || (MODE == 0 && b_last && out_valid && !out_ready));
    wire issue = !stall && !frame_done && arrived;
    assign busy = issue;
    wire in_map = (ry >= 0) && (ry < H) && (rx >= 0) && (rx < W);   // not padding
    always @(posedge clk) if (issue) begin
        b_pix <= lb[{ry[RB-1:0], rx[WB-1:0]}];
        b_inside <= in_map;
    end

    reg [C*AW-1:0] acc, nxt;
    reg [C*OW-1:0] result, out_reg, divided;
    reg signed [XW:0] xv;
    reg signed [AW-1:0] a, n;
    localparam DMW = $clog2(DIV_M + 1);
    reg signed [63:0] q;
    integer c;
    `include "ef_requant.vh"
    `include "ef_average.vh"

    always @* begin
        for (c = 0; c < C; c = c + 1) begin
            xv = XSIGNED ? $signed({b_pix[c * XW + XW - 1], b_pix[c * XW +: XW]}) : $signed({1'b0, b_pix[c * XW +: XW]});
            a = acc[c * AW +: AW];
            // padding: a max pool skips it (the first position of a window may be padding, so
            // the running maximum starts at the smallest value); an average adds zero
            if (!b_inside) xv = (MODE == 0) ? -(1 <<< XW) : 0;
            if (b_first) n = xv;
            else if (MODE == 0) n = (xv > a) ? xv : a;
            else n = a + xv;
            nxt[c * AW +: AW] = n;
            q = n;
            result[c * OW +: OW] = q[OW-1:0];
        end
        // the divider reads channel dc from the bottom; operands as narrow as the sum allows
        q = requant(average(acc[AW-1:0]));
    end

    // rotation of the accumulators and shift of the divided outputs, one channel per cycle
    wire [C*AW-1:0] acc_rot;
    wire [C*OW-1:0] divided_next;
    generate
        if (C > 1) begin : rotate
            assign acc_rot = {acc[AW-1:0], acc[C*AW-1:AW]};
            assign divided_next = {q[OW-1:0], divided[C*OW-1:OW]};
        end else begin : single
            assign acc_rot = acc;
            assign divided_next = q[OW-1:0];
        end
    endgenerate

    always @(posedge clk) begin
        if (!rst_n) begin
            in_row <= 0; in_col <= 0; row0 <= -PT; col0 <= -PL; ky <= 0; kx <= 0;
            out_valid <= 1'b0; frame_done <= 1'b0; dividing <= 1'b0; dc <= 0; b_valid <= 1'b0;
        end else begin
            if (in_valid && in_ready) begin
                if (in_col == W - 1) begin in_col <= 0; in_row <= in_row + 1; end
                else in_col <= in_col + 1;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (frame_done && in_row >= H) begin frame_done <= 1'b0; in_row <= 0; in_col <= 0; end
            if (div_busy) begin
                if (dc != C - 1) begin
                    divided <= divided_next;
                    acc <= acc_rot;
                    dc <= dc + 1;
                end else if (!out_valid || out_ready) begin
                    out_reg <= divided_next;
                    out_valid <= 1'b1;
                    dividing <= 1'b0;
                end
            end
            // stage B
            if (b_valid && !stall) begin
                acc <= nxt;
                if (b_last) begin
                    if (MODE == 0) begin
                        out_reg <= result;
                        out_valid <= 1'b1;
                    end else begin
                        dividing <= 1'b1;
                        dc <= 0;
                    end
                end
            end
            // stage A
            if (!stall) begin
                b_valid <= issue; b_first <= a_first; b_last <= a_last;
            end
            if (issue) begin
                if (a_last) begin
                    ky <= 0; kx <= 0;
                    if (col0 == LAST_COL0) begin
                        col0 <= -PL;
                        if (row0 == LAST_ROW0) begin row0 <= -PT; frame_done <= 1'b1; end
                        else row0 <= row0 + SH;
                    end else col0 <= col0 + SW;
                end else if (kx == KW - 1) begin kx <= 0; ky <= ky + 1; end
                else kx <= kx + 1;
            end
        end
    end
    assign out_data = out_reg;
endmodule
