// ef_conv2d: streaming 2-D convolution with fused requantization (and ReLU), Verilog-2005.
//
// Input and output are pixel streams in raster order, one pixel (all channels, channel 0 in the
// low bits) per valid/ready transfer. A line buffer holds the last K+S input rows; an engine
// computes each output pixel as (OC/PO) channel groups x K*K window positions x (C/CI) input
// channel chunks, one step per cycle, with PO*CI multipliers. Arithmetic is the integer model of
// edgefpga.hw.intmodel: exact products and sums in an ACCW-bit accumulator that starts at the
// (pre-aligned) bias, then a right shift by SHIFT rounding half to even and saturation to
// [OMIN, OMAX] (OMIN = 0 fuses a ReLU). Zero padding of PAD pixels surrounds the map.
//
// Frames follow each other; the next frame's pixels are accepted once the engine has finished
// the previous frame's last output pixel.
module ef_conv2d #(
    parameter H = 8, W = 8, C = 1, K = 3, S = 1, PAD = 1,
    parameter OC = 8, CI = 1, PO = 8,
    parameter XW = 8, XSIGNED = 1,
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
    localparam WDEPTH = GROUPS * K * K * CHUNKS;

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

    // ---- engine ----------------------------------------------------------------------------
    reg [31:0] group, ky, kx, chunk;
    reg signed [ACCW-1:0] acc [0:PO-1];
    reg [OC*OW-1:0] result, out_reg;
    reg [PO*CI*WW-1:0] wrom [0:WDEPTH-1];
    reg [PO*ACCW-1:0] brom [0:GROUPS-1];
    initial begin
        $readmemh(WFILE, wrom);
        $readmemh(BFILE, brom);
    end

    wire signed [31:0] iy = first_row + $signed(ky);
    wire signed [31:0] ix = $signed(ox * S) - PAD + $signed(kx);
    wire in_map = (iy >= 0) && (iy < H) && (ix >= 0) && (ix < W);
    // the window's last input pixel (clamped to the map) must have arrived
    wire signed [31:0] need_row = (first_row + K - 1 < H) ? first_row + K - 1 : H - 1;
    wire signed [31:0] need_col0 = $signed(ox * S) - PAD + K - 1;
    wire signed [31:0] need_col = (need_col0 < W) ? need_col0 : W - 1;
    wire arrived = (in_row >= H) || ($signed(in_row) > need_row) ||
                   ($signed(in_row) == need_row && $signed(in_col) > need_col);
    wire last_step = (chunk == CHUNKS - 1) && (ky == K - 1) && (kx == K - 1);
    wire pixel_end = last_step && (group == GROUPS - 1);
    wire busy = !frame_done && arrived && (!pixel_end || !out_valid || out_ready);

    wire [C*XW-1:0] pixel = in_map ? lb[(iy % R) * W + ix] : {C*XW{1'b0}};
    wire [PO*CI*WW-1:0] wword = wrom[((group * K + ky) * K + kx) * CHUNKS + chunk];

    // products of this step, summed per output lane
    reg signed [ACCW-1:0] step_sum [0:PO-1];
    integer p, i;
    reg signed [XW:0] xv;
    reg signed [WW-1:0] wv;
    always @* begin
        for (p = 0; p < PO; p = p + 1) begin
            step_sum[p] = 0;
            for (i = 0; i < CI; i = i + 1) begin
                xv = XSIGNED ? $signed({pixel[(chunk * CI + i) * XW + XW - 1], pixel[(chunk * CI + i) * XW +: XW]})
                             : $signed({1'b0, pixel[(chunk * CI + i) * XW +: XW]});
                wv = $signed(wword[(p * CI + i) * WW +: WW]);
                step_sum[p] = step_sum[p] + xv * wv;
            end
        end
    end

    // requantization: round half to even by SHIFT bits, saturate to [OMIN, OMAX]
    function signed [63:0] requant(input signed [ACCW-1:0] a);
        reg signed [63:0] wide, fl, rest;
        begin
            wide = a;
            fl = wide >>> SHIFT;
            if (SHIFT > 0) begin
                rest = wide - (fl <<< SHIFT);
                if (rest > (64'sd1 <<< (SHIFT - 1)) || (rest == (64'sd1 <<< (SHIFT - 1)) && fl[0]))
                    fl = fl + 1;
            end
            if (fl > OMAX) fl = OMAX;
            if (fl < OMIN) fl = OMIN;
            requant = fl;
        end
    endfunction

    // this step's accumulator values and, at a group's last step, its requantized outputs
    reg signed [ACCW-1:0] total [0:PO-1];
    reg signed [63:0] q;
    reg [OC*OW-1:0] next_result;
    always @* begin
        next_result = result;
        for (p = 0; p < PO; p = p + 1) begin
            total[p] = ((ky == 0 && kx == 0 && chunk == 0) ? $signed(brom[group][p * ACCW +: ACCW]) : acc[p])
                       + step_sum[p];
            q = requant(total[p]);
            if (last_step) next_result[(group * PO + p) * OW +: OW] = q[OW-1:0];
        end
    end

    always @(posedge clk) begin
        if (!rst_n) begin
            group <= 0; ky <= 0; kx <= 0; chunk <= 0; oy <= 0; ox <= 0;
            out_valid <= 1'b0; frame_done <= 1'b0; in_row <= 0; in_col <= 0;
        end else begin
            if (in_valid && in_ready) begin
                if (in_col == W - 1) begin in_col <= 0; in_row <= in_row + 1; end
                else in_col <= in_col + 1;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (frame_done) begin                  // every output computed: take the next frame
                frame_done <= 1'b0; in_row <= 0; in_col <= 0;
            end
            if (busy) begin
                for (p = 0; p < PO; p = p + 1) acc[p] <= total[p];
                result <= next_result;
                if (pixel_end) begin
                    out_reg <= next_result;
                    out_valid <= 1'b1;
                    if (ox == OWD - 1) begin
                        ox <= 0;
                        if (oy == OH - 1) begin oy <= 0; frame_done <= 1'b1; end
                        else oy <= oy + 1;
                    end else ox <= ox + 1;
                end
                if (chunk == CHUNKS - 1) begin
                    chunk <= 0;
                    if (kx == K - 1) begin
                        kx <= 0;
                        if (ky == K - 1) begin
                            ky <= 0;
                            group <= (group == GROUPS - 1) ? 0 : group + 1;
                        end else ky <= ky + 1;
                    end else kx <= kx + 1;
                end else chunk <= chunk + 1;
            end
        end
    end
    assign out_data = out_reg;
endmodule
