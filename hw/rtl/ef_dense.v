// ef_dense: fully connected layer over a frame of NPIX pixels of C channels each (the flattened
// map, in stream order), OC outputs. Each pixel is latched, then (OC/PO) groups x (C/CI) chunks
// of steps with PO*CI multipliers accumulate into OC exact accumulators that start at the
// (pre-aligned) biases; after the frame's last pixel every output is rounded half to even by
// SHIFT bits, saturated to [OMIN, OMAX] and sent as one vector.
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
    output reg  [OC*OW-1:0]  out_data
);
    localparam GROUPS = OC / PO;
    localparam CHUNKS = C / CI;
    reg [PO*CI*WW-1:0] wrom [0:NPIX*GROUPS*CHUNKS-1];
    reg [ACCW-1:0] brom [0:OC-1];
    initial begin
        $readmemh(WFILE, wrom);
        $readmemh(BFILE, brom);
    end

    reg [C*XW-1:0] x;
    reg have_x;
    reg [31:0] pix, group, chunk;
    reg signed [ACCW-1:0] acc [0:OC-1];
    wire last_chunk_step = (group == GROUPS - 1) && (chunk == CHUNKS - 1);
    wire frame_end = have_x && last_chunk_step && (pix == NPIX - 1);
    wire busy = have_x && (!frame_end || !out_valid || out_ready);
    assign in_ready = !have_x;

    wire [PO*CI*WW-1:0] wword = wrom[(pix * GROUPS + group) * CHUNKS + chunk];
    reg signed [ACCW-1:0] total [0:PO-1];
    reg signed [XW:0] xv;
    reg signed [WW-1:0] wv;
    reg signed [63:0] q;
    reg [OC*OW-1:0] result;
    integer p, i, o;
    `include "ef_requant.vh"
    always @* begin
        for (p = 0; p < PO; p = p + 1) begin
            total[p] = (pix == 0 && chunk == 0) ? $signed(brom[group * PO + p]) : acc[group * PO + p];
            for (i = 0; i < CI; i = i + 1) begin
                xv = XSIGNED ? $signed({x[(chunk * CI + i) * XW + XW - 1], x[(chunk * CI + i) * XW +: XW]})
                             : $signed({1'b0, x[(chunk * CI + i) * XW +: XW]});
                wv = $signed(wword[(p * CI + i) * WW +: WW]);
                total[p] = total[p] + xv * wv;
            end
        end
        for (o = 0; o < OC; o = o + 1) begin
            q = requant((o / PO == group) ? total[o % PO] : acc[o]);
            result[o * OW +: OW] = q[OW-1:0];
        end
    end

    always @(posedge clk) begin
        if (!rst_n) begin
            have_x <= 1'b0; pix <= 0; group <= 0; chunk <= 0; out_valid <= 1'b0;
        end else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (in_valid && in_ready) begin x <= in_data; have_x <= 1'b1; end
            if (busy) begin
                for (p = 0; p < PO; p = p + 1) acc[group * PO + p] <= total[p];
                if (frame_end) begin out_data <= result; out_valid <= 1'b1; end
                if (chunk == CHUNKS - 1) begin
                    chunk <= 0;
                    if (group == GROUPS - 1) begin
                        group <= 0; have_x <= 1'b0;
                        pix <= (pix == NPIX - 1) ? 0 : pix + 1;
                    end else group <= group + 1;
                end else chunk <= chunk + 1;
            end
        end
    end
endmodule
