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
// One window position per cycle; pixel streams as in ef_conv2d, and with FRAME_OVERLAP the next
// frame's rows enter while the last windows of a frame are read, as there.
//
// Written for small synthesis results (docs/rtl.md, Resources): the line buffer is read
// synchronously (block or distributed RAM, not registers and a wide multiplexer) at address
// {row mod R, column}, window positions are counters, and the divider takes the channels from a
// rotating accumulator and shifts its results into the output vector (no channel multiplexers).
//
// Pipelined for the clock (docs/rtl.md, Timing): no path runs from one counter through the
// handshake to another, nor from a RAM read through the fold. in_ready is a register, computed a
// cycle ahead from this cycle's window row (which only grows within a frame, so it is never
// early); the last pixel each window needs is kept in registers (need_row, need_col) updated with
// the window origin, so "arrived" is one comparison of two registered positions; the stages stall
// on registered flags only (out_valid, not out_ready); the line-buffer word read is registered
// (stage R) and widened, with its padding replaced, into a second register before the fold
// (stage B); the divider of an average is four registered steps (magnitude, product and shift,
// sign, rounding with saturation flags) that drain while the next window accumulates. The
// arithmetic and the cycles per window are unchanged; an output comes 1 cycle later (an
// average's 5).
module ef_pool2d #(
    parameter H = 4, W = 4, C = 1, KH = 2, KW = 2, SH = 2, SW = 2, PT = 0, PL = 0, OH = 2, OWD = 2,
    parameter MODE = 0,
    parameter XW = 8, XSIGNED = 0,
    parameter OW = 8,
    parameter ALIGN = 0, SHIFT = 0, SUMW = 32,
    parameter DIV_M = 1, DIV_SH = 0,
    parameter FRAME_OVERLAP = 0,               // 1: the next frame's rows enter while a frame ends (ef_conv2d)
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
    localparam HB = $clog2(H + 1);              // an input row, 0..H
    localparam KB = $clog2((KH > KW ? KH : KW) + 1);
    localparam CB = (C > 1) ? $clog2(C) : 1;
    localparam AW = (MODE == 0) ? XW + 1 : SUMW;   // accumulator: a value (max) or a sum (average)
    // signed positions (rows, columns, window origins from -PT/-PL, their differences): as narrow as the map allows
    localparam MAXD = (H > W ? H : W) + (KH > KW ? KH : KW) + (SH > SW ? SH : SW) + (PT > PL ? PT : PL) + R;
    localparam NB = $clog2(2 * MAXD + 1) + 1;
    localparam signed [NB-1:0] LAST_COL0 = (OWD - 1) * SW - PL;
    localparam signed [NB-1:0] LAST_ROW0 = (OH - 1) * SH - PT;
    // the last input pixel the first window of a row / frame needs, inside the map
    localparam NEED_ROW0 = (KH - 1 - PT < 0) ? 0 : (KH - 1 - PT > H - 1) ? H - 1 : KH - 1 - PT;
    localparam NEED_COL0 = (KW - 1 - PL < 0) ? 0 : (KW - 1 - PL > W - 1) ? W - 1 : KW - 1 - PL;

    // frame overlap as in ef_conv2d: frame f+1's row r enters where r + H < row0 + R
    localparam OVL = FRAME_OVERLAP && ((OH - 1) * SH <= H);
    localparam SLOTS = OVL && (H % R != 0);
    reg [C*XW-1:0] lb [0:R*(1<<WB)-1];
    reg ahead;                                 // OVL: the input is in the frame after the windows'
    reg [RB-1:0] in_slot, fbase, row0_slot;    // SLOTS: rows counted in slots across frames, mod R
    reg signed [NB-1:0] in_row, in_col, row0, col0;   // next input pixel; window origin (oy*SH-PT, ox*SW-PL)
    reg [HB-1:0] need_row;                     // the window's last needed pixel, clamped into the map
    reg [WB-1:0] need_col;
    reg [KB-1:0] ky, kx;
    reg frame_done;
    reg in_ok;                                 // in_ready, registered

    // rows past the last window (the stride leaves them unused) are still read, so frames stay aligned
    assign in_ready = in_ok;
    wire accept = in_valid && in_ok;
    wire [RB-1:0] wr_row = SLOTS ? in_slot : in_row[RB-1:0];
    always @(posedge clk) if (accept) lb[{wr_row, in_col[WB-1:0]}] <= in_data;
    wire wrap = (in_row >= H) && (OVL ? !ahead : frame_done);   // the input starts its next frame
    wire restart = wrap && frame_done;
    // next cycle's in_ready from this cycle's row0 and frame_done: row0 only grows within a frame
    // and wraps to -PT only as frame_done rises, so the row it frees is never taken early. Both
    // outcomes (this cycle ends the input row or not) from registers, then one multiplexer. The
    // row is free (in_row - row0 < R) as one comparison with a register moved with row0, as in
    // ef_conv2d (OVL, ahead: in_row + H - row0 < R, the next frame's row)
    reg signed [NB-1:0] row_end, row_end1, row_endh, row_endh1;   // row0 + R, + R - 1, + R - H, + R - 1 - H
    wire ahead_ovl = OVL && ahead;
    wire free_same = ahead_ovl ? (in_row < row_endh) : (in_row < row_end);
    wire free_next = ahead_ovl ? (in_row < row_endh1) : (in_row < row_end1);
    wire ok_same = (in_row < H) && (frame_done || free_same);
    wire ok_next_row = (in_row < H - 1) && (frame_done || free_next);
    wire in_ok_next = restart ? (PT < R) : wrap ? (row_endh > 0) : (accept && in_col == W - 1) ? ok_next_row : ok_same;

    // while the input is ahead, every pixel of the windows' frame is in: `ahead` is the top bit of
    // the input's position (one bit more of the same comparison)
    wire arrived = {ahead_ovl, in_row[HB-1:0], in_col[WB-1:0]} > {1'b0, need_row, need_col};
    wire a_last = (ky == KH - 1) && (kx == KW - 1);
    wire a_first = (ky == 0) && (kx == 0);
    wire signed [NB-1:0] ry = row0 + $signed({1'b0, ky});
    wire signed [NB-1:0] rx = col0 + $signed({1'b0, kx});
    wire [RB-1:0] slot_y = row0_slot + ky;     // SLOTS: the window row's slot
    wire [RB-1:0] rd_row = SLOTS ? slot_y : ry[RB-1:0];
    // need_row / need_col of the next window origin (col0 + SW, row0 + SH), clamped into the map
    wire signed [NB-1:0] next_col = col0 + SW + KW - 1;
    wire signed [NB-1:0] next_row = row0 + SH + KH - 1;
    wire [WB-1:0] need_col_next = (next_col < 0) ? 0 : (next_col > W - 1) ? W - 1 : next_col[WB-1:0];
    wire [HB-1:0] need_row_next = (next_row < 0) ? 0 : (next_row > H - 1) ? H - 1 : next_row[HB-1:0];

    // stage A issues a window position (synchronous line-buffer read), stage R holds the word read,
    // stage B folds it in (its values already widened, padding already replaced)
    reg r_valid, r_first, r_last, r_inside, b_valid, b_first, b_last;
    reg [C*XW-1:0] r_pix;
    reg [C*(XW+1)-1:0] b_x;
    reg reading;                               // MODE 1: the finished window's sums go to the divider
    reg [CB-1:0] dc;                           // channel being read
    wire stall = b_valid && ((MODE == 1) ? reading : (b_last && out_valid));
    wire issue = !stall && !frame_done && arrived;
    assign busy = issue;
    wire frame_end = issue && a_last && (col0 == LAST_COL0) && (row0 == LAST_ROW0);   // the frame's last position
    wire in_map = (ry >= 0) && (ry < H) && (rx >= 0) && (rx < W);   // not padding
    reg [C*(XW+1)-1:0] r_x;
    reg signed [XW:0] pv, xv;
    integer c, k;
    always @* begin
        for (k = 0; k < C; k = k + 1) begin
            pv = XSIGNED ? $signed({r_pix[k * XW + XW - 1], r_pix[k * XW +: XW]}) : $signed({1'b0, r_pix[k * XW +: XW]});
            // padding: a max pool skips it (the first position of a window may be padding, so
            // the running maximum starts at the smallest value); an average adds zero
            if (!r_inside) pv = (MODE == 0) ? -(1 <<< XW) : 0;
            r_x[k * (XW + 1) +: XW + 1] = pv;
        end
    end
    always @(posedge clk) if (!stall) begin
        r_pix <= lb[{rd_row, rx[WB-1:0]}];
        r_inside <= in_map;
        b_x <= r_x;
    end

    reg [C*AW-1:0] acc, nxt;
    reg [C*OW-1:0] result, out_reg, divided;
    reg signed [AW-1:0] a, n;
    localparam DMW = $clog2(DIV_M + 1);
    reg signed [63:0] q;
    `include "ef_requant.vh"

    always @* begin
        for (c = 0; c < C; c = c + 1) begin
            xv = $signed(b_x[c * (XW + 1) +: XW + 1]);
            a = acc[c * AW +: AW];
            if (b_first) n = xv;
            else if (MODE == 0) n = (xv > a) ? xv : a;
            else n = a + xv;
            nxt[c * AW +: AW] = n;
            q = n;
            result[c * OW +: OW] = q[OW-1:0];
        end
    end

    // MODE 1 divider (ef_average.vh's division, then requant), one channel per cycle in four
    // registered steps: d1 the magnitude and sign of the sum read from the bottom of the
    // rotating accumulator, d2 the product by DIV_M shifted right by DIV_SH, d3 the sign restored,
    // d4 rounded with its saturation flags (requant_part), then requant_pick. The window's last
    // channel waits in d4 (the steps hold) while the output register is full.
    localparam QW = AW + ALIGN + DMW;
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
    wire hold = (MODE == 1) && d4_valid && d4_last && out_valid;
    always @* begin
        prod = d1_mag;
        prod = (prod << ALIGN) * DIV_M;
    end

    // rotation of the accumulators and shift of the divided outputs, one channel per cycle
    wire [C*AW-1:0] acc_rot;
    wire [C*OW-1:0] divided_next;
    generate
        if (C > 1) begin : rotate
            assign acc_rot = {acc[AW-1:0], acc[C*AW-1:AW]};
            assign divided_next = {d4_q, divided[C*OW-1:OW]};
        end else begin : single
            assign acc_rot = acc;
            assign divided_next = d4_q;
        end
    endgenerate

    always @(posedge clk) begin
        if (!rst_n) begin
            in_row <= 0; in_col <= 0; row0 <= -PT; col0 <= -PL; ky <= 0; kx <= 0;
            need_row <= NEED_ROW0; need_col <= NEED_COL0; in_ok <= 1'b1;
            ahead <= 1'b0; in_slot <= 0; fbase <= 0; row0_slot <= -PT;
            row_end <= R - PT; row_end1 <= R - 1 - PT; row_endh <= R - PT - H; row_endh1 <= R - 1 - PT - H;
            out_valid <= 1'b0; frame_done <= 1'b0; reading <= 1'b0; dc <= 0; r_valid <= 1'b0; b_valid <= 1'b0;
            d1_valid <= 1'b0; d2_valid <= 1'b0; d3_valid <= 1'b0; d4_valid <= 1'b0;
        end else begin
            in_ok <= in_ok_next;
            if (accept) begin
                if (in_col == W - 1) begin in_col <= 0; in_row <= in_row + 1; end
                else in_col <= in_col + 1;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (wrap) begin frame_done <= 1'b0; in_row <= 0; in_col <= 0; end
            if (SLOTS && accept && in_col == W - 1) in_slot <= in_slot + 1;   // never reset: slots run on
            if (OVL) ahead <= frame_end ? 1'b0 : (wrap && !frame_done) ? 1'b1 : ahead;
            if (MODE == 1 && !hold) begin
                d1_valid <= reading; d1_last <= (dc == C - 1);
                d1_neg <= $signed(acc[AW-1:0]) < 0;
                d1_mag <= ($signed(acc[AW-1:0]) < 0) ? -acc[AW-1:0] : acc[AW-1:0];
                d2_valid <= d1_valid; d2_last <= d1_last; d2_neg <= d1_neg;
                d2_quo <= prod >> DIV_SH;      // floor(|sum| * 2^ALIGN / count)
                d3_valid <= d2_valid; d3_last <= d2_last;
                d3_s <= d2_neg ? -$signed({1'b0, d2_quo}) : $signed({1'b0, d2_quo});
                d4_valid <= d3_valid; d4_last <= d3_last;
                d4_part <= requant_part(d3_s);
                if (d4_valid) begin
                    if (d4_last) begin out_reg <= divided_next; out_valid <= 1'b1; end
                    else divided <= divided_next;
                end
                if (reading) begin
                    acc <= acc_rot;
                    dc <= dc + 1;
                    if (dc == C - 1) reading <= 1'b0;
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
                        reading <= 1'b1;
                        dc <= 0;
                    end
                end
            end
            // stages A and R
            if (!stall) begin
                r_valid <= issue; r_first <= a_first; r_last <= a_last;
                b_valid <= r_valid; b_first <= r_first; b_last <= r_last;
            end
            if (issue) begin
                if (a_last) begin
                    ky <= 0; kx <= 0;
                    if (col0 == LAST_COL0) begin
                        col0 <= -PL; need_col <= NEED_COL0;
                        if (row0 == LAST_ROW0) begin
                            row0 <= -PT; need_row <= NEED_ROW0;
                            frame_done <= !(OVL && (ahead || wrap));   // OVL: on at once where the input is ahead
                            fbase <= fbase + H; row0_slot <= fbase + H - PT;
                            row_end <= R - PT; row_end1 <= R - 1 - PT; row_endh <= R - PT - H; row_endh1 <= R - 1 - PT - H;
                        end else begin
                            row0 <= row0 + SH; need_row <= need_row_next; row0_slot <= row0_slot + SH;
                            row_end <= row_end + SH; row_end1 <= row_end1 + SH;
                            row_endh <= row_endh + SH; row_endh1 <= row_endh1 + SH;
                        end
                    end else begin col0 <= col0 + SW; need_col <= need_col_next; end
                end else if (kx == KW - 1) begin kx <= 0; ky <= ky + 1; end
                else kx <= kx + 1;
            end
        end
    end
    assign out_data = out_reg;
endmodule
