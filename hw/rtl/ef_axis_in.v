// ef_axis_in: AXI-Stream of 8-bit pixels (channels interleaved, row-major, tlast on the frame's
// last beat) to a stream of pixel vectors (C channels, channel 0 in the low bits).
// Framing: a frame is exactly H*W*C beats.
//  - short frame (tlast before the last beat): the rest of the frame is filled with zero pixels,
//    so every layer still sees whole frames; err_short pulses. The next beat starts a new frame.
//  - long frame (no tlast on the last beat): the frame is complete at H*W*C beats; beats up to and
//    including the next tlast are dropped; err_long pulses.
module ef_axis_in #(
    parameter H = 4, W = 4, C = 1
) (
    input  wire            clk,
    input  wire            rst_n,
    input  wire [7:0]      s_axis_tdata,
    input  wire            s_axis_tvalid,
    output wire            s_axis_tready,
    input  wire            s_axis_tlast,
    output reg             out_valid,
    input  wire            out_ready,
    output reg [C*8-1:0]   out_data,
    output reg             err_short,
    output reg             err_long
);
    localparam BEATS = H * W * C;
    reg [31:0] beat;            // beats of the current frame placed so far
    reg [31:0] chan;
    reg [C*8-1:0] gather;
    reg padding, dropping;

    wire room = !out_valid || out_ready;                  // the output register can take a pixel
    assign s_axis_tready = dropping || (!padding && room);
    wire take = s_axis_tvalid && s_axis_tready && !dropping;
    wire fill = padding && room;                          // a zero beat of a short frame
    wire place = take || fill;
    wire [7:0] value = take ? s_axis_tdata : 8'd0;
    wire [C*8+7:0] lane_mask = {{C*8{1'b0}}, 8'hff} << (chan * 8);
    wire [C*8+7:0] lane_value = {{C*8{1'b0}}, value} << (chan * 8);
    wire [C*8-1:0] pixel = (gather & ~lane_mask[C*8-1:0]) | lane_value[C*8-1:0];
    wire frame_full = (beat == BEATS - 1);

    always @(posedge clk) begin
        if (!rst_n) begin
            beat <= 0; chan <= 0; padding <= 1'b0; dropping <= 1'b0; out_valid <= 1'b0;
            err_short <= 1'b0; err_long <= 1'b0;
        end else begin
            err_short <= 1'b0; err_long <= 1'b0;
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (dropping && s_axis_tvalid && s_axis_tlast) dropping <= 1'b0;
            if (place) begin
                gather <= pixel;
                if (chan == C - 1) begin
                    chan <= 0;
                    out_data <= pixel;
                    out_valid <= 1'b1;
                end else chan <= chan + 1;
                if (frame_full) begin
                    beat <= 0; padding <= 1'b0;
                    if (take && !s_axis_tlast) begin dropping <= 1'b1; err_long <= 1'b1; end
                end else begin
                    beat <= beat + 1;
                    if (take && s_axis_tlast) begin padding <= 1'b1; err_short <= 1'b1; end
                end
            end
        end
    end
endmodule
