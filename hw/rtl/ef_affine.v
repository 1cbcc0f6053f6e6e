// ef_affine: per-channel y = x * scale + bias, rounded half to even by SHIFT bits and saturated
// to [OMIN, OMAX]: the input normalization (a BatchNormalization of the canonical graph) on raw
// pixels. AFILE holds one word per channel: {bias (ACCW bits, pre-aligned), scale (SW bits)}.
// One register stage, full throughput.
module ef_affine #(
    parameter C = 1, XW = 8, XSIGNED = 0, SW = 16, SSIGNED = 0, ACCW = 32,
    parameter SHIFT = 0, OW = 8,
    parameter signed [63:0] OMIN = -128,
    parameter signed [63:0] OMAX = 127,
    parameter AFILE = "affine.mem"
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
    reg [ACCW+SW-1:0] arom [0:C-1];
    initial $readmemh(AFILE, arom);
    assign in_ready = !out_valid || out_ready;
    assign busy = in_valid && in_ready;

    reg [C*OW-1:0] result;
    reg signed [XW:0] xv;
    reg signed [SW:0] sv;
    reg signed [63:0] acc, q;
    integer c;
    `include "ef_requant.vh"
    always @* begin
        for (c = 0; c < C; c = c + 1) begin
            xv = XSIGNED ? $signed({in_data[c * XW + XW - 1], in_data[c * XW +: XW]}) : $signed({1'b0, in_data[c * XW +: XW]});
            sv = SSIGNED ? $signed({arom[c][SW-1], arom[c][SW-1:0]}) : $signed({1'b0, arom[c][SW-1:0]});
            acc = xv * sv + $signed(arom[c][SW +: ACCW]);
            q = requant(acc);
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
