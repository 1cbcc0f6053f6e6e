// ef_add: the join of a residual block. Two pixel streams of C channels (the branches, with
// their own fixed-point types) are added channel by channel, exactly: each is shifted left to
// the common fractional bits (ALIGN_A, ALIGN_B), then the sum is rounded half to even by SHIFT
// bits and saturated to [OMIN, OMAX] (a fused ReLU or Clip). One pixel per cycle when both
// branches have one.
module ef_add #(
    parameter C = 1,
    parameter AW_ = 8, ASIGNED = 1, ALIGN_A = 0,
    parameter BW_ = 8, BSIGNED = 1, ALIGN_B = 0,
    parameter SHIFT = 0, OW = 8,
    parameter signed [63:0] OMIN = -128,
    parameter signed [63:0] OMAX = 127
) (
    input  wire              clk,
    input  wire              rst_n,
    input  wire              a_valid,
    output wire              a_ready,
    input  wire [C*AW_-1:0]  a_data,
    input  wire              b_valid,
    output wire              b_ready,
    input  wire [C*BW_-1:0]  b_data,
    output reg               out_valid,
    input  wire              out_ready,
    output reg  [C*OW-1:0]   out_data,
    output wire              busy
);
    wire room = !out_valid || out_ready;
    wire fire = a_valid && b_valid && room;
    assign a_ready = b_valid && room;
    assign b_ready = a_valid && room;
    assign busy = fire;

    `include "ef_requant.vh"
    reg [C*OW-1:0] result;
    reg signed [AW_:0] av;
    reg signed [BW_:0] bv;
    reg signed [63:0] sum, q;
    integer c;
    always @* begin
        for (c = 0; c < C; c = c + 1) begin
            av = ASIGNED ? $signed({a_data[c * AW_ + AW_ - 1], a_data[c * AW_ +: AW_]}) : $signed({1'b0, a_data[c * AW_ +: AW_]});
            bv = BSIGNED ? $signed({b_data[c * BW_ + BW_ - 1], b_data[c * BW_ +: BW_]}) : $signed({1'b0, b_data[c * BW_ +: BW_]});
            sum = ($signed(av) <<< ALIGN_A) + ($signed(bv) <<< ALIGN_B);
            q = requant(sum);
            result[c * OW +: OW] = q[OW-1:0];
        end
    end

    always @(posedge clk) begin
        if (!rst_n) out_valid <= 1'b0;
        else if (room) begin
            out_valid <= fire;
            if (fire) out_data <= result;
        end
    end
endmodule
