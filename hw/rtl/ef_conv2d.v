// ef_conv2d: streaming 2-D convolution with fused requantization (and ReLU / Clip), Verilog-2005.
//
// Input and output are pixel streams in raster order, one pixel (all channels, channel 0 in the
// low bits) per valid/ready transfer. A line buffer holds the last R >= KH+SH input rows; an
// engine computes each output pixel as (OC/PO) channel groups x KH*(KW/KP) window steps (KP
// horizontally adjacent positions each) x (C/CI) input channel chunks, one step per cycle, with
// PO*KP*CI multipliers. DW = 1 makes it depthwise: output channel o sees input channel o only,
// so a group's PO lanes take the group's own PO input channels (CI = 1, one chunk). Arithmetic
// is the integer model of edgefpga.hw.intmodel: exact products and sums in an ACCW-bit
// accumulator that starts at the (pre-aligned) bias, then a right shift by SHIFT rounding half
// to even and saturation to [OMIN, OMAX] (a fused ReLU or Clip). Zero padding: PT rows above,
// PL columns left; the output size OH x OWD (given) sets the padding below and right.
//
// Frames follow each other; the next frame's pixels are accepted once the engine has finished
// the previous frame's last output pixel.
//
// Written for small synthesis results (docs/rtl.md, Resources): no multiplication outside the
// multipliers themselves (window positions and ROM addresses are counters, the line buffer's
// address is {row mod R, column} with the row length padded to a power of two), synchronous
// reads of every memory (block or distributed RAM, not registers and multiplexers), narrow
// counters, and the output vector filled by shifting in one channel group at a time.
module ef_conv2d #(
    parameter H = 8, W = 8, C = 1, KH = 3, KW = 3, SH = 1, SW = 1, PT = 1, PL = 1,
    parameter OH = 8, OWD = 8,
    parameter OC = 8, CI = 1, PO = 8, KP = 1, DW = 0,
    parameter XW = 8, XSIGNED = 1,
    parameter USE_DSP = 1,                     // 0: multipliers as shift-and-add logic (LUTs), not DSP48s
    parameter WW = 8, ACCW = 32,
    parameter SHIFT = 8, OW = 8,
    parameter signed [63:0] OMIN = 0,
    parameter signed [63:0] OMAX = 255,
    parameter WFILE = "weights.mem", BFILE = "bias.mem"
) (
    input  wire                 clk,
    input  wire                 rst_n,
    input  wire                 in_valid,
    output wire                 in_ready,
    input  wire [C*XW-1:0]      in_data,
    output reg                  out_valid,
    input  wire                 out_ready,
    output wire [OC*OW-1:0]     out_data,
    output wire                 busy            // an engine step issued this cycle (cycle accounting)
);
    localparam RN = KH + SH;
    localparam R = (RN <= 2) ? 2 : (RN <= 4) ? 4 : (RN <= 8) ? 8 : (RN <= 16) ? 16 :
                   (RN <= 32) ? 32 : (RN <= 64) ? 64 : 128;   // rows kept (power of 2)
    localparam RB = $clog2(R);
    localparam WB = (W > 1) ? $clog2(W) : 1;  // column bits: a row occupies 2^WB entries
    localparam GROUPS = OC / PO;
    localparam CHUNKS = DW ? 1 : C / CI;
    localparam XL = DW ? PO : CI;              // input channels one step reads at each position
    localparam SELS = DW ? GROUPS : CHUNKS;    // which slice of the pixel a step reads
    localparam KSTEPS = KW / KP;
    localparam WDEPTH = GROUPS * KH * KSTEPS * CHUNKS;
    localparam GB = (GROUPS > 1) ? $clog2(GROUPS) : 1;
    localparam CB = (CHUNKS > 1) ? $clog2(CHUNKS) : 1;
    localparam SB = (SELS > 1) ? $clog2(SELS) : 1;
    localparam KB = $clog2((KH > KW ? KH : KW) + 1);
    localparam AB = (WDEPTH > 1) ? $clog2(WDEPTH) : 1;
    localparam NB = 16;                        // signed row / column positions (maps up to 16k)
    localparam signed [NB-1:0] LAST_COL0 = (OWD - 1) * SW - PL;
    localparam signed [NB-1:0] LAST_ROW0 = (OH - 1) * SH - PT;

    // ---- line buffer ---------------------------------------------------------------------
    reg [C*XW-1:0] lb [0:R*(1<<WB)-1];
    reg signed [NB-1:0] in_row, in_col;        // next input pixel of the current input frame
    reg signed [NB-1:0] row0, col0;            // window origin of the output pixel (oy*S-PAD, ox*S-PAD)
    reg        frame_done;                     // engine finished the frame; input may start the next

    // rows past the last window (the stride leaves them unused) are still read, so frames stay aligned
    wire input_free = (in_row < H) && (frame_done || (in_row - row0 < R));
    assign in_ready = input_free;

    always @(posedge clk) begin
        if (in_valid && in_ready)
            lb[{in_row[RB-1:0], in_col[WB-1:0]}] <= in_data;
    end

    // ---- engine: stage A issues a step (counters, synchronous ROM and line-buffer reads),
    // stage B multiplies, accumulates and, at a group's last step, requantizes ----------------
    reg [GB-1:0] group;
    reg [KB-1:0] ky, kx;
    reg [CB-1:0] chunk;
    reg [AB-1:0] waddr;                        // = ((group*KH + ky)*KSTEPS + kx/KP)*CHUNKS + chunk
    reg [PO*KP*CI*WW-1:0] wrom [0:WDEPTH-1];  // synthesis picks block RAM, LUT RAM or logic by size
    reg [PO*ACCW-1:0] brom [0:GROUPS-1];
    initial begin
        $readmemh(WFILE, wrom);
        $readmemh(BFILE, brom);
    end

    wire signed [NB-1:0] iy = row0 + $signed({1'b0, ky});
    wire signed [NB-1:0] ix = col0 + $signed({1'b0, kx});  // first of the KP positions
    // the window's last input pixel (clamped to the map) must have arrived
    wire signed [NB-1:0] need_row = (row0 + KH - 1 < H) ? row0 + KH - 1 : H - 1;
    wire signed [NB-1:0] need_col = (col0 + KW - 1 < W) ? col0 + KW - 1 : W - 1;
    wire arrived = (in_row >= H) || (in_row > need_row) || (in_row == need_row && in_col > need_col);
    wire a_last = (chunk == CHUNKS - 1) && (ky == KH - 1) && (kx == KW - KP);
    wire a_first = (chunk == 0) && (ky == 0) && (kx == 0);
    wire a_group_last = (group == GROUPS - 1);

    // stage B registers
    reg b_valid, b_first, b_last, b_pixel_end;
    reg [SB-1:0] b_sel;                        // the chunk (or, depthwise, the group) of stage B's step
    reg [PO*KP*CI*WW-1:0] b_w;
    reg [PO*ACCW-1:0] b_bias;
    wire stall = b_valid && b_pixel_end && out_valid && !out_ready;   // output register still full
    wire issue = !stall && !frame_done && arrived;
    assign busy = issue;

    always @(posedge clk) begin
        if (issue) begin
            b_w <= wrom[waddr];
            b_bias <= brom[group];
        end
    end

    // KP line-buffer reads per step; a position in the padding reads as zero (masked in stage B)
    wire [KP*XL*XW-1:0] x_step;                // the step's XL-channel slice at each position
    genvar gj;
    generate
        for (gj = 0; gj < KP; gj = gj + 1) begin : pos
            wire signed [NB-1:0] ixj = ix + gj;
            wire in_map = (iy >= 0) && (iy < H) && (ixj >= 0) && (ixj < W);
            reg [C*XW-1:0] rd;
            reg rd_inside;
            always @(posedge clk) begin
                if (issue) begin
                    rd <= lb[{iy[RB-1:0], ixj[WB-1:0]}];
                    rd_inside <= in_map;
                end
            end
            reg [XL*XW-1:0] part;
            integer c;
            always @* begin
                part = {XL*XW{1'b0}};
                for (c = 0; c < SELS; c = c + 1)
                    if (b_sel == c) part = rd[c * XL * XW +: XL * XW];
                if (!rd_inside) part = {XL*XW{1'b0}};
            end
            assign x_step[gj * XL * XW +: XL * XW] = part;
        end
    endgenerate

    // signed product as shift-and-add: synthesis maps it to LUTs and carry chains, never to a DSP
    function signed [XW+WW:0] lut_mul(input signed [XW:0] a, input signed [WW-1:0] b);
        integer bit_index;
        begin
            lut_mul = 0;
            for (bit_index = 0; bit_index < WW - 1; bit_index = bit_index + 1)
                if (b[bit_index]) lut_mul = lut_mul + (a <<< bit_index);
            if (b[WW-1]) lut_mul = lut_mul - (a <<< (WW - 1));
        end
    endfunction

    `include "ef_requant.vh"

    // products of stage B's step summed per output lane, the new accumulators and outputs
    reg [PO*ACCW-1:0] acc;
    reg [PO*ACCW-1:0] total;
    reg [PO*OW-1:0] q_group;                   // the group's requantized outputs
    reg signed [ACCW-1:0] sum;
    reg signed [XW:0] xv;
    reg signed [WW-1:0] wv;
    reg signed [63:0] q;
    integer p, j, i, xi;
    always @* begin
        for (p = 0; p < PO; p = p + 1) begin
            sum = b_first ? $signed(b_bias[p * ACCW +: ACCW]) : $signed(acc[p * ACCW +: ACCW]);
            for (j = 0; j < KP; j = j + 1) begin
                for (i = 0; i < CI; i = i + 1) begin
                    // depthwise: lane p reads channel p of the group's slice; else chunk channel i
                    xi = DW ? (j * XL + p) : (j * XL + i);
                    xv = XSIGNED ? $signed({x_step[xi * XW + XW - 1], x_step[xi * XW +: XW]})
                                 : $signed({1'b0, x_step[xi * XW +: XW]});
                    wv = $signed(b_w[((p * KP + j) * CI + i) * WW +: WW]);
                    sum = sum + (USE_DSP ? xv * wv : lut_mul(xv, wv));
                end
            end
            total[p * ACCW +: ACCW] = sum;
            q = requant(sum);
            q_group[p * OW +: OW] = q[OW-1:0];
        end
    end

    // the output vector: each finished group is shifted in from the top, so after the last
    // group the first one sits in the low bits
    reg [OC*OW-1:0] result, out_reg;
    wire [OC*OW-1:0] next_result;
    generate
        if (GROUPS > 1) begin : shift_in
            assign next_result = {q_group, result[OC*OW-1:PO*OW]};
        end else begin : whole
            assign next_result = q_group;
        end
    endgenerate

    always @(posedge clk) begin
        if (!rst_n) begin
            group <= 0; ky <= 0; kx <= 0; chunk <= 0; waddr <= 0; row0 <= -PT; col0 <= -PL;
            out_valid <= 1'b0; frame_done <= 1'b0; in_row <= 0; in_col <= 0; b_valid <= 1'b0;
        end else begin
            if (in_valid && in_ready) begin
                if (in_col == W - 1) begin in_col <= 0; in_row <= in_row + 1; end
                else in_col <= in_col + 1;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (frame_done && in_row >= H) begin   // every step issued, every pixel read: next frame
                frame_done <= 1'b0; in_row <= 0; in_col <= 0;
            end
            // stage B
            if (b_valid && !stall) begin
                acc <= total;
                if (b_last) result <= next_result;
                if (b_pixel_end) begin out_reg <= next_result; out_valid <= 1'b1; end
            end
            // stage A
            if (!stall) begin
                b_valid <= issue;
                b_first <= a_first; b_last <= a_last; b_pixel_end <= a_last && a_group_last;
                b_sel <= DW ? group : chunk;
            end
            if (issue) begin
                waddr <= (waddr == WDEPTH - 1) ? 0 : waddr + 1;
                if (a_last && a_group_last) begin
                    if (col0 == LAST_COL0) begin
                        col0 <= -PL;
                        if (row0 == LAST_ROW0) begin row0 <= -PT; frame_done <= 1'b1; end
                        else row0 <= row0 + SH;
                    end else col0 <= col0 + SW;
                end
                if (chunk == CHUNKS - 1) begin
                    chunk <= 0;
                    if (kx == KW - KP) begin
                        kx <= 0;
                        if (ky == KH - 1) begin
                            ky <= 0;
                            group <= a_group_last ? 0 : group + 1;
                        end else ky <= ky + 1;
                    end else kx <= kx + KP;
                end else chunk <= chunk + 1;
            end
        end
    end
    assign out_data = out_reg;
endmodule
