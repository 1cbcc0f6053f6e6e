// ef_conv2d: streaming 2-D convolution with fused requantization (and ReLU / Clip), Verilog-2005.
//
// Input and output are pixel streams in raster order, one pixel (all channels, channel 0 in the
// low bits) per valid/ready transfer. A line buffer holds the last R >= KH+SH input rows; an
// engine computes each output pixel as (OC/PO) channel groups x KH*(KW/KP) window steps (KP
// horizontally adjacent positions each) x (C/CI) input channel chunks, one step per cycle, with
// PO*KP*CI multipliers. DW = 1 makes it depthwise: output channel o sees input channel o only,
// so a group's PO lanes take the group's own PO input channels (CI = 1, one chunk). Arithmetic
// is the integer model of edgefpga.hw.intmodel: exact products and sums in an ACCW-bit
// accumulator that starts at the (pre-aligned) bias, then a right shift by SHIFT rounding half
// to even and saturation to [OMIN, OMAX] (a fused ReLU or Clip). Zero padding: PT rows above,
// PL columns left; the output size OH x OWD (given) sets the padding below and right.
//
// Frames follow each other. Without FRAME_OVERLAP the next frame's pixels are accepted once the
// engine has finished the previous frame's last output pixel; with it, the next frame's rows enter
// the rows the engine has freed while it computes the frame's last outputs (the input at most one
// frame ahead), so that a frame's boundary costs no stage's tail. With LB_SLICED the line buffer holds one step's channel
// slice per word (the slice in the address, block RAM): a pixel is written one slice per cycle
// while its source holds it (valid/ready), and taken with the last, SELS cycles a pixel, where the
// engine spends more (the hardware model chooses it only then); no slice multiplexer follows the
// read, where it would sit behind a pixel-wide RAM in one cycle, only one before the write.
//
// Written for small synthesis results (docs/rtl.md, Resources): no multiplication outside the
// multipliers themselves (window positions and ROM addresses are counters, the line buffer's
// address is {row mod R, column} with the row length padded to a power of two), synchronous
// reads of every memory (block or distributed RAM, not registers and multiplexers), narrow
// counters, and the output vector filled by shifting in one channel group at a time.
module ef_conv2d #(
    parameter H = 8, W = 8, C = 1, KH = 3, KW = 3, SH = 1, SW = 1, PT = 1, PL = 1,
    parameter OH = 8, OWD = 8,
    parameter OC = 8, CI = 1, PO = 8, KP = 1, DW = 0,
    parameter XW = 8, XSIGNED = 1,
    parameter USE_DSP = 1,                     // 0: multipliers as shift-and-add logic (LUTs), not DSP48s
    parameter LB_WORD_REG = 1,                 // 0: line buffer in distributed RAM: the address registered, not the word
    parameter LB_SLICED = 0,                   // 1 (with LB_WORD_REG): one channel slice per line-buffer word, in block RAM
    parameter LB_OUT_REG = 0,                  // 1 (with LB_WORD_REG): the block RAM's word registered again (stage B2)
    parameter WROM_OUT_REG = 0,                // 1: the weight ROM's word registered again (stage B2, either line buffer form)
    parameter WFOLD = 1,                       // (with WROM_OUT_REG) the weight ROM's words read WFOLD side by side
    parameter OUT_CREDIT = 0,                  // 1: flow control by credit, nothing past A waits (an output register more)
    parameter FRAME_OVERLAP = 0,               // 1: the next frame's rows enter while the engine ends a frame
                                               // (built only where (OH-1)*SH <= H, see OVL)
    parameter PACK = 0,                        // 1 (DSP multipliers, not depthwise): output lanes 2q and 2q+1
                                               // share each DSP48, their weights packed (see stage D)
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
    output wire [OC*OW-1:0]     out_data,
    output wire                 busy            // an engine step issued this cycle (cycle accounting)
);
    localparam RN = KH + SH;
    localparam R = (RN <= 2) ? 2 : (RN <= 4) ? 4 : (RN <= 8) ? 8 : (RN <= 16) ? 16 :
                   (RN <= 32) ? 32 : (RN <= 64) ? 64 : 128;   // rows kept (power of 2)
    localparam RB = $clog2(R);
    localparam WB = (W > 1) ? $clog2(W) : 1;  // column bits: a row occupies 2^WB entries
    localparam HB = $clog2(H + 1);             // an input row, 0..H
    localparam GROUPS = OC / PO;
    localparam CHUNKS = DW ? 1 : C / CI;
    localparam XL = DW ? PO : CI;              // input channels one step reads at each position
    localparam SELS = DW ? GROUPS : CHUNKS;    // which slice of the pixel a step reads
    localparam SLICE = XL * XW;                // its bits (one constant: an index times a product of two
                                               // parameters left a multiplier, a DSP48, after synthesis)
    localparam KSTEPS = KW / KP;
    localparam GSTEPS = KH * KSTEPS * CHUNKS;  // steps per channel group
    localparam WDEPTH = GROUPS * GSTEPS;
    localparam GB = (GROUPS > 1) ? $clog2(GROUPS) : 1;
    localparam CB = (CHUNKS > 1) ? $clog2(CHUNKS) : 1;
    localparam SB = (SELS > 1) ? $clog2(SELS) : 1;
    localparam KB = $clog2((KH > KW ? KH : KW) + 1);
    localparam AB = (WDEPTH > 1) ? $clog2(WDEPTH) : 1;
    localparam MAXD = (H > W ? H : W) + (KH > KW ? KH : KW) + (SH > SW ? SH : SW) + (PT > PL ? PT : PL) + R;
    localparam NB = $clog2(2 * MAXD + 1) + 1;  // signed row / column positions
    localparam signed [NB-1:0] LAST_COL0 = (OWD - 1) * SW - PL;
    localparam signed [NB-1:0] LAST_ROW0 = (OH - 1) * SH - PT;
    // the last input pixel the first window of a row / frame needs, inside the map
    localparam NEED_ROW0 = (KH - 1 - PT < 0) ? 0 : (KH - 1 - PT > H - 1) ? H - 1 : KH - 1 - PT;
    localparam NEED_COL0 = (KW - 1 - PL < 0) ? 0 : (KW - 1 - PL > W - 1) ? W - 1 : KW - 1 - PL;
    localparam SLICED = LB_SLICED && (SELS > 1);
    localparam WORD_REG = LB_WORD_REG || SLICED;   // a sliced line buffer's word is registered (block RAM)
    localparam LB_BITS = SLICED ? SLICE : C * XW;
    localparam LB_ADDR = RB + WB + (SLICED ? SB : 0);
    // Frame overlap: while the engine computes frame f's last windows (origin row row0) the input
    // may write frame f+1's row r where r + H < row0 + R: that row's slot is then none of the rows
    // row0.. of frame f. Built only where the bound grows as the engine starts frame f+1 (R - PT
    // >= LAST_ROW0 + R - H, that is (OH-1)*SH <= H), so that in_ready, computed a cycle ahead, is
    // never early. Where R does not divide H, a frame's rows start at another slot: the rows are
    // then counted in slots across frames (in_slot, fbase, row0_slot), not as row mod R.
    localparam OVL = FRAME_OVERLAP && ((OH - 1) * SH <= H);
    localparam SLOTS = OVL && (H % R != 0);

    // ---- line buffer ---------------------------------------------------------------------
    // distributed RAM where the hardware model maps it there (LB_WORD_REG=0, as Yosys does for the
    // xc7), said to every synthesis tool: Yosys for the ECP5 would make it block RAM, whose read
    // (no output register inferred) then shares a cycle with the slice multiplexer
    localparam LB_STYLE = SLICED ? "block" : LB_WORD_REG ? "auto" : "distributed";
    (* ram_style = LB_STYLE *) reg [LB_BITS-1:0] lb [0:(1<<LB_ADDR)-1];
    reg signed [NB-1:0] in_row, in_col;        // next input pixel of the current input frame
    reg signed [NB-1:0] row0, col0;            // window origin of the output pixel (oy*S-PAD, ox*S-PAD)
    reg [HB-1:0] need_row;                     // the window's last needed pixel, clamped into the map
    reg [WB-1:0] need_col;
    reg [HB-1:0] need_row_next;                // the same for the next window row / column origin, held in
    reg [WB-1:0] need_col_next;                // registers so that the issue decision reads no adder
    reg        arrived;                        // the window's last needed pixel is in the line buffer
    reg        frame_done;                     // engine finished the frame; input may start the next
    reg        ahead;                          // OVL: the input is in the frame after the engine's
    reg [RB-1:0] in_slot, fbase, row0_slot;    // SLOTS: the input row's slot, the engine frame's row 0's
                                               // and its window origin's, each mod R
    wire [RB-1:0] wr_row = SLOTS ? in_slot : in_row[RB-1:0];
    reg        in_ok;                          // in_ready, registered

    // rows past the last window (the stride leaves them unused) are still read, so frames stay aligned
    reg [SB-1:0] wsel;                         // LB_SLICED: the slice of the offered pixel written this cycle
    wire last_slice = !SLICED || (wsel == SELS - 1);
    assign in_ready = in_ok && last_slice;
    wire accept = in_valid && in_ready;
    generate
        if (SLICED) begin : write_slices
            // in_ok only rises while a pixel is offered (the row it needs is freed, never taken back)
            always @(posedge clk) if (in_valid && in_ok) lb[{wr_row, in_col[WB-1:0], wsel}] <= in_data[wsel * SLICE +: SLICE];
        end else begin : write_pixel
            always @(posedge clk) if (accept) lb[{wr_row, in_col[WB-1:0]}] <= in_data;
        end
    endgenerate
    // the input's frame is complete: it starts the next where the engine waits for it (restart)
    // or, with OVL, while the engine ends its frame (the input then goes ahead), never two ahead
    wire wrap = (in_row >= H) && (OVL ? !ahead : frame_done);
    wire restart = wrap && frame_done;
    // next cycle's in_ready from this cycle's row0 and frame_done: row0 only grows within a frame
    // and wraps to -PT only as frame_done rises, so the row it frees is never taken early. Both
    // outcomes (this cycle ends the input row or not) from registers, then one multiplexer.
    // (in_row - row0 < R, the row is free, as one comparison with a register: row_end = row0 + R,
    // moved with row0; a subtraction before the comparison limited MobileNet's Conv_5 to 99.9 MHz)
    // (OVL, ahead: row_endh = row0 + R - H bounds the next frame's rows in the same way)
    reg signed [NB-1:0] row_end, row_end1;     // row0 + R, row0 + R - 1
    reg signed [NB-1:0] row_endh, row_endh1;   // OVL: row0 + R - H, row0 + R - 1 - H
    wire free_same = OVL && ahead ? (in_row < row_endh) : (in_row < row_end);
    wire free_next = OVL && ahead ? (in_row < row_endh1) : (in_row < row_end1);
    wire ok_same = (in_row < H) && (frame_done || free_same);
    wire ok_next_row = (in_row < H - 1) && (frame_done || free_next);
    wire in_ok_next = restart ? (PT < R) : wrap ? (row_endh > 0) : (accept && in_col == W - 1) ? ok_next_row : ok_same;

    // ---- engine ----------------------------------------------------------------------------
    // A issues a step (counters; the line-buffer and weight-ROM reads, synchronous, clocked by
    // issue) -> B (the words read) [-> B2 (with LB_OUT_REG: the block RAM's word registered again,
    // the RAM's output register, so that its read and the slice multiplexer are not one cycle;
    // with WROM_OUT_REG: the weight ROM's word registered again, so that a block RAM's
    // clock-to-out and the route to the multipliers are not one cycle; either way the whole step
    // waits: its flags, slice select and weights, and the line buffer's word (or, where its
    // address is registered, the step's slice already selected))] -> C (the step's channel slice selected and masked, the weights
    // registered again) -> D (the products: a DSP multiplier's, or each shift-and-add multiplier's
    // parts of PB weight bits) [-> DP (with PACK: each pair's product split into its two terms)]
    // -> T (each lane's adder tree, a register after every LPS adder levels)
    // -> E (the accumulator, the only loop: the bias or itself plus the tree's sum) -> F (a group's
    // sums rounded, with saturation flags) -> the output register, into which each group is shifted.
    // Everything past A moves on one enable, !stall, from registered flags only (out_ready as well
    // only where a group is one step, which would otherwise lose a cycle per pixel).
    reg [GB-1:0] group;
    reg [KB-1:0] ky, kx;
    reg [CB-1:0] chunk;
    reg [AB-1:0] waddr;                        // = ((group*KH + ky)*KSTEPS + kx/KP)*CHUNKS + chunk
    // the weight ROM: one word of WWORD bits per step. With WFOLD > 1 a row holds WFOLD words side by
    // side, step s in row s mod WROWS, position s / WROWS (WROWS a power of two): a deep ROM is then
    // one bank of block RAM, not WFOLD banks whose outputs a multiplexer joins in the cycle of the
    // RAM's clock-to-out; every word of the row is registered in B2 and the step's is chosen after
    // (ELPV's Conv_5, 2304 steps in five banks of 512 words on the ECP5: 97.0 MHz, that cycle)
    localparam WWORD = PO * KP * CI * WW;
    localparam WRB = (WFOLD > 1) ? $clog2((WDEPTH + WFOLD - 1) / WFOLD) : AB;   // row address bits
    localparam WROWS = (WFOLD > 1) ? (1 << WRB) : WDEPTH;
    localparam FB = (WFOLD > 1) ? $clog2(WFOLD) : 1;
    reg [WFOLD*WWORD-1:0] wrom [0:WROWS-1];   // synthesis picks block RAM, LUT RAM or logic by size
    reg [PO*ACCW-1:0] brom [0:GROUPS-1];
    initial begin
        $readmemh(WFILE, wrom);
        $readmemh(BFILE, brom);
    end

    wire signed [NB-1:0] iy = row0 + $signed({1'b0, ky});
    wire signed [NB-1:0] ix = col0 + $signed({1'b0, kx});  // first of the KP positions
    wire [RB-1:0] slot_y = row0_slot + ky;     // SLOTS: the window row's slot
    wire [RB-1:0] rd_row = SLOTS ? slot_y : iy[RB-1:0];
    // `arrived` is registered: next cycle's value compares this cycle's input position (one cycle
    // late, so never early: the position only grows within a frame) with next cycle's need, which
    // is the next window's where this cycle issues a pixel's last step. Both outcomes come from
    // registers, the issue picks one: the issue decision is then a gate of four registered flags,
    // not a comparator behind the counters (the stage's critical path on the ECP5 before).
    function [HB-1:0] clamp_row(input signed [NB-1:0] r);
        clamp_row = (r < 0) ? 0 : (r > H - 1) ? H - 1 : r[HB-1:0];
    endfunction
    function [WB-1:0] clamp_col(input signed [NB-1:0] c);
        clamp_col = (c < 0) ? 0 : (c > W - 1) ? W - 1 : c[WB-1:0];
    endfunction
    localparam [HB-1:0] NEED_ROW1 = (OH > 1) ? clamp_row(SH - PT + KH - 1) : NEED_ROW0;
    localparam [WB-1:0] NEED_COL1 = (OWD > 1) ? clamp_col(SW - PL + KW - 1) : NEED_COL0;
    // (OVL) while the input is ahead, every pixel of the engine's frame is in: `ahead` is the top
    // bit of the input's position, one bit more of the same comparison; after the frame's last
    // window the next frame's first is compared without it (the input's position is then the next
    // frame's). No flag that depends on the issue reaches `arrived` but the issue's own selection.
    wire [HB+WB:0] in_pos = {OVL && ahead, in_row[HB-1:0], in_col[WB-1:0]};
    wire col_last = (col0 == LAST_COL0);
    wire row_last = (row0 == LAST_ROW0);
    wire arrived_same = in_pos > {1'b0, need_row, need_col};
    localparam [WB-1:0] FIRST_COL_NEED = NEED_COL0;   // sized, for the concatenation
    localparam [HB-1:0] FIRST_ROW_NEED = NEED_ROW0;
    wire arrived_first = in_pos[HB+WB-1:0] > {FIRST_ROW_NEED, FIRST_COL_NEED};
    wire arrived_next = !col_last ? (in_pos > {1'b0, need_row, need_col_next})
                      : row_last ? arrived_first : (in_pos > {1'b0, need_row_next, FIRST_COL_NEED});
    wire a_last = (chunk == CHUNKS - 1) && (ky == KH - 1) && (kx == KW - KP);
    wire a_first = (chunk == 0) && (ky == 0) && (kx == 0);
    wire a_group_last = (group == GROUPS - 1);

    localparam PW = XW + 1 + WW;               // a product of a widened input and a weight
    localparam PB = 2;                         // weight bits per part of a LUT multiplier (one adder level)
    localparam NPART = USE_DSP ? 1 : (WW + PB - 1) / PB;   // terms per product
    localparam NT = KP * CI * NPART;           // terms a lane's tree adds
    localparam TL = (NT > 1) ? $clog2(NT) : 0; // adder levels
    // adder levels per registered tree stage: one after DSP products (a MULT18's delay leaves no room
    // for two adders at 100 MHz on the ECP5), two after the shift-and-add parts
    localparam LPS = USE_DSP ? 1 : 2;
    localparam TS = (TL + LPS - 1) / LPS;      // registered tree stages
    localparam TW = (PW + TL < ACCW) ? PW + TL : ACCW;   // tree words: exact (or, wider, mod 2^ACCW)
    localparam FW = 5 + GB;                    // flags: valid, first, last, group first, pixel end, group
    localparam FV = FW - 1, FF = FW - 2, FL = FW - 3, FG = FW - 4, FP = FW - 5;

    reg b_valid, b_first, b_last, b_gfirst, b_pixel_end;
    reg [GB-1:0] b_group;
    reg [SB-1:0] b_sel;                        // the chunk (or, depthwise, the group) of stage B's step
    reg [WFOLD*WWORD-1:0] b_w;
    reg [WWORD-1:0] c_w;
    reg [FB-1:0] b_fold, b2_fold;              // WFOLD > 1: the step's word in the row read
    reg [FW-1:0] c_flags;
    localparam B2 = (WORD_REG && LB_OUT_REG) || WROM_OUT_REG;   // stage B2 is built
    reg [FW-1:0] b2_flags;
    reg [SB-1:0] b2_sel;
    reg [WFOLD*WWORD-1:0] b2_w;
    wire [FW-1:0] b_flags = {b_valid, b_first, b_last, b_gfirst, b_pixel_end, b_group};
    wire [FW-1:0] s_flags = B2 ? b2_flags : b_flags;   // the step entering C and its weights
    // the stage whose line-buffer word the slice is selected from: B2 where the word is registered
    // and B2 is built, else B (the address form selects in B; its slice then waits in B2)
    localparam B2_WORD = B2 && WORD_REG;
    wire [SB-1:0] rd_sel = B2_WORD ? b2_sel : b_sel;
    wire [WWORD-1:0] s_w;
    generate
        if (WFOLD > 1) begin : fold_pick
            assign s_w = b2_w[b2_fold * WWORD +: WWORD];   // (WFOLD > 1 only with stage B2)
        end else begin : whole_word
            assign s_w = B2 ? b2_w : b_w;
        end
    endgenerate
    // PACK: a pair's raw product is registered (stage DP, DS = 1) before its fields are split
    localparam DS = (PACK && USE_DSP && !DW && (PO > 1)) ? 1 : 0;
    localparam TD = TS + DS;                   // registered stages from D's output to E's input
    reg [FW*(TD+1)-1:0] t_flags;               // D's flags low, then DP's and each tree stage's: the top is E's input
    wire [FW*(TD+2)-1:0] chain = {t_flags, c_flags};
    wire [FW-1:0] pre_flags = chain[FW*(TD+1) +: FW];    // the step entering E
    // the step two stages before E, whose group's bias is read from the ROM (a block RAM's read,
    // registered again, so that the RAM's clock-to-out is not in the accumulator's cycle)
    localparam BI = (TD > 0) ? TD - 1 : 0;
    wire [FW-1:0] bias_flags = (TD > 0) ? chain[FW*BI +: FW] : s_flags;
    reg e_valid, e_last, e_gfirst, e_pixel_end;
    reg f_valid, f_gfirst, f_pixel_end;
    // a pixel's first group waits while the output register holds the previous pixel unsent
    wire out_busy = (GSTEPS == 1) ? (out_valid && !out_ready) : out_valid;
    // With OUT_CREDIT nothing past A ever waits, so no register past A has an enable: a finished
    // pixel waits in the result register (pending) until the output register is free, and the
    // issue begins a pixel only while fewer than two are begun and unsent. So when a pixel's first
    // group reaches F the previous pixel has left the result register, since the one before it
    // was sent before this pixel began. One stall enabling every register past A (ELPV's Conv_3:
    // about 10 k) limited it to 95.0 MHz on the ECP5 (9.3 of 10.5 ns routing on that net); it
    // costs an output register, and no cycles where a pixel takes more steps than the pipeline has
    // stages (the hardware model chooses it only there).
    wire stall = !OUT_CREDIT && f_valid && f_gfirst && out_busy;
    reg [1:0] credits;                         // OUT_CREDIT: pixels begun (first step issued), not yet sent
    reg at_start;                              // the next step is a pixel's first
    reg pending;                               // OUT_CREDIT: the result register holds a whole pixel
    wire credit_ok = !OUT_CREDIT || !at_start || !credits[1];
    wire issue = !stall && !frame_done && arrived && credit_ok;
    assign busy = issue;
    wire frame_end = issue && a_last && a_group_last && col_last && row_last;   // the frame's last step

    // stage B's reads move on !stall, like every stage past A (b_valid says whether they hold a
    // step): the issue then enables only A's counters, a small fan-out
    always @(posedge clk) begin
        if (!stall) begin
            b_w <= wrom[waddr[WRB-1:0]];
            b_fold <= waddr >> WRB;
            b2_w <= b_w; b2_sel <= b_sel; b2_fold <= b_fold;
        end
    end

    // KP line-buffer reads per step; a position in the padding reads as zero (masked in stage C)
    wire [KP*XL*XW-1:0] x_step;                // the step's XL-channel slice at each position
    // stage C's slice, one copy per output lane where DSP multipliers share it (PO > 1), each kept
    // apart from synthesis' register merging, so that each copy sits by its lane's multipliers
    // rather than one register driving all of them across the die (ELPV's Conv_0: 24 MULT18s,
    // 99.7 MHz on the ECP5 with one)
    // Two products per DSP48 (PACK): lanes 2q and 2q+1 read the same input, so one multiplier takes
    // x * (w_hi * 2^PK_K + w_lo), a product of XW+1 by PK_AW bits (at most 18 by 25: one DSP48E1), and
    // both products are fields of it (stage D registers the product, stage DP adds the offset and
    // splits it). A lane's product has at most PK_K = XW+WW bits, signed.
    localparam PK = DS;
    localparam NPAIR = PK ? PO / 2 : 0;
    localparam PK_K = XW + WW;
    localparam PK_AW = 2 * WW + XW + 1;
    localparam XCOPIES = (USE_DSP && !DW && PO > 1) ? (PK ? (PO + 1) / 2 : PO) : 1;
    localparam XBITS = KP * XL * XW;
    wire [XCOPIES*XBITS-1:0] c_x;
    genvar gj;
    generate
        for (gj = 0; gj < KP; gj = gj + 1) begin : pos
            wire signed [NB-1:0] ixj = ix + gj;
            wire in_map = (iy >= 0) && (iy < H) && (ixj >= 0) && (ixj < W);
            wire [LB_BITS-1:0] rd;
            reg rd_inside, rd_inside2;
            always @(posedge clk) if (!stall) begin rd_inside <= in_map; rd_inside2 <= rd_inside; end
            wire in_map_read = B2_WORD ? rd_inside2 : rd_inside;
            // the step's slice: an indexed part-select (a balanced multiplexer tree), zero in the padding;
            // a sliced line buffer's word is the slice
            wire [XL*XW-1:0] part;
            if (SLICED) begin : whole_word
                assign part = in_map_read ? rd : {SLICE{1'b0}};
            end else begin : part_select
                assign part = in_map_read ? rd[rd_sel * SLICE +: SLICE] : {SLICE{1'b0}};
            end
            if (WORD_REG) begin : word_reg
                // the word registered (a block RAM's own output register); sliced, the step's slice
                // (the chunk or, depthwise, the group) is in the address
                wire [SB-1:0] a_sel = DW ? group : chunk;
                wire [LB_ADDR-1:0] raddr;
                if (SLICED) begin : slice_addr
                    assign raddr = {rd_row, ixj[WB-1:0], a_sel};
                end else begin : pixel_addr
                    assign raddr = {rd_row, ixj[WB-1:0]};
                end
                reg [LB_BITS-1:0] word, word2;
                always @(posedge clk) if (!stall) begin
                    word <= lb[raddr];
                    word2 <= word;
                end
                assign rd = B2_WORD ? word2 : word;
                assign x_step[gj * XL * XW +: XL * XW] = part;
            end else begin : addr_reg
                // the address registered and the word read asynchronously (distributed RAM), so
                // that only the step's slice is held: XL*XW flip-flops instead of C*XW. The slice
                // is caught the cycle after the issue, as the row may be overwritten while the
                // pipeline stalls (the data-register form caught the whole word at the issue).
                // With stage B2 the slice (selected in B) waits one stage in a register.
                reg [RB+WB-1:0] addr;
                reg fresh;
                reg [XL*XW-1:0] held, slice2;
                wire [XL*XW-1:0] slice = fresh ? part : held;
                always @(posedge clk) begin
                    if (!stall) begin addr <= {rd_row, ixj[WB-1:0]}; slice2 <= slice; end
                    fresh <= !stall;
                    if (fresh) held <= part;
                end
                assign rd = lb[addr];
                assign x_step[gj * XL * XW +: XL * XW] = B2 ? slice2 : slice;
            end
        end
    endgenerate

    genvar gx;
    generate
        for (gx = 0; gx < XCOPIES; gx = gx + 1) begin : x_copy
            (* keep *) reg [XBITS-1:0] x;      // keep: on the register for Vivado, on its process for Yosys
            (* keep *) always @(posedge clk) if (!stall) x <= x_step;
            assign c_x[gx * XBITS +: XBITS] = x;
        end
    endgenerate

    // the shift-and-add product of weight bits [lo, hi) (the top bit, the sign, subtracted):
    // synthesis maps it to LUTs and carry chains, never to a DSP; the parts sum to the product
    function signed [PW-1:0] lut_part(input signed [XW:0] a, input signed [WW-1:0] b, input integer lo,
                                      input integer hi);
        integer bit_index;
        begin
            lut_part = 0;
            for (bit_index = lo; bit_index < hi && bit_index < WW; bit_index = bit_index + 1)
                if (b[bit_index]) begin
                    if (bit_index == WW - 1) lut_part = lut_part - (a <<< bit_index);
                    else lut_part = lut_part + (a <<< bit_index);
                end
        end
    endfunction

    // stage C's packed multiplicands (PACK): w_hi * 2^PK_K + w_lo as bits, {w_hi - sign(w_lo) (WW+1
    // bits), w_lo sign-extended to PK_K bits}: a decrement per pair, from the step's weights (B or B2)
    localparam AWORD = (NPAIR > 0 ? NPAIR : 1) * KP * CI * PK_AW;
    reg [AWORD-1:0] c_a, packed_w;
    reg signed [WW:0] w_hi;
    reg signed [WW-1:0] w_lo;
    integer pq, pj, pi;
    always @* begin
        packed_w = 0;
        for (pq = 0; pq < NPAIR; pq = pq + 1)
            for (pj = 0; pj < KP; pj = pj + 1)
                for (pi = 0; pi < CI; pi = pi + 1) begin
                    w_lo = s_w[(((2 * pq) * KP + pj) * CI + pi) * WW +: WW];
                    w_hi = $signed(s_w[(((2 * pq + 1) * KP + pj) * CI + pi) * WW +: WW]) - $signed({1'b0, w_lo[WW - 1]});
                    packed_w[((pq * KP + pj) * CI + pi) * PK_AW +: PK_AW] = {w_hi, {(PK_K - WW){w_lo[WW - 1]}}, w_lo};
                end
    end
    // stage D: the products (or parts) of stage C's step; lane p's terms are [p*NT, (p+1)*NT).
    // PACK: a pair's product is registered as it comes out of its multiplier (a DSP48's own M or P
    // register), and stage DP adds the offset and splits it into the pair's two terms, so that the
    // offset's carry chain is not in the multiplier's cycle; the other lanes' terms wait in DP.
    localparam RAWW = XW + 1 + PK_AW;          // a pair's product, exact
    localparam RWORD = (NPAIR > 0 ? NPAIR : 1) * KP * CI * RAWW;
    reg [PO*NT*PW-1:0] d_terms;
    reg [PO*NT*PW-1:0] terms;
    reg [RWORD-1:0] raws, d_raw;               // PACK: the pairs' products, D's register
    reg [PO*NT*PW-1:0] d_lone, split;          // PACK: D's unpaired terms; DP's terms
    reg signed [XW:0] xv;
    reg signed [WW-1:0] wv;
    reg signed [PK_AW-1:0] av;                 // PACK: a pair's packed multiplicand
    reg signed [XW+PK_AW:0] pprod;             // and its product plus the offset (DP)
    localparam signed [XW+PK_AW:0] PK_OFFSET = 1 <<< (PK_K - 1);
    integer p, j, i, xi, h, rq, rj, ri;
    always @* begin
        terms = 0;
        raws = 0;
        for (p = 0; p < PO; p = p + 1)
            for (j = 0; j < KP; j = j + 1)
                for (i = 0; i < CI; i = i + 1) begin
                    // depthwise: lane p reads channel p of the group's slice; else chunk channel i
                    xi = DW ? (j * XL + p) : (j * XL + i);
                    xi = xi + ((XCOPIES > 1) ? (PK ? p / 2 : p) * KP * XL : 0);   // lane p's copy (a pair's)
                    xv = XSIGNED ? $signed({c_x[xi * XW + XW - 1], c_x[xi * XW +: XW]})
                                 : $signed({1'b0, c_x[xi * XW +: XW]});
                    wv = $signed(c_w[((p * KP + j) * CI + i) * WW +: WW]);
                    if (p < 2 * NPAIR) begin
                        if (p % 2 == 0) begin   // a pair's product, once (its even lane)
                            av = $signed(c_a[(((p / 2) * KP + j) * CI + i) * PK_AW +: PK_AW]);
                            raws[(((p / 2) * KP + j) * CI + i) * RAWW +: RAWW] = xv * av;
                        end
                    end else
                        for (h = 0; h < NPART; h = h + 1)
                            terms[(((p * KP + j) * CI + i) * NPART + h) * PW +: PW] =
                                USE_DSP ? xv * wv : lut_part(xv, wv, h * PB, (h + 1) * PB);
                end
    end
    // stage DP's split: the pair's product plus 2^(PK_K-1) has the low product plus 2^(PK_K-1) in
    // its low PK_K bits, in [0, 2^PK_K): so the field above is exactly the high product, and the
    // low product is the low field with its top bit inverted
    always @* begin
        split = d_lone;
        for (rq = 0; rq < NPAIR; rq = rq + 1)
            for (rj = 0; rj < KP; rj = rj + 1)
                for (ri = 0; ri < CI; ri = ri + 1) begin
                    pprod = $signed(d_raw[((rq * KP + rj) * CI + ri) * RAWW +: RAWW]) + PK_OFFSET;
                    split[((((2 * rq) * KP + rj) * CI + ri) * NPART) * PW +: PW] =
                        $signed({~pprod[PK_K - 1], pprod[PK_K - 2:0]});
                    split[((((2 * rq + 1) * KP + rj) * CI + ri) * NPART) * PW +: PW] = pprod[PK_K +: PW];
                end
    end
    always @(posedge clk) begin
        if (!stall) begin
            c_w <= s_w;
            if (PK) begin
                c_a <= packed_w;
                d_raw <= raws;
                d_lone <= terms;
                d_terms <= split;
            end else d_terms <= terms;
        end
    end

    // stage T: each lane's terms added in pairs, level by level (a level's odd last word passes
    // through), a register after every LPS levels and after the last
    function integer words_at(input integer level);
        integer l;
        begin
            words_at = NT;
            for (l = 0; l < level; l = l + 1) words_at = (words_at + 1) / 2;
        end
    endfunction
    function integer level_at(input integer level);   // the first word of a level in a lane's vector
        integer l;
        begin
            level_at = 0;
            for (l = 0; l < level; l = l + 1) level_at = level_at + words_at(l);
        end
    endfunction
    localparam TOTAL = level_at(TL + 1);
    wire [PO*ACCW-1:0] tree_sum;
    genvar gp, gl, gk;
    generate
        for (gp = 0; gp < PO; gp = gp + 1) begin : lane
            /* verilator lint_off UNOPTFLAT */
            wire [TOTAL*TW-1:0] tv;             // every level's words, level 0 (the terms) first
            /* verilator lint_on UNOPTFLAT */
            for (gk = 0; gk < NT; gk = gk + 1) begin : term
                assign tv[gk * TW +: TW] = $signed(d_terms[(gp * NT + gk) * PW +: PW]);
            end
            for (gl = 1; gl <= TL; gl = gl + 1) begin : level
                for (gk = 0; gk < words_at(gl); gk = gk + 1) begin : word
                    localparam SRC = level_at(gl - 1) + 2 * gk;
                    wire [TW-1:0] s;
                    if (2 * gk + 1 < words_at(gl - 1)) begin : add
                        assign s = tv[SRC * TW +: TW] + tv[(SRC + 1) * TW +: TW];
                    end else begin : pass
                        assign s = tv[SRC * TW +: TW];
                    end
                    if (gl % LPS == 0 || gl == TL) begin : registered
                        reg [TW-1:0] r;
                        always @(posedge clk) if (!stall) r <= s;
                        assign tv[(level_at(gl) + gk) * TW +: TW] = r;
                    end else begin : direct
                        assign tv[(level_at(gl) + gk) * TW +: TW] = s;
                    end
                end
            end
            assign tree_sum[gp * ACCW +: ACCW] = $signed(tv[level_at(TL) * TW +: TW]);
        end
    endgenerate

    `include "ef_requant.vh"
    // requant (ef_requant.vh) in two steps: requant_part gives the value's low OW bits once
    // rounded (or shifted left) and whether it saturates high or low, compared on the value before
    // the rounding's carry; requant_pick chooses OMAX, OMIN or the value: together, requant.
    function [OW+1:0] requant_part(input signed [63:0] wide);   // {high, low, value}
        reg signed [63:0] fl, rest, v;
        reg inc, hi, lo;
        begin
            if (RQ_LSH > 0) begin
                hi = wide > (OMAX >>> RQ_LSH);
                lo = wide < -((-OMIN) >>> RQ_LSH);
                v = wide <<< RQ_LSH;
            end else begin
                fl = wide >>> RQ_RSH;
                inc = 1'b0;
                if (RQ_RSH > 0) begin
                    rest = wide - (fl <<< RQ_RSH);
                    inc = (rest > (64'sd1 <<< (RQ_RSH - 1))) || (rest == (64'sd1 <<< (RQ_RSH - 1)) && fl[0]);
                end
                hi = inc ? (fl >= OMAX) : (fl > OMAX);
                lo = inc ? (fl < OMIN - 1) : (fl < OMIN);
                v = fl + inc;
            end
            requant_part = {hi, lo, v[OW-1:0]};
        end
    endfunction
    function [OW-1:0] requant_pick(input [OW+1:0] part);
        requant_pick = part[OW+1] ? OMAX[OW-1:0] : part[OW] ? OMIN[OW-1:0] : part[OW-1:0];
    endfunction

    // stage E: the accumulators (the bias read from its ROM two stages before, and registered
    // again); stage F: the group's sums rounded
    reg [PO*ACCW-1:0] acc, bias_read, e_bias;
    reg [PO*ACCW-1:0] total;
    reg [PO*(OW+2)-1:0] rounded_next, rounded;
    reg [PO*OW-1:0] q_group;                   // the group's requantized outputs
    integer lp;
    always @* begin
        for (lp = 0; lp < PO; lp = lp + 1) begin
            total[lp * ACCW +: ACCW] = (pre_flags[FF] ? e_bias[lp * ACCW +: ACCW] : acc[lp * ACCW +: ACCW])
                                       + tree_sum[lp * ACCW +: ACCW];
            rounded_next[lp * (OW + 2) +: OW + 2] = requant_part($signed(acc[lp * ACCW +: ACCW]));
            q_group[lp * OW +: OW] = requant_pick(rounded[lp * (OW + 2) +: OW + 2]);
        end
    end
    always @(posedge clk) begin
        if (!stall) begin
            bias_read <= brom[bias_flags[GB-1:0]];
            e_bias <= bias_read;
            if (pre_flags[FV]) acc <= total;
            if (e_valid && e_last) rounded <= rounded_next;
        end
    end

    // the result register: each finished group is shifted in from the top, so after the last
    // group the first one sits in the low bits; it is out_data itself (one register, not two),
    // except with OUT_CREDIT
    reg [OC*OW-1:0] result;
    wire [OC*OW-1:0] next_result;
    generate
        if (GROUPS > 1) begin : shift_in
            assign next_result = {q_group, result[OC*OW-1:PO*OW]};
        end else begin : whole
            assign next_result = q_group;
        end
    endgenerate

    always @(posedge clk) begin
        if (!rst_n) begin
            group <= 0; ky <= 0; kx <= 0; chunk <= 0; waddr <= 0; row0 <= -PT; col0 <= -PL;
            row_end <= R - PT; row_end1 <= R - 1 - PT;
            row_endh <= R - PT - H; row_endh1 <= R - 1 - PT - H;
            ahead <= 1'b0; in_slot <= 0; fbase <= 0; row0_slot <= -PT;
            need_row <= NEED_ROW0; need_col <= NEED_COL0; in_ok <= 1'b1; arrived <= 1'b0;
            need_row_next <= NEED_ROW1; need_col_next <= NEED_COL1;
            out_valid <= 1'b0; frame_done <= 1'b0; in_row <= 0; in_col <= 0; b_valid <= 1'b0;
            wsel <= 0;
            b2_flags <= 0; c_flags <= 0; t_flags <= 0; e_valid <= 1'b0; f_valid <= 1'b0;
            credits <= 0; at_start <= 1'b1; pending <= 1'b0;
        end else begin
            in_ok <= in_ok_next;
            if (SLICED && in_valid && in_ok) wsel <= last_slice ? 0 : wsel + 1;
            if (accept) begin
                if (in_col == W - 1) begin in_col <= 0; in_row <= in_row + 1; end
                else in_col <= in_col + 1;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (wrap) begin frame_done <= 1'b0; in_row <= 0; in_col <= 0; end
            if (SLOTS && accept && in_col == W - 1) in_slot <= in_slot + 1;   // never reset: slots run on
            // a frame's first window waits for the first position compared after the input's
            // restart (OVL: after it goes ahead, a cycle in which the engine may lose a step)
            arrived <= wrap ? 1'b0 : (issue && a_last && a_group_last) ? arrived_next : arrived_same;
            if (OVL) ahead <= frame_end ? 1'b0 : (wrap && !frame_done) ? 1'b1 : ahead;
            // the output: stage F's group shifted into the result; a pixel's last makes it valid
            if (f_valid && !stall) begin
                result <= next_result;
                if (f_pixel_end && !OUT_CREDIT) out_valid <= 1'b1;
            end
            if (OUT_CREDIT) begin
                if (pending && (!out_valid || out_ready)) begin out_valid <= 1'b1; pending <= 1'b0; end
                if (f_valid && f_pixel_end) pending <= 1'b1;
                credits <= credits + {1'b0, issue && at_start} - {1'b0, out_valid && out_ready};
            end
            if (issue) at_start <= a_last && a_group_last;
            // stages B to F
            if (!stall) begin
                b_valid <= issue;
                b_first <= a_first; b_last <= a_last; b_gfirst <= (group == 0);
                b_pixel_end <= a_last && a_group_last;
                b_group <= group;
                b_sel <= DW ? group : chunk;
                b2_flags <= b_flags;
                c_flags <= s_flags;
                t_flags <= (t_flags << FW) | c_flags;
                e_valid <= pre_flags[FV]; e_last <= pre_flags[FL];
                e_gfirst <= pre_flags[FG]; e_pixel_end <= pre_flags[FP];
                f_valid <= e_valid && e_last; f_gfirst <= e_gfirst; f_pixel_end <= e_pixel_end;
            end
            if (issue) begin
                waddr <= (waddr == WDEPTH - 1) ? 0 : waddr + 1;
                if (a_last && a_group_last) begin
                    if (col_last) begin
                        col0 <= -PL; need_col <= NEED_COL0; need_col_next <= NEED_COL1;
                        if (row0 == LAST_ROW0) begin
                            row0 <= -PT; need_row <= NEED_ROW0; need_row_next <= NEED_ROW1;
                            // OVL: the engine goes on at once where the input is (or goes) ahead
                            frame_done <= !(OVL && (ahead || wrap));
                            row_end <= R - PT; row_end1 <= R - 1 - PT;
                            row_endh <= R - PT - H; row_endh1 <= R - 1 - PT - H;
                            fbase <= fbase + H; row0_slot <= fbase + H - PT;
                        end else begin
                            row0 <= row0 + SH; need_row <= need_row_next;
                            row_end <= row_end + SH; row_end1 <= row_end1 + SH;
                            row_endh <= row_endh + SH; row_endh1 <= row_endh1 + SH;
                            row0_slot <= row0_slot + SH;
                            need_row_next <= clamp_row(row0 + 2 * SH + KH - 1);
                        end
                    end else begin
                        col0 <= col0 + SW; need_col <= need_col_next;
                        need_col_next <= clamp_col(col0 + 2 * SW + KW - 1);
                    end
                end
                if (chunk == CHUNKS - 1) begin
                    chunk <= 0;
                    if (kx == KW - KP) begin
                        kx <= 0;
                        if (ky == KH - 1) begin
                            ky <= 0;
                            group <= a_group_last ? 0 : group + 1;
                        end else ky <= ky + 1;
                    end else kx <= kx + KP;
                end else chunk <= chunk + 1;
            end
        end
    end
    // OUT_CREDIT: the output register, the pixel moved from the result register when it is free
    reg [OC*OW-1:0] out_reg;
    always @(posedge clk) if (OUT_CREDIT && pending && (!out_valid || out_ready)) out_reg <= result;
    assign out_data = OUT_CREDIT ? out_reg : result;
endmodule
