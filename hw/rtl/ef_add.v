// ef_add: the join of a residual block. Two pixel streams of C channels (the branches, with
// their own fixed-point types) are added channel by channel, exactly: each is shifted left to
// the common fractional bits (ALIGN_A, ALIGN_B), then the sum is rounded half to even by SHIFT
// bits and saturated to [OMIN, OMAX] (a fused ReLU or Clip). CP channels a cycle: with CP = C
// one pixel per cycle when both branches have one; with CP < C one pixel every C/CP cycles: the
// pixel is taken at once into registers (its senders go on with the next; left in the senders'
// output registers, a conv engine waited for every pixel's whole addition, and a 10,368-cycle
// design ran at 12,673), CP channels a cycle picked into the lane's registers, summed into
// registers, cast, and shifted into the output word. A join a few pixels a frame need
// not add every channel at once: ResNet-8's three joins cost 3,364 LUTs at CP = C, about a third at
// CP = 1 (hw/layers/add.py ``channels_per_step`` picks CP from the interval).
module ef_add #(
    parameter C = 1,
    parameter CP = C,
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
    `include "ef_requant.vh"
    generate if (CP >= C) begin : whole
        wire room = !out_valid || out_ready;
        wire fire = a_valid && b_valid && room;
        assign a_ready = b_valid && room;
        assign b_ready = a_valid && room;
        assign busy = fire;

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
    end else begin : serial
        localparam S = C / CP;  // steps per pixel
        localparam SW = (S > 1) ? $clog2(S) : 1;
        localparam SUMW = ((AW_ + ALIGN_A > BW_ + ALIGN_B) ? AW_ + ALIGN_A : BW_ + ALIGN_B) + 2;  // sign and carry
        wire room = !out_valid || out_ready;
        reg full;                              // a pixel is held, its groups going through the lane
        reg [SW-1:0] k;                        // the held pixel's group the pickers select
        reg [C*AW_-1:0] a_held;
        reg [C*BW_-1:0] b_held;
        reg sel_valid, sel_last;               // the lane's operand registers hold a group (the pixel's last)
        reg [CP*AW_-1:0] a_sel;
        reg [CP*BW_-1:0] b_sel;
        reg sum_valid, sum_last;               // the sums' registers hold a group
        reg [CP*SUMW-1:0] sum_r;
        reg [(C-CP)*OW-1:0] gathered;          // the pixel's results so far, the first group lowest
        wire finishing = sum_valid && sum_last;
        wire advance = !finishing || room;     // the last group waits for the output register
        wire take = full && advance;           // the picked group goes into the lane's registers
        wire last = (k == S - 1);
        wire free = !full || (take && last);   // the held pixel's last group leaves this cycle
        wire capture = a_valid && b_valid && free;
        assign a_ready = b_valid && free;      // taken at once: the senders go on while it is added
        assign b_ready = a_valid && free;
        assign busy = capture || take;

        wire [CP*AW_-1:0] a_pick = a_held[k * (CP * AW_) +: CP * AW_];
        wire [CP*BW_-1:0] b_pick = b_held[k * (CP * BW_) +: CP * BW_];
        // three registered steps a group (pick, sum, cast): in one, the sum and the rounding cast
        // of ResNet-8's second join placed at 86.4 MHz on the ECP5
        reg [CP*SUMW-1:0] sums;
        reg [CP*OW-1:0] lane;
        wire [C*OW-1:0] shifted = {lane, gathered} >> (CP * OW);
        reg signed [AW_:0] av;
        reg signed [BW_:0] bv;
        reg signed [63:0] sum, q;
        integer c;
        always @* begin
            for (c = 0; c < CP; c = c + 1) begin
                av = ASIGNED ? $signed({a_sel[c * AW_ + AW_ - 1], a_sel[c * AW_ +: AW_]}) : $signed({1'b0, a_sel[c * AW_ +: AW_]});
                bv = BSIGNED ? $signed({b_sel[c * BW_ + BW_ - 1], b_sel[c * BW_ +: BW_]}) : $signed({1'b0, b_sel[c * BW_ +: BW_]});
                sum = ($signed(av) <<< ALIGN_A) + ($signed(bv) <<< ALIGN_B);
                sums[c * SUMW +: SUMW] = sum[SUMW-1:0];
                q = requant($signed(sum_r[c * SUMW +: SUMW]));
                lane[c * OW +: OW] = q[OW-1:0];
            end
        end

        always @(posedge clk) begin
            if (capture) begin
                a_held <= a_data; b_held <= b_data;
            end
            if (!rst_n) begin
                full <= 1'b0; k <= 0; sel_valid <= 1'b0; sum_valid <= 1'b0; out_valid <= 1'b0;
            end else begin
                if (capture) begin
                    full <= 1'b1; k <= 0;
                end else if (take) begin
                    full <= !last; k <= last ? 0 : k + 1;
                end
                if (advance) begin
                    sel_valid <= take;
                    if (take) begin
                        a_sel <= a_pick; b_sel <= b_pick; sel_last <= last;
                    end
                    sum_valid <= sel_valid;
                    if (sel_valid) begin
                        sum_r <= sums; sum_last <= sel_last;
                    end
                    if (sum_valid && !sum_last) gathered <= shifted[(C-CP)*OW-1:0];
                end
                if (room) begin
                    out_valid <= finishing;
                    if (finishing) out_data <= {lane, gathered};
                end
            end
        end
    end endgenerate
endmodule
