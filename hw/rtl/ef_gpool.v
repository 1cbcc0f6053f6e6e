// ef_gpool: global pooling over a whole H x W map of C channels (any map size), one
// accumulator per channel instead of a line buffer.
//
// Each input pixel is folded into a ring of C accumulators, CI channels per cycle (the ring
// rotates by CI), so a pixel takes C/CI cycles. MODE 0 (max): the largest value, same type out.
// MODE 1 (average): the sum, widened by ALIGN fractional bits, divided by H*W with truncation
// toward zero (a multiplication by DIV_M and a right shift by DIV_SH, exact for every sum the
// input type allows), rounded half to even by SHIFT bits and saturated to [OMIN, OMAX]; one
// divider serves the channels in turn. One output pixel per frame.
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
    reg finishing;                             // frame complete: divide / send
    reg [DB-1:0] dc;
    assign in_ready = !have_x && !finishing;
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

    // divider / output of channel 0 of the ring
    localparam DMW = $clog2(DIV_M + 1);
    reg signed [63:0] q;
    `include "ef_requant.vh"
    `include "ef_average.vh"
    always @* begin
        if (MODE == 0) begin
            q = $signed(acc[AW-1:0]);
        end else begin
            q = requant(average(acc[AW-1:0]));
        end
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
            assign result_next = {q[OW-1:0], result[C*OW-1:OW]};
        end else begin : single
            assign acc_one = acc;
            assign result_next = q[OW-1:0];
        end
    endgenerate

    always @(posedge clk) begin
        if (!rst_n) begin
            have_x <= 1'b0; chunk <= 0; pix <= 0; finishing <= 1'b0; dc <= 0; out_valid <= 1'b0;
        end else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (in_valid && in_ready) begin x <= in_data; have_x <= 1'b1; end
            if (step) begin
                acc <= acc_fold;
                x <= x_rot;
                if (chunk == CHUNKS - 1) begin
                    chunk <= 0; have_x <= 1'b0;
                    if (pix == NPIX - 1) begin pix <= 0; finishing <= 1'b1; dc <= 0; end
                    else pix <= pix + 1;
                end else chunk <= chunk + 1;
            end
            if (finishing) begin
                if (dc != C - 1) begin
                    result <= result_next; acc <= acc_one; dc <= dc + 1;
                end else if (!out_valid || out_ready) begin
                    out_reg <= result_next; acc <= acc_one;
                    out_valid <= 1'b1; finishing <= 1'b0;
                end
            end
        end
    end
    assign out_data = out_reg;
endmodule
