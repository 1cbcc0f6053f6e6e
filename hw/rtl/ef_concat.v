// ef_concat: the join of two branches by channel concatenation (a SqueezeNet fire module's two
// expands, an Inception block's). Two pixel streams (a: C_A channels, b: C_B channels, each
// with its own width and signedness) become one pixel of C_A + C_B channels of OW bits, a's
// channels first (in the low bits), as ONNX's Concat on axis 1 orders them. Each value is
// widened exactly to the common type: sign- or zero-extended, then shifted left to the common
// fractional bits (ALIGN_A, ALIGN_B); no rounding, no saturation (the generator picks OW so
// that both branches' values fit). Valid/ready like ef_add: one pixel per cycle when both
// branches have one.
module ef_concat #(
    parameter C_A = 1, AW_ = 8, ASIGNED = 1, ALIGN_A = 0,
    parameter C_B = 1, BW_ = 8, BSIGNED = 1, ALIGN_B = 0,
    parameter OW = 8
) (
    input  wire                    clk,
    input  wire                    rst_n,
    input  wire                    a_valid,
    output wire                    a_ready,
    input  wire [C_A*AW_-1:0]      a_data,
    input  wire                    b_valid,
    output wire                    b_ready,
    input  wire [C_B*BW_-1:0]      b_data,
    output reg                     out_valid,
    input  wire                    out_ready,
    output reg  [(C_A+C_B)*OW-1:0] out_data,
    output wire                    busy
);
    wire room = !out_valid || out_ready;
    wire fire = a_valid && b_valid && room;
    assign a_ready = b_valid && room;
    assign b_ready = a_valid && room;
    assign busy = fire;

    reg [(C_A+C_B)*OW-1:0] result;
    reg signed [AW_:0] av;
    reg signed [BW_:0] bv;
    reg signed [63:0] v;
    integer c;
    always @* begin
        for (c = 0; c < C_A; c = c + 1) begin
            av = ASIGNED ? $signed({a_data[c * AW_ + AW_ - 1], a_data[c * AW_ +: AW_]}) : $signed({1'b0, a_data[c * AW_ +: AW_]});
            v = av;  // sign-extended (av carries its own sign bit: zero for an unsigned branch)
            v = v <<< ALIGN_A;
            result[c * OW +: OW] = v[OW-1:0];
        end
        for (c = 0; c < C_B; c = c + 1) begin
            bv = BSIGNED ? $signed({b_data[c * BW_ + BW_ - 1], b_data[c * BW_ +: BW_]}) : $signed({1'b0, b_data[c * BW_ +: BW_]});
            v = bv;
            v = v <<< ALIGN_B;
            result[(C_A + c) * OW +: OW] = v[OW-1:0];
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
