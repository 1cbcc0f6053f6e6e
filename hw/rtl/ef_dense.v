// ef_dense: fully connected layer over a frame of NPIX pixels of C channels each (the flattened
// map, in stream order), OC outputs. Each pixel is latched, then (OC/PO) groups x (C/CI) chunks
// of steps with PO*CI multipliers accumulate into OC exact accumulators that start at the
// (pre-aligned) biases; after the frame's last pixel every output is rounded half to even by
// SHIFT bits, saturated to [OMIN, OMAX] and sent as one vector.
//
// Written for small synthesis results (docs/rtl.md, Resources): stage A reads the weight and
// bias ROMs synchronously at counter addresses (block RAM, not a multiplexer over the whole
// ROM) and rotates the latched pixel by one chunk per step; stage B accumulates into a ring of
// channel groups that rotates by one group per finished group (no indexed accumulators).
// BFILE holds one word per group: PO biases of ACCW bits, the group's first output low.
module ef_dense #(
    parameter NPIX = 1, C = 8, OC = 2, CI = 8, PO = 1,
    parameter XW = 8, XSIGNED = 0, WW = 8, ACCW = 32,
    parameter SHIFT = 0, OW = 16,
    parameter signed [63:0] OMIN = -32768,
    parameter signed [63:0] OMAX = 32767,
    parameter WFILE = "dense_w.mem", BFILE = "dense_b.mem"
) (
    input  wire              clk,
    input  wire              rst_n,
    input  wire              in_valid,
    output wire              in_ready,
    input  wire [C*XW-1:0]   in_data,
    output reg               out_valid,
    input  wire              out_ready,
    output reg  [OC*OW-1:0]  out_data,
    output wire              busy
);
    localparam GROUPS = OC / PO;
    localparam CHUNKS = C / CI;
    localparam WDEPTH = NPIX * GROUPS * CHUNKS;
    localparam GB = (GROUPS > 1) ? $clog2(GROUPS) : 1;
    localparam CB = (CHUNKS > 1) ? $clog2(CHUNKS) : 1;
    localparam PB = (NPIX > 1) ? $clog2(NPIX) : 1;
    localparam AB = (WDEPTH > 1) ? $clog2(WDEPTH) : 1;
    reg [PO*CI*WW-1:0] wrom [0:WDEPTH-1];
    reg [PO*ACCW-1:0] brom [0:GROUPS-1];
    initial begin
        $readmemh(WFILE, wrom);
        $readmemh(BFILE, brom);
    end

    // ---- stage A: one step (group, chunk) of the latched pixel per cycle ---------------------
    reg [C*XW-1:0] x;                          // the pixel, rotated down by CI channels per step
    reg have_x;
    reg [PB-1:0] pix;
    reg [GB-1:0] group;
    reg [CB-1:0] chunk;
    reg [AB-1:0] waddr;                        // = (pix*GROUPS + group)*CHUNKS + chunk
    wire a_group_end = (chunk == CHUNKS - 1);
    wire a_pixel_end = a_group_end && (group == GROUPS - 1);
    wire a_frame_end = a_pixel_end && (pix == NPIX - 1);

    reg b_valid, b_first, b_group_end, b_frame_end;
    reg finishing;                             // the frame's sums are complete: requantize and send
    wire stall = b_valid && finishing;
    wire issue = have_x && !stall;
    assign busy = issue;
    assign in_ready = !have_x;

    reg [CI*XW-1:0] b_x;
    reg [PO*CI*WW-1:0] b_w;
    reg [PO*ACCW-1:0] b_bias;
    always @(posedge clk) begin
        if (issue) begin
            b_w <= wrom[waddr];
            b_bias <= brom[group];
            b_x <= x[CI*XW-1:0];
        end
    end
    wire [C*XW-1:0] x_rot;
    generate
        if (CHUNKS > 1) begin : rotate
            assign x_rot = {x[CI*XW-1:0], x[C*XW-1:CI*XW]};
        end else begin : whole
            assign x_rot = x;
        end
    endgenerate

    // ---- stage B: accumulate into the ring; entry 0 is the group being computed --------------
    reg [OC*ACCW-1:0] ring;
    reg [PO*ACCW-1:0] total;
    reg signed [ACCW-1:0] sum;
    reg signed [XW:0] xv;
    reg signed [WW-1:0] wv;
    reg signed [63:0] q;
    reg [OC*OW-1:0] result;
    integer p, i, o;
    `include "ef_requant.vh"
    always @* begin
        for (p = 0; p < PO; p = p + 1) begin
            sum = b_first ? $signed(b_bias[p * ACCW +: ACCW]) : $signed(ring[p * ACCW +: ACCW]);
            for (i = 0; i < CI; i = i + 1) begin
                xv = XSIGNED ? $signed({b_x[i * XW + XW - 1], b_x[i * XW +: XW]}) : $signed({1'b0, b_x[i * XW +: XW]});
                wv = $signed(b_w[(p * CI + i) * WW +: WW]);
                sum = sum + xv * wv;
            end
            total[p * ACCW +: ACCW] = sum;
        end
        for (o = 0; o < OC; o = o + 1) begin
            q = requant($signed(ring[o * ACCW +: ACCW]));
            result[o * OW +: OW] = q[OW-1:0];
        end
    end
    wire [OC*ACCW-1:0] ring_next;
    generate
        if (GROUPS > 1) begin : ring_rotate
            assign ring_next = {total, ring[OC*ACCW-1:PO*ACCW]};
        end else begin : ring_one
            assign ring_next = total;
        end
    endgenerate

    always @(posedge clk) begin
        if (!rst_n) begin
            have_x <= 1'b0; pix <= 0; group <= 0; chunk <= 0; waddr <= 0; out_valid <= 1'b0;
            b_valid <= 1'b0; finishing <= 1'b0;
        end else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (finishing && (!out_valid || out_ready)) begin
                out_data <= result; out_valid <= 1'b1; finishing <= 1'b0;
            end
            // stage B
            if (b_valid && !stall) begin
                if (b_group_end) ring <= ring_next;
                else ring[PO*ACCW-1:0] <= total;
                if (b_frame_end) finishing <= 1'b1;
            end
            // stage A
            if (!stall) begin
                b_valid <= issue;
                b_first <= (pix == 0) && (chunk == 0);
                b_group_end <= a_group_end; b_frame_end <= a_frame_end;
            end
            if (in_valid && in_ready) begin x <= in_data; have_x <= 1'b1; end
            if (issue) begin
                waddr <= (waddr == WDEPTH - 1) ? 0 : waddr + 1;
                x <= x_rot;
                if (a_group_end) begin
                    chunk <= 0;
                    if (a_pixel_end) begin
                        group <= 0; have_x <= 1'b0;
                        pix <= (pix == NPIX - 1) ? 0 : pix + 1;
                    end else group <= group + 1;
                end else chunk <= chunk + 1;
            end
        end
    end
endmodule
