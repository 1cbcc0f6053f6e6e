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
//
// Pipelined for the clock (docs/rtl.md, Timing): the ROM words read in stage B are registered
// again (stage C: no path from a block RAM's output through a multiplier), the PO*CI products
// are registered (stage D, and again in the fabric: D2), each lane's CI products are added in
// pairs, a register after every adder level (stages T, clog2(CI) of them: summed as a chain into the ring in one cycle, 16
// products placed at 69.5 MHz on the ECP5), and stage E adds the lane's sum to the bias or the ring. The requantization of
// the OC sums is two registered steps (each sum rounded, with flags saying whether it saturates,
// compared before the rounding's carry; then the choice of OMAX, OMIN or the rounded value), and
// out_ready reaches no counter or enable (the steps wait on out_valid, a register). The
// arithmetic and the steps per frame are unchanged; the output comes 3 cycles later (CI = 1) or
// 4 + clog2(CI) (a tree).
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
    reg c_valid, c_first, c_group_end, c_frame_end;
    reg d_valid, d_first, d_group_end, d_frame_end;
    reg finishing;                             // the frame's sums are complete: requantize and send
    reg rounded_valid;                         // the frame's rounded sums wait for the output register
    wire e_valid, e_first, e_group_end, e_frame_end;   // the step entering stage E
    wire stall = e_valid && finishing;
    wire issue = have_x && !stall;
    assign busy = issue;
    assign in_ready = !have_x;

    reg [CI*XW-1:0] b_x, c_x;
    reg [PO*CI*WW-1:0] b_w, c_w;
    reg [PO*ACCW-1:0] b_bias, c_bias, d_bias;
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

    // ---- stages C (operands registered) and D (products registered) ---------------------------
    localparam PW = XW + 1 + WW;               // a product of a widened input and a weight
    reg [PO*CI*PW-1:0] prods, d_prod;
    reg signed [XW:0] xv;
    reg signed [WW-1:0] wv;
    reg signed [PW-1:0] pv;
    integer p, i, o;
    always @* begin
        for (p = 0; p < PO; p = p + 1) begin
            for (i = 0; i < CI; i = i + 1) begin
                xv = XSIGNED ? $signed({c_x[i * XW + XW - 1], c_x[i * XW +: XW]}) : $signed({1'b0, c_x[i * XW +: XW]});
                wv = $signed(c_w[(p * CI + i) * WW +: WW]);
                pv = xv * wv;
                prods[(p * CI + i) * PW +: PW] = pv;
            end
        end
    end
    always @(posedge clk) begin
        if (!stall) begin
            c_x <= b_x; c_w <= b_w; c_bias <= b_bias;
            d_prod <= prods; d_bias <= c_bias;
        end
    end

    // ---- stages T: each lane's CI products added in pairs, a register after every level -------
    localparam TL = (CI > 1) ? $clog2(CI) : 0; // adder levels
    localparam TW = (PW + TL < ACCW) ? PW + TL : ACCW;   // tree words: exact (or, wider, mod 2^ACCW)
    localparam FW = 4;                         // a step's flags: valid, first, group end, frame end
    function integer words_at(input integer level);
        integer l;
        begin
            words_at = CI;
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
    // with a tree, the products are registered once more in the fabric first (stage D2): Yosys
    // takes stage D's register into the MULT18, and a MULT18 and an adder in one cycle placed at
    // 83.6 MHz
    localparam TS = (TL > 0) ? TL + 1 : 0;     // registered steps between D and E
    reg [PO*CI*PW-1:0] d2_prod;
    always @(posedge clk) if (!stall) d2_prod <= d_prod;
    wire [PO*CI*PW-1:0] terms = (TL > 0) ? d2_prod : d_prod;
    wire [PO*ACCW-1:0] tree_sum, e_bias;
    wire [FW-1:0] d_flags = {d_valid, d_first, d_group_end, d_frame_end};
    wire [FW-1:0] e_flags;
    assign {e_valid, e_first, e_group_end, e_frame_end} = e_flags;
    genvar gp, gl, gk;
    generate
        for (gp = 0; gp < PO; gp = gp + 1) begin : lane
            /* verilator lint_off UNOPTFLAT */
            wire [TOTAL*TW-1:0] tv;             // every level's words, level 0 (the products) first
            /* verilator lint_on UNOPTFLAT */
            for (gk = 0; gk < CI; gk = gk + 1) begin : term
                assign tv[gk * TW +: TW] = $signed(terms[(gp * CI + gk) * PW +: PW]);
            end
            for (gl = 1; gl <= TL; gl = gl + 1) begin : level
                for (gk = 0; gk < words_at(gl); gk = gk + 1) begin : word
                    localparam SRC = level_at(gl - 1) + 2 * gk;
                    reg [TW-1:0] r;
                    if (2 * gk + 1 < words_at(gl - 1)) begin : add
                        always @(posedge clk) if (!stall) r <= tv[SRC * TW +: TW] + tv[(SRC + 1) * TW +: TW];
                    end else begin : pass
                        always @(posedge clk) if (!stall) r <= tv[SRC * TW +: TW];
                    end
                    assign tv[(level_at(gl) + gk) * TW +: TW] = r;
                end
            end
            assign tree_sum[gp * ACCW +: ACCW] = $signed(tv[level_at(TL) * TW +: TW]);
        end
        if (TS > 0) begin : tree_steps      // the step's flags and bias alongside its sums
            reg [FW*TS-1:0] t_flags;
            reg [PO*ACCW*TS-1:0] t_bias;
            wire [FW*(TS+1)-1:0] fchain = {t_flags, d_flags};
            wire [PO*ACCW*(TS+1)-1:0] bchain = {t_bias, d_bias};
            always @(posedge clk) begin
                if (!rst_n) t_flags <= 0;
                else if (!stall) t_flags <= fchain[FW*TS-1:0];
                if (!stall) t_bias <= bchain[PO*ACCW*TS-1:0];
            end
            assign e_flags = t_flags[FW*TS-1 -: FW];
            assign e_bias = t_bias[PO*ACCW*TS-1 -: PO*ACCW];
        end else begin : no_tree
            assign e_flags = d_flags;
            assign e_bias = d_bias;
        end
    endgenerate

    // ---- stage E: accumulate into the ring; entry 0 is the group being computed --------------
    reg [OC*ACCW-1:0] ring;
    reg [PO*ACCW-1:0] total;
    reg signed [ACCW-1:0] sum;
    reg [OC*(OW+2)-1:0] rounded_next, rounded;
    reg [OC*OW-1:0] result;
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
    always @* begin
        for (p = 0; p < PO; p = p + 1) begin
            sum = e_first ? $signed(e_bias[p * ACCW +: ACCW]) : $signed(ring[p * ACCW +: ACCW]);
            total[p * ACCW +: ACCW] = sum + $signed(tree_sum[p * ACCW +: ACCW]);
        end
        for (o = 0; o < OC; o = o + 1) begin
            rounded_next[o * (OW + 2) +: OW + 2] = requant_part($signed(ring[o * ACCW +: ACCW]));
            result[o * OW +: OW] = requant_pick(rounded[o * (OW + 2) +: OW + 2]);
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
            b_valid <= 1'b0; c_valid <= 1'b0; d_valid <= 1'b0; finishing <= 1'b0; rounded_valid <= 1'b0;
        end else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (rounded_valid && !out_valid) begin out_data <= result; out_valid <= 1'b1; end
            if (finishing && !(rounded_valid && out_valid)) begin
                rounded <= rounded_next; rounded_valid <= 1'b1; finishing <= 1'b0;
            end else if (rounded_valid && !out_valid) rounded_valid <= 1'b0;
            // stage E
            if (e_valid && !stall) begin
                if (e_group_end) ring <= ring_next;
                else ring[PO*ACCW-1:0] <= total;
                if (e_frame_end) finishing <= 1'b1;
            end
            // stages A to D
            if (!stall) begin
                b_valid <= issue;
                b_first <= (pix == 0) && (chunk == 0);
                b_group_end <= a_group_end; b_frame_end <= a_frame_end;
                c_valid <= b_valid; c_first <= b_first; c_group_end <= b_group_end; c_frame_end <= b_frame_end;
                d_valid <= c_valid; d_first <= c_first; d_group_end <= c_group_end; d_frame_end <= c_frame_end;
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
