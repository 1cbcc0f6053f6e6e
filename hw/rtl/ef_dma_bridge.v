// ef_dma_bridge: the accelerator core between the 32-bit AXI-Streams of a Xilinx AXI DMA.
//
// MM2S side: four 8-bit pixels per 32-bit word, little-endian (byte 0 in tdata[7:0]); every frame
// starts on a word boundary, so the pad bytes after a frame's last pixel are dropped. One DMA
// transfer may carry a whole batch of frames: the bridge ends each frame for the core after
// FRAME pixels (tlast), or earlier where the DMA's tlast comes first (a short frame, which the
// core completes with zeros).
// S2MM side: one score per 32-bit word, sign-extended. tlast goes only on the last score of the
// frame that ended the DMA transfer, so that one S2MM transfer receives the whole batch: a small
// FIFO remembers, per frame in flight, whether its input ended the transfer.
module ef_dma_bridge #(
    parameter FRAME      = 16,  // pixels (beats of the core's input) per frame
    parameter SCORE_BITS = 16,  // width of the core's output tdata
    parameter FLAGS_LOG2 = 4    // up to 2**FLAGS_LOG2 frames in flight inside the core
) (
    input  wire                  clk,
    input  wire                  rst_n,
    input  wire [31:0]           s_axis_tdata,
    input  wire                  s_axis_tvalid,
    output wire                  s_axis_tready,
    input  wire                  s_axis_tlast,
    output wire [7:0]            px_tdata,
    output wire                  px_tvalid,
    input  wire                  px_tready,
    output wire                  px_tlast,
    input  wire [SCORE_BITS-1:0] sc_tdata,
    input  wire                  sc_tvalid,
    output wire                  sc_tready,
    input  wire                  sc_tlast,
    output wire [31:0]           m_axis_tdata,
    output wire                  m_axis_tvalid,
    input  wire                  m_axis_tready,
    output wire                  m_axis_tlast
);
    localparam PW = FRAME > 1 ? $clog2(FRAME) : 1;
    localparam DEPTH = 1 << FLAGS_LOG2;

    reg [31:0] word;
    reg [2:0]  left;       // bytes of `word` still to send to the core
    reg        word_last;  // `word` carried the DMA's tlast
    reg [PW-1:0] pixel;    // index of the next pixel in its frame

    reg             flags [0:DEPTH-1];
    reg [FLAGS_LOG2:0] count;
    reg [FLAGS_LOG2-1:0] head, tail;
    wire flags_full = count == DEPTH;

    wire px_fire = px_tvalid && px_tready;
    wire frame_end = px_tlast;
    wire word_done = px_fire && (left == 3'd1 || frame_end);
    wire sc_fire = sc_tvalid && sc_tready;
    wire push = px_fire && frame_end;
    wire pop = sc_fire && sc_tlast;

    assign px_tdata = word[7:0];
    assign px_tvalid = left != 3'd0 && !flags_full;
    assign px_tlast = pixel == FRAME - 1 || (word_last && left == 3'd1);
    assign s_axis_tready = left == 3'd0 || word_done;

    assign m_axis_tdata = {{(32 - SCORE_BITS){sc_tdata[SCORE_BITS-1]}}, sc_tdata};
    assign m_axis_tvalid = sc_tvalid;
    assign sc_tready = m_axis_tready;
    assign m_axis_tlast = sc_tlast && count != 0 && flags[head];

    always @(posedge clk) begin
        if (!rst_n) begin
            left <= 3'd0;
            word_last <= 1'b0;
            pixel <= {PW{1'b0}};
        end else begin
            if (s_axis_tvalid && s_axis_tready) begin
                word <= s_axis_tdata;
                left <= 3'd4;
                word_last <= s_axis_tlast;
            end else if (word_done) begin
                left <= 3'd0;
            end else if (px_fire) begin
                word <= word >> 8;
                left <= left - 3'd1;
            end
            if (px_fire)
                pixel <= frame_end ? {PW{1'b0}} : pixel + 1'b1;
        end
    end

    always @(posedge clk) begin
        if (!rst_n) begin
            count <= 0;
            head <= 0;
            tail <= 0;
        end else begin
            if (push) begin
                flags[tail] <= word_last;
                tail <= tail + 1'b1;
            end
            if (pop)
                head <= head + 1'b1;
            count <= count + push - pop;
        end
    end
endmodule
