// ef_fork: one pixel stream to two consumers (the branches of a residual block). A pixel
// leaves when both branches have taken it; each branch may take it in a different cycle.
module ef_fork #(
    parameter BITS = 8
) (
    input  wire             clk,
    input  wire             rst_n,
    input  wire             in_valid,
    output wire             in_ready,
    input  wire [BITS-1:0]  in_data,
    output wire             a_valid,
    input  wire             a_ready,
    output wire [BITS-1:0]  a_data,
    output wire             b_valid,
    input  wire             b_ready,
    output wire [BITS-1:0]  b_data,
    output wire             busy
);
    reg a_done, b_done;                        // the branch took the current pixel already
    assign a_valid = in_valid && !a_done;
    assign b_valid = in_valid && !b_done;
    assign a_data = in_data;
    assign b_data = in_data;
    wire a_ok = a_done || a_ready;
    wire b_ok = b_done || b_ready;
    assign in_ready = a_ok && b_ok;
    assign busy = in_valid && in_ready;
    always @(posedge clk) begin
        if (!rst_n) begin
            a_done <= 1'b0; b_done <= 1'b0;
        end else if (in_valid) begin
            if (in_ready) begin a_done <= 1'b0; b_done <= 1'b0; end
            else begin
                if (a_ready) a_done <= 1'b1;
                if (b_ready) b_done <= 1'b1;
            end
        end
    end
endmodule
