// ef_act: a per-channel activation that could not be fused into the layer before it, on C
// channels per pixel, one pixel per cycle. MODE 0: a ReLU or Clip: x kept within [CLO, CHI]
// (its bounds on the input's grid), shifted left by AF, rounded half to even by SHIFT bits and
// saturated to [OMIN, OMAX] (the output type). MODE 1: LeakyReLU: x << AF for x >= 0,
// x * ALPHA otherwise (ALPHA has AF fractional bits), then the same cast. The slope is a constant,
// so its products are shift-and-add logic, not DSP48s. MODE 2: HardSwish, as
// edgefpga.hw.intmodel.hardswish: x shifted left by XSH onto a grid of XF >= 0 fractional bits,
// times its gate clip(x + 3, 0, 6) on that grid (one product of two variables), times the
// constant ALPHA = 1/6 with AF fractional bits (shift-and-add), then the same cast.
module ef_act #(
    parameter C = 1, XW = 8, XSIGNED = 1, MODE = 0,
    parameter AF = 0, ALPHA = 0, AWID = 16,
    parameter XSH = 0, XF = 0,
    parameter SHIFT = 0, OW = 8,
    parameter signed [63:0] CLO = 0,
    parameter signed [63:0] CHI = 255,
    parameter signed [63:0] OMIN = 0,
    parameter signed [63:0] OMAX = 255
) (
    input  wire              clk,
    input  wire              rst_n,
    input  wire              in_valid,
    output wire              in_ready,
    input  wire [C*XW-1:0]   in_data,
    output reg               out_valid,
    input  wire              out_ready,
    output reg  [C*OW-1:0]   out_data,
    output wire              busy
);
    assign in_ready = !out_valid || out_ready;
    assign busy = in_valid && in_ready;
    localparam [AWID-1:0] A = ALPHA;

    // x times the constant slope as shift-and-add (synthesis keeps only the slope's one bits)
    function signed [XW+AWID:0] times_alpha(input signed [XW:0] v);
        integer b;
        begin
            times_alpha = 0;
            for (b = 0; b < AWID; b = b + 1)
                if (A[b]) times_alpha = times_alpha + (v <<< b);
        end
    endfunction

    // HardSwish: x on the gate's grid (XAW bits, signed), the gate 0 .. 6 << XF (GW bits, signed)
    localparam XAW = XW + 1 + XSH;
    localparam GW = XF + 4;
    localparam PW = XAW + GW;
    localparam GSW = (XAW > GW ? XAW : GW) + 1;  // x + 3 before its clip
    localparam signed [GW:0] THREE = 3 <<< XF;
    localparam signed [GW:0] SIX = 6 <<< XF;
    function signed [PW+AWID:0] times_sixth(input signed [PW-1:0] v);
        integer b;
        begin
            times_sixth = 0;
            for (b = 0; b < AWID; b = b + 1)
                if (A[b]) times_sixth = times_sixth + (v <<< b);
        end
    endfunction

    `include "ef_requant.vh"
    reg [C*OW-1:0] result;
    reg signed [XW:0] xv;
    reg signed [63:0] wide, q;
    reg signed [XAW-1:0] xa;
    reg signed [GSW-1:0] gs;
    reg signed [GW-1:0] gate;
    reg signed [PW-1:0] prod;
    integer c;
    always @* begin
        for (c = 0; c < C; c = c + 1) begin
            xv = XSIGNED ? $signed({in_data[c * XW + XW - 1], in_data[c * XW +: XW]}) : $signed({1'b0, in_data[c * XW +: XW]});
            wide = $signed(xv);
            if (MODE == 0) begin
                if (wide < CLO) wide = CLO;
                if (wide > CHI) wide = CHI;
                wide = wide <<< AF;
            end else if (MODE == 2) begin
                xa = $signed(xv) <<< XSH;
                gs = xa + THREE;
                if (gs < 0) gate = 0;
                else if (gs > SIX) gate = SIX[GW-1:0];
                else gate = gs[GW-1:0];
                prod = xa * gate;
                wide = times_sixth(prod);
            end else if (xv < 0) wide = times_alpha(xv);
            else wide = wide <<< AF;
            q = requant(wide);
            result[c * OW +: OW] = q[OW-1:0];
        end
    end

    always @(posedge clk) begin
        if (!rst_n) out_valid <= 1'b0;
        else if (in_ready) begin
            out_valid <= in_valid;
            if (in_valid) out_data <= result;
        end
    end
endmodule
