// ef_pool2d: streaming K x K pooling (stride S, no padding) over all C channels at once.
//
// MODE 0 (max): the window's largest value, same type out as in.
// MODE 1 (average): the window sum, widened by ALIGN fractional bits, divided by K*K with
// truncation toward zero (hls4ml's ap_fixed division), then rounded half to even by SHIFT bits
// and saturated to [OMIN, OMAX]. The division is a multiplication by DIV_M and a right shift by
// DIV_SH, exact for every sum the input type allows (the generator checks that); one divider
// serves the channels in turn (C cycles per output pixel) instead of C wide multipliers.
// One window position per cycle; pixel streams as in ef_conv2d.
module ef_pool2d #(
    parameter H = 4, W = 4, C = 1, K = 2, S = 2,
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
    output wire [C*OW-1:0]      out_data
);
    localparam OH = (H - K) / S + 1;
    localparam OWD = (W - K) / S + 1;
    localparam R = (K + S <= 2) ? 2 : (K + S <= 4) ? 4 : (K + S <= 8) ? 8 : (K + S <= 16) ? 16 :
                   (K + S <= 32) ? 32 : (K + S <= 64) ? 64 : 128;

    reg [C*XW-1:0] lb [0:R*W-1];
    reg [31:0] in_row, in_col, oy, ox, ky, kx;
    reg frame_done;

    wire [31:0] first_row = oy * S;
    wire input_free = (in_row < H) && (in_row - first_row < R);
    assign in_ready = input_free && !frame_done;
    always @(posedge clk) if (in_valid && in_ready) lb[(in_row % R) * W + in_col] <= in_data;

    wire [31:0] need_row = first_row + K - 1;
    wire [31:0] need_col = ox * S + K - 1;
    wire arrived = (in_row >= H) || (in_row > need_row) || (in_row == need_row && in_col > need_col);
    wire last_step = (ky == K - 1) && (kx == K - 1);
    reg dividing;                              // MODE 1: dividing the finished window's sums
    reg [31:0] dc;                             // channel being divided
    wire busy = !frame_done && !dividing && arrived && (MODE == 1 || !last_step || !out_valid || out_ready);
    wire [C*XW-1:0] pixel = lb[((first_row + ky) % R) * W + ox * S + kx];

    reg signed [SUMW-1:0] acc [0:C-1];
    reg signed [SUMW-1:0] nxt [0:C-1];
    reg [C*OW-1:0] result, out_reg, divided, divided_all;
    reg signed [XW:0] xv;
    reg signed [63:0] q, mag, quo;
    integer c;
    `include "ef_requant.vh"

    always @* begin
        result = out_reg;
        for (c = 0; c < C; c = c + 1) begin
            xv = XSIGNED ? $signed({pixel[c * XW + XW - 1], pixel[c * XW +: XW]}) : $signed({1'b0, pixel[c * XW +: XW]});
            if (ky == 0 && kx == 0) nxt[c] = xv;
            else if (MODE == 0) nxt[c] = (xv > acc[c]) ? xv : acc[c];
            else nxt[c] = acc[c] + xv;
            q = nxt[c];
            result[c * OW +: OW] = q[OW-1:0];
        end
        mag = acc[dc];
        if (mag < 0) mag = -mag;
        quo = ((mag <<< ALIGN) * DIV_M) >>> DIV_SH;             // floor(|sum| * 2^ALIGN / (K*K))
        if (acc[dc] < 0) quo = -quo;
        q = requant(quo);
        divided_all = divided;
        divided_all[dc * OW +: OW] = q[OW-1:0];
    end

    always @(posedge clk) begin
        if (!rst_n) begin
            in_row <= 0; in_col <= 0; oy <= 0; ox <= 0; ky <= 0; kx <= 0;
            out_valid <= 1'b0; frame_done <= 1'b0; dividing <= 1'b0; dc <= 0;
        end else begin
            if (in_valid && in_ready) begin
                if (in_col == W - 1) begin in_col <= 0; in_row <= in_row + 1; end
                else in_col <= in_col + 1;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (frame_done) begin frame_done <= 1'b0; in_row <= 0; in_col <= 0; end
            if (dividing) begin
                if (dc != C - 1) begin
                    divided <= divided_all;
                    dc <= dc + 1;
                end else if (!out_valid || out_ready) begin
                    out_reg <= divided_all;
                    out_valid <= 1'b1;
                    dividing <= 1'b0;
                end
            end
            if (busy) begin
                for (c = 0; c < C; c = c + 1) acc[c] <= nxt[c];
                if (last_step) begin
                    if (MODE == 0) begin
                        out_reg <= result;
                        out_valid <= 1'b1;
                    end else begin
                        dividing <= 1'b1;
                        dc <= 0;
                    end
                    ky <= 0; kx <= 0;
                    if (ox == OWD - 1) begin
                        ox <= 0;
                        if (oy == OH - 1) begin oy <= 0; frame_done <= 1'b1; end
                        else oy <= oy + 1;
                    end else ox <= ox + 1;
                end else if (kx == K - 1) begin kx <= 0; ky <= ky + 1; end
                else kx <= kx + 1;
            end
        end
    end
    assign out_data = out_reg;
endmodule
