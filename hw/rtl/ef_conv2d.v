// ef_conv2d: streaming 2-D convolution with fused requantization (and ReLU), Verilog-2005.
//
// Input and output are pixel streams in raster order, one pixel (all channels, channel 0 in the
// low bits) per valid/ready transfer. A line buffer holds the last K+S input rows; an engine
// computes each output pixel as (OC/PO) channel groups x K*(K/KP) window steps (KP horizontally
// adjacent positions each) x (C/CI) input channel chunks, one step per cycle, with PO*KP*CI
// multipliers. Arithmetic is the integer model of
// edgefpga.hw.intmodel: exact products and sums in an ACCW-bit accumulator that starts at the
// (pre-aligned) bias, then a right shift by SHIFT rounding half to even and saturation to
// [OMIN, OMAX] (OMIN = 0 fuses a ReLU). Zero padding of PAD pixels surrounds the map.
//
// Frames follow each other; the next frame's pixels are accepted once the engine has finished
// the previous frame's last output pixel.
module ef_conv2d #(
    parameter H = 8, W = 8, C = 1, K = 3, S = 1, PAD = 1,
    parameter OC = 8, CI = 1, PO = 8, KP = 1,
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
    output wire [OC*OW-1:0]     out_data
);
    localparam OH = (H + 2 * PAD - K) / S + 1;
    localparam OWD = (W + 2 * PAD - K) / S + 1;
    localparam R = (K + S <= 2) ? 2 : (K + S <= 4) ? 4 : (K + S <= 8) ? 8 : 16;  // rows kept (power of 2)
    localparam GROUPS = OC / PO;
    localparam CHUNKS = C / CI;
    localparam KSTEPS = K / KP;
    localparam WDEPTH = GROUPS * K * KSTEPS * CHUNKS;

    // ---- line buffer ---------------------------------------------------------------------
    reg [C*XW-1:0] lb [0:R*W-1];
    reg [31:0] in_row, in_col;                 // next input pixel of the current input frame
    reg [31:0] oy, ox;                         // output pixel the engine computes
    reg        frame_done;                     // engine finished the frame; input may start the next

    wire signed [31:0] first_row = $signed(oy * S) - PAD;   // first input row the engine still needs
    wire input_free = (in_row < H) && ($signed(in_row) - first_row < R);
    assign in_ready = input_free && !frame_done;

    always @(posedge clk) begin
        if (in_valid && in_ready)
            lb[(in_row % R) * W + in_col] <= in_data;
    end

    // ---- engine: stage A issues a step (counters, synchronous ROM and line-buffer reads),
    // stage B multiplies, accumulates and, at a group's last step, requantizes ----------------
    reg [31:0] group, ky, kx, chunk;
    (* rom_style = "block", ram_style = "block" *) reg [PO*KP*CI*WW-1:0] wrom [0:WDEPTH-1];
    reg [PO*ACCW-1:0] brom [0:GROUPS-1];
    initial begin
        $readmemh(WFILE, wrom);
        $readmemh(BFILE, brom);
    end

    wire signed [31:0] iy = first_row + $signed(ky);
    wire signed [31:0] ix = $signed(ox * S) - PAD + $signed(kx);   // first of the KP positions
    // the window's last input pixel (clamped to the map) must have arrived
    wire signed [31:0] need_row = (first_row + K - 1 < H) ? first_row + K - 1 : H - 1;
    wire signed [31:0] need_col0 = $signed(ox * S) - PAD + K - 1;
    wire signed [31:0] need_col = (need_col0 < W) ? need_col0 : W - 1;
    wire arrived = (in_row >= H) || ($signed(in_row) > need_row) ||
                   ($signed(in_row) == need_row && $signed(in_col) > need_col);
    wire a_last = (chunk == CHUNKS - 1) && (ky == K - 1) && (kx == K - KP);
    wire a_first = (chunk == 0) && (ky == 0) && (kx == 0);

    // stage B registers
    reg b_valid, b_first, b_last, b_pixel_end;
    reg [31:0] b_group, b_chunk;
    reg [PO*KP*CI*WW-1:0] b_w;
    reg [C*XW-1:0] b_pixels [0:KP-1];
    wire stall = b_valid && b_pixel_end && out_valid && !out_ready;   // output register still full
    wire issue = !stall && !frame_done && arrived;

    integer j;
    always @(posedge clk) begin
        if (!stall) begin
            b_w <= wrom[((group * K + ky) * KSTEPS + kx / KP) * CHUNKS + chunk];
            for (j = 0; j < KP; j = j + 1)
                b_pixels[j] <= (iy >= 0 && iy < H && ix + j >= 0 && ix + j < W) ? lb[(iy % R) * W + ix + j]
                                                                                 : {C*XW{1'b0}};
        end
    end

    reg signed [ACCW-1:0] acc [0:PO-1];
    reg [OC*OW-1:0] result, out_reg;

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

    // products of stage B's step, summed per output lane
    reg signed [ACCW-1:0] step_sum [0:PO-1];
    integer p, i;
    reg signed [XW:0] xv;
    reg signed [WW-1:0] wv;
    always @* begin
        for (p = 0; p < PO; p = p + 1) begin
            step_sum[p] = 0;
            for (j = 0; j < KP; j = j + 1) begin
                for (i = 0; i < CI; i = i + 1) begin
                    xv = XSIGNED ? $signed({b_pixels[j][(b_chunk * CI + i) * XW + XW - 1], b_pixels[j][(b_chunk * CI + i) * XW +: XW]})
                                 : $signed({1'b0, b_pixels[j][(b_chunk * CI + i) * XW +: XW]});
                    wv = $signed(b_w[((p * KP + j) * CI + i) * WW +: WW]);
                    step_sum[p] = step_sum[p] + (USE_DSP ? xv * wv : lut_mul(xv, wv));
                end
            end
        end
    end

    `include "ef_requant.vh"

    reg signed [ACCW-1:0] total [0:PO-1];
    reg signed [63:0] q;
    reg [OC*OW-1:0] next_result;
    always @* begin
        next_result = result;
        for (p = 0; p < PO; p = p + 1) begin
            total[p] = (b_first ? $signed(brom[b_group][p * ACCW +: ACCW]) : acc[p]) + step_sum[p];
            q = requant(total[p]);
            if (b_last) next_result[(b_group * PO + p) * OW +: OW] = q[OW-1:0];
        end
    end

    always @(posedge clk) begin
        if (!rst_n) begin
            group <= 0; ky <= 0; kx <= 0; chunk <= 0; oy <= 0; ox <= 0;
            out_valid <= 1'b0; frame_done <= 1'b0; in_row <= 0; in_col <= 0; b_valid <= 1'b0;
        end else begin
            if (in_valid && in_ready) begin
                if (in_col == W - 1) begin in_col <= 0; in_row <= in_row + 1; end
                else in_col <= in_col + 1;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (frame_done) begin                  // every step issued: take the next frame
                frame_done <= 1'b0; in_row <= 0; in_col <= 0;
            end
            // stage B
            if (b_valid && !stall) begin
                for (p = 0; p < PO; p = p + 1) acc[p] <= total[p];
                result <= next_result;
                if (b_pixel_end) begin out_reg <= next_result; out_valid <= 1'b1; end
            end
            // stage A
            if (!stall) begin
                b_valid <= issue;
                b_first <= a_first; b_last <= a_last; b_pixel_end <= a_last && (group == GROUPS - 1);
                b_group <= group; b_chunk <= chunk;
            end
            if (issue) begin
                if (a_last && group == GROUPS - 1) begin
                    if (ox == OWD - 1) begin
                        ox <= 0;
                        if (oy == OH - 1) begin oy <= 0; frame_done <= 1'b1; end
                        else oy <= oy + 1;
                    end else ox <= ox + 1;
                end
                if (chunk == CHUNKS - 1) begin
                    chunk <= 0;
                    if (kx == K - KP) begin
                        kx <= 0;
                        if (ky == K - 1) begin
                            ky <= 0;
                            group <= (group == GROUPS - 1) ? 0 : group + 1;
                        end else ky <= ky + 1;
                    end else kx <= kx + KP;
                end else chunk <= chunk + 1;
            end
        end
    end
    assign out_data = out_reg;
endmodule
