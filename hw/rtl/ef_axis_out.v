// ef_axis_out: a vector of N scores (OW bits each, two's complement) to an AXI-Stream of N beats,
// score i in class order, sign-extended to TW bits. A frame is P such vectors (P = 1: a classifier's
// one vector; a detector's map: its cells, row-major): tlast on the last score of the last vector.
module ef_axis_out #(
    parameter N = 2, OW = 16, TW = 16, P = 1
) (
    input  wire            clk,
    input  wire            rst_n,
    input  wire            in_valid,
    output wire            in_ready,
    input  wire [N*OW-1:0] in_data,
    output wire [TW-1:0]   m_axis_tdata,
    output wire            m_axis_tvalid,
    input  wire            m_axis_tready,
    output wire            m_axis_tlast
);
    localparam IB = (N > 1) ? $clog2(N) : 1;
    localparam PB = (P > 1) ? $clog2(P) : 1;
    reg [N*OW-1:0] scores;                     // shifted down one score per beat: no index multiplexer
    reg [IB-1:0] index;
    reg [PB-1:0] pixel;                        // which vector of the frame is going out
    reg busy;
    assign in_ready = !busy;
    wire [OW-1:0] score = scores[OW-1:0];
    generate
        if (TW > OW) begin : extend
            assign m_axis_tdata = {{(TW-OW){score[OW-1]}}, score};
        end else begin : same
            assign m_axis_tdata = score;
        end
    endgenerate
    assign m_axis_tvalid = busy;
    assign m_axis_tlast = busy && (index == N - 1) && (pixel == P - 1);
    always @(posedge clk) begin
        if (!rst_n) begin
            busy <= 1'b0; index <= 0; pixel <= 0;
        end else if (!busy) begin
            if (in_valid) begin scores <= in_data; busy <= 1'b1; index <= 0; end
        end else if (m_axis_tready) begin
            if (index == N - 1) begin
                busy <= 1'b0;
                pixel <= (pixel == P - 1) ? 0 : pixel + 1;
            end else begin index <= index + 1; scores <= scores >> OW; end
        end
    end
endmodule
