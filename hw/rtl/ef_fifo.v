// ef_fifo: a first-in first-out buffer of DEPTH pixels (plus one in the output register) on the
// branch of a residual block that runs ahead; the generator sizes DEPTH from both branches'
// latency so the block never deadlocks under backpressure. Memory reads are synchronous
// (block or distributed RAM).
module ef_fifo #(
    parameter BITS = 8, DEPTH = 16
) (
    input  wire             clk,
    input  wire             rst_n,
    input  wire             in_valid,
    output wire             in_ready,
    input  wire [BITS-1:0]  in_data,
    output reg              out_valid,
    input  wire             out_ready,
    output reg  [BITS-1:0]  out_data,
    output wire             busy
);
    localparam AB = (DEPTH > 1) ? $clog2(DEPTH) : 1;
    reg [BITS-1:0] mem [0:DEPTH-1];
    reg [AB-1:0] wr, rd;
    reg [AB:0] count;
    assign in_ready = (count < DEPTH);
    wire push = in_valid && in_ready;
    wire pop = (count != 0) && (!out_valid || out_ready);
    assign busy = push;
    always @(posedge clk) begin
        if (push) mem[wr] <= in_data;
        if (pop) out_data <= mem[rd];
    end
    always @(posedge clk) begin
        if (!rst_n) begin
            wr <= 0; rd <= 0; count <= 0; out_valid <= 1'b0;
        end else begin
            if (push) wr <= (wr == DEPTH - 1) ? 0 : wr + 1;
            if (pop) rd <= (rd == DEPTH - 1) ? 0 : rd + 1;
            count <= count + push - pop;
            if (pop) out_valid <= 1'b1;
            else if (out_ready) out_valid <= 1'b0;
        end
    end
endmodule
