// ef_resize: nearest-neighbour upsampling by integer factors (ONNX Resize, mode nearest, as
// PyTorch's nn.Upsample exports it). Input: a map of rows of W pixels (C channels of XW bits),
// raster order; output: each pixel sent KW times, each row sent KH times, so an H x W frame
// becomes (H*KH) x (W*KW). A copy: the output type is the input's.
//
// The first pass of a row sends the pixels as they arrive and writes them into a row buffer of
// W words; the other KH - 1 passes read them back (one synchronous read per pixel: block or
// distributed RAM, whichever Yosys's memory mapping prefers for W x C*XW bits; no buffer when
// KH is 1). One output pixel per cycle (busy), H*W*KH*KW cycles per frame; the next pixel is
// loaded in the cycle the current one is sent for the last time, so a new pixel costs no bubble.
// The module works row by row and needs no frame counter: frames follow back to back.
// Backpressure: out_ready low holds the output register, the current pixel and the input.
module ef_resize #(
    parameter W = 4, C = 1, XW = 8,
    parameter KH = 2, KW = 2
) (
    input  wire                 clk,
    input  wire                 rst_n,
    input  wire                 in_valid,
    output wire                 in_ready,
    input  wire [C*XW-1:0]      in_data,
    output reg                  out_valid,
    input  wire                 out_ready,
    output reg  [C*XW-1:0]      out_data,
    output wire                 busy
);
    localparam WB = (W > 1) ? $clog2(W) : 1;
    localparam XB = (KW > 1) ? $clog2(KW) : 1;
    localparam YB = (KH > 1) ? $clog2(KH) : 1;

    // the next pixel to load: its column (written in the first pass, read in the others: two
    // counters, so the row buffer has a write port and a separate read port) and its pass of the row
    reg [WB-1:0] wr_col, rd_col;
    reg [YB-1:0] ld_pass;
    reg [XB-1:0] rep;                          // times the current pixel has been sent
    reg cur_valid, cur_lb;                     // a current pixel; it is the row buffer's read word
    reg [C*XW-1:0] cur_in;                     // the current pixel as it came in (first pass)
    wire [C*XW-1:0] lb_q;                      // the row buffer's read word (later passes)
    wire [C*XW-1:0] cur = cur_lb ? lb_q : cur_in;

    wire send = cur_valid && (!out_valid || out_ready);
    wire done = send && (rep == KW - 1);       // the current pixel's last copy leaves
    wire free = !cur_valid || done;
    wire first = (ld_pass == 0);
    assign in_ready = first && free;
    wire accept = in_valid && in_ready;
    wire replay = !first && free;              // load the next pixel from the row buffer
    wire load = accept || replay;
    assign busy = send;

    generate
        if (KH > 1) begin : buffer
            reg [C*XW-1:0] lb [0:W-1];
            reg [C*XW-1:0] q;
            always @(posedge clk) begin
                if (accept) lb[wr_col] <= in_data;
                if (replay) q <= lb[rd_col];
            end
            assign lb_q = q;
        end else begin : no_buffer
            assign lb_q = {C*XW{1'b0}};
        end
    endgenerate

    always @(posedge clk) begin
        if (accept) cur_in <= in_data;
        if (send) out_data <= cur;
    end

    always @(posedge clk) begin
        if (!rst_n) begin
            wr_col <= 0; rd_col <= 0; ld_pass <= 0; rep <= 0; cur_valid <= 1'b0; cur_lb <= 1'b0; out_valid <= 1'b0;
        end else begin
            if (send) out_valid <= 1'b1;
            else if (out_ready) out_valid <= 1'b0;
            if (send) rep <= done ? 0 : rep + 1;
            if (accept) wr_col <= (wr_col == W - 1) ? 0 : wr_col + 1;
            if (replay) rd_col <= (rd_col == W - 1) ? 0 : rd_col + 1;
            if (load) begin
                cur_valid <= 1'b1;
                cur_lb <= !first;
                if ((first ? wr_col : rd_col) == W - 1) ld_pass <= (ld_pass == KH - 1) ? 0 : ld_pass + 1;
            end else if (done) cur_valid <= 1'b0;
        end
    end
endmodule
