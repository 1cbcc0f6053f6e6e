"""ef_conv2d: a streaming 2-D convolution (a depthwise one with DW=1), its hardware model.

Lanes: CI input channels x PO output channels x KP adjacent window positions per cycle
(depthwise: PO channels, each its own input channel, so CI = 1). One engine step per cycle:
out_pixels x KH x (KW/KP) x (C/CI) x (OC/PO) steps per frame (depthwise: C/PO instead of the
last two), as the Verilog counts them.
"""

from __future__ import annotations

import numpy as np

from ..graph import attr
from ..precision import drop_unused_fraction, exact_accumulator, fused_result, param_knob, result_knob
from .base import Resources, clog2, divisors, hls_entries
from .estimate import DSP_A, DSP_B, Model, dsp_per_product, map_memory, predict, rom_columns, rom_luts_per_bit
from .rule import MAX_KERNEL, MAX_STRIDE, Capability, GraphView, Refusal, attribute, check_spatial
from .stage import (Stage, StreamInfo, Window, align, aligned_weights, frame_overlap, hex_word, line_buffer_rows,
                    overlap_registers, saturation, to_int, window_geometry, window_need, window_params)

MODULES = ("ef_conv2d",)
KINDS = ("conv", "depthwise")
OPS = ("Conv",)  # of the canonical graph
FUSES_ACTIVATION = True  # ends in a rounding cast: a Relu / Clip after it is its saturation


def lane_options(layer) -> list[tuple[int, int, int]]:
    """Every (ci, po, kp) the module can be built with: divisors of the channels and kernel width."""
    if layer.kind == "depthwise":
        return [(1, po, kp) for po in divisors(layer.channels) for kp in divisors(layer.kernel[1])]
    return [(ci, po, kp) for ci in divisors(layer.channels) for po in divisors(layer.outputs)
            for kp in divisors(layer.kernel[1])]


def cycles(layer, ci: int, po: int, kp: int) -> int:
    """Engine cycles per frame (one step per cycle)."""
    kh, kw = layer.kernel
    if layer.kind == "depthwise":
        return layer.out_pixels * kh * (kw // kp) * (layer.channels // po)
    return layer.out_pixels * kh * (kw // kp) * (layer.channels // ci) * (layer.outputs // po)


def multipliers(layer, ci: int, po: int, kp: int) -> int:
    return ci * po * kp


def packable(xw: int, ww: int) -> bool:
    """Whether two output lanes' products fit one DSP48E1 (hw/rtl/ef_conv2d.v PACK): the input, XW+1
    bits signed, on the 18-bit port, and both weights as w_hi * 2^(XW+WW) + w_lo (2*WW+XW+1 bits,
    signed) on the 25-bit one; 8-bit inputs and weights just fit. A product narrow enough that Yosys
    builds it in LUTs (``dsp_per_product`` 0) is left there."""
    return 2 * ww + xw + 1 <= DSP_A and xw + 1 <= DSP_B and dsp_per_product(xw + 1, ww) == 1


def packed(params: dict) -> bool:
    """Whether an instance is built with two products per DSP48 (the RTL's PK): PACK, DSP
    multipliers, not depthwise, at least two output lanes."""
    p = params
    return bool(p.get("PACK", 0) and p.get("USE_DSP", 1) and not p.get("DW", 0) and p.get("PO", 1) > 1)


def paired_products(params: dict) -> int:
    """The products that share their DSP48 with another (PACK: each pair of output lanes at each of
    its KP*CI inputs; an odd last lane is alone)."""
    p = params
    return 2 * (p["PO"] // 2) * p.get("KP", 1) * p.get("CI", 1) if packed(p) else 0


def dsp_products(params: dict) -> int:
    """The DSP48 multipliers of an instance: one per product, or with PACK one per pair of output
    lanes (an odd last lane alone) at each of its KP*CI inputs."""
    p = params
    lanes = p.get("PO", 1) * p.get("KP", 1) * p.get("CI", 1)
    if packed(p):
        return -(-p["PO"] // 2) * p.get("KP", 1) * p.get("CI", 1)
    return lanes


def packs(layer, ci: int, po: int, kp: int) -> bool:
    """Whether these lanes of ``layer`` (a planner row with its widths) pair output lanes in DSP48s."""
    return layer.kind == "conv" and layer.pairing and po % 2 == 0 and packable(layer.widths.xw, layer.widths.ww)


def plan_params(layer, widths, use_dsp: bool) -> dict:
    """The RTL parameters that set the instance's size, as ``stage`` writes them
    (the rounding and saturation constants, which cost nothing, left out)."""
    (h, w), (oh, ow) = layer.in_shape, layer.out_shape
    params = dict(H=h, W=w, C=layer.channels, KH=layer.kernel[0], KW=layer.kernel[1], SH=layer.stride[0],
                SW=layer.stride[1], PT=layer.pads[0], PL=layer.pads[1], OH=oh, OWD=ow, OC=layer.outputs,
                CI=layer.ci, PO=layer.po, KP=layer.kp, DW=int(layer.kind == "depthwise"), XW=widths.xw,
                XSIGNED=int(widths.x_signed), WW=widths.ww, ACCW=widths.accw, OW=widths.ow,
                USE_DSP=int(use_dsp), FRAME_OVERLAP=frame_overlap(h, oh, layer.stride[0]),
                PACK=int(use_dsp and layer.pairing and packable(widths.xw, widths.ww)))
    params.update(read_regs(params))
    return params


# ---- resources (structure from hw/rtl/ef_conv2d.v; coefficients fitted on Yosys: sim/calibrate.py) ----

def slices_per_pixel(params: dict) -> int:
    """SELS: the channel slices of an input pixel, one per engine step (the input chunks of CI
    channels; depthwise, the groups of PO channels)."""
    p = params
    return p["OC"] // p.get("PO", 1) if p.get("DW", 0) else p["C"] // p.get("CI", 1)


def line_buffer(params: dict):
    """Where the line buffer goes: R rows x 2**clog2(W) columns of C*XW bits, KP read ports; with
    LB_SLICED, R x 2**clog2(W) x 2**clog2(SELS) words of one slice each, in block RAM."""
    p = params
    cells = line_buffer_rows(p["KH"], p.get("SH", 1)) * (1 << max(1, clog2(p["W"])))
    if p.get("LB_SLICED", 0):
        xl = p.get("PO", 1) if p.get("DW", 0) else p.get("CI", 1)
        return map_memory(cells * (1 << clog2(slices_per_pixel(p))), xl * p["XW"], reads=p.get("KP", 1), block=True)
    return map_memory(cells, p["C"] * p["XW"], reads=p.get("KP", 1))


SLICE_MUX_WAYS = 16  # the most ways of a slice multiplexer after a pixel-wide distributed RAM (see below)


def line_buffer_sliced(params: dict) -> int:
    """LB_SLICED: 1 where the whole-pixel line buffer would be distributed RAM read through a slice
    multiplexer of more than SLICE_MUX_WAYS ways, or through several read ports (KP > 1) with a
    multiplexer at all, and the engine spends at least twice the cycles a frame's pixels take to
    write one slice per cycle (SELS cycles a pixel, so the rate never depends on it). The line
    buffer then holds one slice per word in block RAM, the slice in the read address: no pixel-wide
    RAM whose address fans out to every bit of it, and the slice multiplexer moves before the
    write, from the held input pixel (a register) with a cycle of its own. Placed on the ECP5
    (bench/results/timing*.json at a38fcb3 and fdde260), the distributed form reached 100-126 MHz
    with 2-16 ways and one port, 65-87 MHz with 32-256 ways (MobileNet's depthwise stages), and
    92 MHz with 2 ways and 3 ports of 448 bits (ELPV's Conv_3); the sliced form costs block RAM,
    so it is kept to those."""
    p = params
    sels = slices_per_pixel(p)
    if sels <= 1 or (sels <= SLICE_MUX_WAYS and p.get("KP", 1) == 1):
        return 0
    if line_buffer(dict(p, LB_SLICED=0)).kind == "block":
        return 0
    engine = p["OH"] * p["OWD"] * steps_per_pixel(p)
    return int(engine >= 2 * p["H"] * p["W"] * sels)


def line_buffer_word_reg(params: dict) -> int:
    """LB_WORD_REG: 1 where the line buffer is block RAM (its read word registered in the RAM itself);
    0 elsewhere, where a registered word would cost C*XW flip-flops per read port in the fabric and
    the RTL registers the address instead (and holds only the step's channel slice)."""
    return int(line_buffer(params).kind == "block")


def steps_per_pixel(params: dict) -> int:
    """Engine steps per output pixel: the weight ROM's depth (one word per step)."""
    p = params
    groups = p["OC"] // p.get("PO", 1)
    chunks = 1 if p.get("DW", 0) else p["C"] // p.get("CI", 1)
    return groups * p["KH"] * (p["KW"] // p.get("KP", 1)) * chunks


def constant_weight_share(steps: int) -> float:
    """The expected share of a weight ROM's bits that are the same in all ``steps`` words, for
    bits that are independent and even: 2**(1-steps). One step: every weight is a constant."""
    return 2.0 ** (1 - steps)


def weight_word_bits(params: dict) -> int:
    """WWORD: the weight ROM's word, PO*KP*CI weights (one step's)."""
    return params.get("PO", 1) * params.get("KP", 1) * params.get("CI", 1) * params.get("WW", 8)


def weight_rom_rows(steps: int, fold: int) -> int:
    """WROWS: the weight ROM's rows, each of ``fold`` words (a power of two where fold > 1)."""
    return steps if fold <= 1 else 1 << clog2(-(-steps // fold))


def weight_rom(params: dict):
    """Where the weight ROM goes: one word per step, or WFOLD words per row."""
    fold = params.get("WFOLD", 1)
    return map_memory(weight_rom_rows(steps_per_pixel(params), fold), fold * weight_word_bits(params), rom=True)


WROM_BANK_ROWS = 512  # a block RAM's depth at 36 bits: the ECP5's DP16KD (18 kbit); the xc7's RAMB36 at 72
WROM_MUX_WAYS = 4  # the most banks a weight ROM's word is chosen from in the cycle of the RAM's read


def weight_rom_fold(params: dict) -> int:
    """WFOLD: the words a weight ROM row holds side by side. A block-RAM ROM deeper than
    WROM_MUX_WAYS banks of WROM_BANK_ROWS words (mapped in banks by depth, a multiplexer joining
    their outputs after the RAM's clock-to-out, in one cycle) is folded into one bank of that many
    words per row, each registered in stage B2, the step's chosen after the register. Placed on the
    ECP5 (bench/results/timing.json at 9a48719), three banks reached 107.7 MHz (ELPV's Conv_4) and
    115.8 (ResNet-8's Conv_6), five 97.0 (ELPV's Conv_5): a 4-way multiplexer is one LUT6 on the
    xc7 (two LUT4s and a PFUMX on the ECP5), more is another level. It costs (WFOLD-1) words of
    flip-flops, so it is kept to those."""
    if weight_rom(dict(params, WFOLD=1)).kind != "block":
        return 1
    banks = -(-steps_per_pixel(params) // WROM_BANK_ROWS)
    return banks if banks > WROM_MUX_WAYS else 1


def fold_rom(words: list[str], fold: int, bits: int) -> list[str]:
    """The weight ROM's lines with ``fold`` words of ``bits`` bits side by side, as the RTL reads
    them (step s in row s mod WROWS, at position s // WROWS, the first in the low bits)."""
    if fold <= 1:
        return words
    rows = weight_rom_rows(len(words), fold)
    lines = []
    for row in range(rows):
        packed = 0
        for position in range(fold):
            step = position * rows + row
            if step < len(words):
                packed |= int(words[step], 16) << (position * bits)
        lines.append(format(packed, "x"))
    return lines


def read_regs(params: dict) -> dict[str, int]:
    """The line buffer's layout and the memory read registers as the RTL parameters say them:
    LB_SLICED and LB_WORD_REG (above; a sliced line buffer is block RAM); where the
    line buffer's word is block RAM's, LB_OUT_REG: the word registered again (the RAM's output
    register, DOA_REG/DOB_REG on the xc7), so that the RAM's clock-to-out and the multiplexers
    between its blocks are not in one cycle with the channel-slice multiplexer (on the ECP5 that
    cycle limited ResNet-8's Conv_4 and Conv_6 to 92 and 102 MHz, 113 and 111 MHz with it); and
    where the weight ROM is block RAM, WROM_OUT_REG: its word registered again, so that the RAM's
    clock-to-out and the route to the multipliers are not one cycle (ResNet-8's Conv_8, whose line
    buffer is distributed RAM, 98.3 MHz on the ECP5 without it). Either builds stage B2 (docs/rtl.md)."""
    sliced = line_buffer_sliced(params)
    word_reg = line_buffer_word_reg(dict(params, LB_SLICED=sliced))
    regs = {"LB_SLICED": sliced, "LB_WORD_REG": word_reg, "LB_OUT_REG": word_reg,
            "WROM_OUT_REG": int(weight_rom(dict(params, WFOLD=1)).kind == "block"), "WFOLD": weight_rom_fold(params)}
    regs["OUT_CREDIT"] = out_credit(dict(params, **regs))
    return regs


# the registers past stage A that one stall would enable: the model's flip-flop features of them
STALL_ENABLED = ("operands", "operands_fabric", "pack", "x_copies", "b2_words", "b2_weights", "terms_lut", "terms_dsp",
                 "terms_soft", "tree", "acc")
CREDIT_MIN_ENABLES = 4096  # a stall net's fan-out past which the RTL's flow control is by credit
CREDIT_MIN_STEPS = 32  # a pixel's steps: more than twice the stages of any pipeline here, so no cycle lost


def stall_enables(params: dict) -> int:
    """The registers past stage A that a stall would enable (features of ``model``, uncalibrated)."""
    features = model("ef_conv2d", dict(params, OUT_CREDIT=0)).features["ff"]
    return round(sum(features.get(name, 0.0) for name in STALL_ENABLED))


def out_credit(params: dict) -> int:
    """OUT_CREDIT: 1 where a stall would enable more than CREDIT_MIN_ENABLES registers and a pixel
    takes at least CREDIT_MIN_STEPS steps. The RTL then has no enable past stage A (flow control by
    credit, an output register more, hw/rtl/ef_conv2d.v): ELPV's Conv_3, about 10 k registers on one
    stall net, 95.0 MHz on the ECP5 with 9.3 of its 10.5 ns in routing. Where a pixel takes fewer
    steps than the pipeline has stages, credits would cost cycles (two pixels begun at most); where
    the net is small, the output register would cost flip-flops for nothing."""
    return int(steps_per_pixel(params) >= CREDIT_MIN_STEPS and stall_enables(params) > CREDIT_MIN_ENABLES)


LUT_PART_BITS = 2  # weight bits per part of a shift-and-add multiplier (hw/rtl/ef_conv2d.v PB)


def adder_tree(terms: int, pw: int, accw: int, per_stage: int = 2) -> tuple[int, int, int]:
    """A lane's adder tree in hw/rtl/ef_conv2d.v (``terms`` words of ``pw`` bits added in pairs,
    a register after every ``per_stage`` levels (LPS: 1 after DSP products, 2 after shift-and-add
    parts) and after the last): its word width, its adders and the bits its registers hold. The
    RTL's words are all TW bits wide, but a sum at level l has pw + l bits that differ: Yosys
    narrows the adders (wreduce) and merges the registers' copies of the sign (opt_merge), so a
    register at level l keeps pw + l bits (the detector's 360-term tree: about 3,000 where TW
    bits a word would be 3,800)."""
    levels = (terms - 1).bit_length() if terms > 1 else 0
    tw = min(pw + levels, accw)
    words, adders, registered_bits = terms, 0, 0
    for level in range(1, levels + 1):
        adders += words // 2
        words = (words + 1) // 2
        if level % per_stage == 0 or level == levels:
            registered_bits += words * min(pw + level, accw)
    return tw, adders, registered_bits


def model(module: str, params: dict) -> Model:
    """The instance as structure: the line buffer (R rows x 2**clog2(W) columns of C*XW bits, KP
    read ports; its word registered, and again (LB_OUT_REG), or outside block RAM its address:
    LB_WORD_REG; or, LB_SLICED, one slice per word in block RAM, written one slice per cycle from
    the offered pixel, read without a slice multiplexer), the weight ROM (one word of PO*KP*CI
    weights per step, registered again where it is block RAM: WROM_OUT_REG) and the bias ROM (one
    word of PO biases per group, read two stages before the accumulator and registered again);
    either second register builds stage B2, where the whole step waits one cycle; PO*KP*CI
    multipliers (DSP48s, or shift-and-add logic with USE_DSP=0, in parts of LUT_PART_BITS weight
    bits, one adder level each); the pipeline: the read slice (one copy per lane where PO DSP
    lanes share it) and the weights registered, the products (or parts) registered, each lane's
    adder tree registered after every level (DSP products) or every two (LUT), PO accumulators,
    the requantization in two registered steps, and one output register of OC channels (the
    groups shifted into it; with OUT_CREDIT a second one). WFOLD: the weight ROM read as WFOLD
    words a row, all registered in B2. FRAME_OVERLAP: a few registers (``overlap_registers``)."""
    p = params
    h, w, c, oc = p["H"], p["W"], p["C"], p["OC"]
    kh, kw, sh = p["KH"], p["KW"], p.get("SH", 1)
    ci, po, kp, dw = p.get("CI", 1), p.get("PO", 1), p.get("KP", 1), p.get("DW", 0)
    xw, ww, accw, ow = p.get("XW", 8), p.get("WW", 8), p.get("ACCW", 32), p.get("OW", 8)
    use_dsp = p.get("USE_DSP", 1)
    lanes = po * kp * ci
    groups = oc // po
    chunks = 1 if dw else c // ci
    xl = po if dw else ci
    sels = groups if dw else chunks
    steps = steps_per_pixel(p)
    pw = xw + 1 + ww
    parts = 1 if use_dsp else -(-ww // LUT_PART_BITS)
    nt = kp * ci * parts
    tw, adders, tree_bits = adder_tree(nt, pw, accw, 1 if use_dsp else 2)
    lb = line_buffer(p)
    sliced = int(bool(p.get("LB_SLICED", 0)) and sels > 1)
    word_reg = p.get("LB_WORD_REG", 1) or sliced
    pack = packed(p)
    pairs = po // 2 if pack else 0
    # stage C's slice, one per lane sharing it (PACK: one per pair)
    x_copies = (-(-po // 2) if pack else po) if use_dsp and not dw and po > 1 else 1
    # stage B2: the line buffer's word (or, where its address is registered, the step's slice), the
    # weights and the step's flags again
    b2 = bool((word_reg and p.get("LB_OUT_REG", 0)) or p.get("WROM_OUT_REG", 0))
    wrom = weight_rom(p)
    # a weight ROM in logic behind three registers (B, B2, C) keeps none of its words: Yosys
    # registers its address instead (FFs counted by name: the detector's Conv_2 has 4,679 part,
    # 3,356 tree, 792 slice and 792 line-buffer bits and not one weight bit; a 36-step ROM of 192
    # bits has 179 in B and 179 in C without B2, none with it)
    rom_in_address = wrom.kind == "logic" and b2
    fold = p.get("WFOLD", 1)
    brom = map_memory(groups, po * accw, rom=True)
    m = Model()
    m.exact = Resources(dsp=(dsp_products(p) if pack else lanes * dsp_per_product(xw + 1, ww)) if use_dsp else 0,
                        bram18=lb.bram18 + wrom.bram18 + brom.bram18, lutram=lb.lutram,
                        # a registered word (sync read) outside block RAM; else the held slice and its flag
                        ff=lb.out_ff if word_reg else kp * (xl * xw + 1))
    counters = clog2(groups) + clog2(steps) + clog2(chunks) + 2 * clog2(max(kh, kw) + 1) + sliced * clog2(sels)
    m.add("lut", "const", 1)
    m.add("lut", "counters", counters)
    # a weight bit equal in every step of the ROM is a constant, and Yosys folds what it feeds: of
    # S steps' random bits a share 2**(1-S) are (dense_head_ref's 3-step stem: a quarter)
    constant = constant_weight_share(steps)
    m.add("lut", "mul_lut", (not use_dsp) * lanes * (xw + 1) * ww * (1 - constant))
    m.add("lut", "mul_lut_constant", (not use_dsp) * lanes * (xw + 1) * ww * constant)
    m.add("lut", "tree_lut", (not use_dsp) * po * adders * tw)
    m.add("lut", "tree_dsp", use_dsp * po * adders * tw)
    dsps = dsp_per_product(xw + 1, ww)
    m.add("lut", "split_dsp", use_dsp * lanes * max(0, dsps - 1) * accw)  # partial products
    m.add("lut", "soft_mul", use_dsp * (dsps == 0) * lanes * (xw + 1) * ww)  # too narrow for a DSP48: LUTs
    m.add("lut", "lane", po * accw)
    m.add("lut", "round", po * accw * (p.get("SHIFT", 1) > 0))
    m.add("lut", "out", po * ow)
    m.add("lut", "select", (not sliced) * kp * xl * xw * (sels - 1))
    m.add("lut", "write_select", sliced * xl * xw * (sels - 1))  # from the held input pixel, a register
    m.add("lut", "pixel", kp * xl * xw)
    m.add("lut", "positions", kp)  # each read position's address and inside-the-map test
    m.add("lut", "wrom", rom_columns(steps, wrom.width) * rom_luts_per_bit(steps) * (wrom.kind == "logic"))
    m.add("lut", "wrom_words", rom_columns(steps, wrom.width) * steps / 32 * (wrom.kind == "logic"))
    m.add("lut", "brom", rom_columns(groups, brom.width) * rom_luts_per_bit(groups) * (brom.kind == "logic"))
    m.add("lut", "mem_mux", lb.mux_bits + wrom.mux_bits + brom.mux_bits + (fold - 1) * lanes * ww)  # + the fold's
    m.add("ff", "const", 1)
    m.add("ff", "counters", counters)
    m.add("ff", "acc", po * accw)
    m.add("ff", "bias", rom_columns(groups, po * accw) * (brom.kind == "logic") * (groups > 1))
    rom_word_regs = rom_columns(steps, wrom.width) * (wrom.kind == "logic" and not b2) * (steps > 1)
    m.add("ff", "weights_lut", (not use_dsp) * rom_word_regs)
    m.add("ff", "weights_dsp", use_dsp * rom_word_regs)
    # the step's slice and weights, registered again: a DSP48's A and B registers where the products
    # are DSPs, the fabric's where they are LUTs (shift-and-add, or too narrow for a DSP48)
    fabric_products = (not use_dsp) or dsp_per_product(xw + 1, ww) == 0
    m.add("ff", "operands", (not fabric_products) * (kp * xl * xw + (lanes - 2 * pairs * kp * ci) * ww))
    m.add("ff", "operands_fabric", fabric_products * (x_copies * kp * xl * xw + (not rom_in_address) * lanes * ww))
    m.add("ff", "x_copies", (x_copies - 1) * kp * xl * xw)
    # PACK: a pair's multiplicand {w_hi - sign(w_lo), w_lo} from the step's weights (a decrement),
    # registered in stage C (the DSP48's A register), 2*WW+1 bits that differ
    m.add("lut", "pack", pairs * kp * ci * (ww + 1))
    m.add("ff", "pack", pairs * kp * ci * (2 * ww + 1))
    m.add("ff", "bias_again", po * accw)  # the bias ROM's word registered again before the accumulator
    m.add("ff", "b2_words", b2 * kp * (c if word_reg and not sliced else xl) * xw)
    m.add("ff", "b2_weights", b2 * (not rom_in_address) * fold * lanes * ww)  # every word of a folded row
    m.add("ff", "b2_flags", b2 * (5 + clog2(groups) + clog2(sels) + kp * word_reg))
    # a part's register holds its product of PB weight bits: the bits below its shift are zero and
    # those above are copies of its sign, which Yosys removes and merges; an unsigned input's part
    # is xw + PB bits (no sign), a signed one's two more (the detector's 360 parts of 11-bit
    # unsigned inputs: about 13 bits each)
    part_bits = min(pw, xw + LUT_PART_BITS + 2 * bool(p.get("XSIGNED", 1)))
    m.add("ff", "terms_lut", (not use_dsp) * po * nt * part_bits * (1 - constant))
    m.add("ff", "terms_lut_constant", (not use_dsp) * po * nt * part_bits * constant)
    m.add("ff", "terms_dsp", use_dsp * (dsps > 0) * po * nt * pw)
    # products too narrow for a DSP48 are LUTs, so their product registers are the fabric's (a
    # DSP48 holds them in its own M register): `convs`' 4-bit stages
    m.add("ff", "terms_soft", use_dsp * (dsps == 0) * po * nt * pw)
    m.add("ff", "tree", po * tree_bits)
    m.add("ff", "round", po * (ow + 2))
    m.add("ff", "out", oc * ow * (1 + p.get("OUT_CREDIT", 0)))  # OUT_CREDIT: the result and the output register
    m.add("ff", "overlap", overlap_registers(p))  # FRAME_OVERLAP: the ahead flag, row bounds, row slots
    m.add("lut", "overlap", overlap_registers(p))  # their comparisons and adders, about a LUT a bit
    return m


def resources(module: str, params: dict) -> Resources:
    """Predicted LUT, LUT RAM, FF, DSP and block RAM of one ef_conv2d instance with RTL ``params``."""
    return predict(module, model(module, params))


def layer_plan(model, node):
    """The planner's row of a convolution (``kind`` conv or depthwise; the planner gives it lanes)."""
    from ..plan import LayerPlan

    weight = model.get_initializer(node.input[1])
    _, c, h, w = model.get_tensor_shape(node.input[0])
    _, oc, oh, ow = model.get_tensor_shape(node.output[0])
    kind = "depthwise" if attr(node, "group", 1) != 1 else "conv"
    return LayerPlan(node.name, kind, oh, oh * ow, c, oc, in_pixels=h * w, macs=oh * ow * int(weight.size),
                     params=int(weight.size) + oc, op=node.op_type, in_shape=(h, w), out_shape=(oh, ow),
                     **window_geometry(node, weight.shape[2:]))


# ---- the RTL instance ------------------------------------------------------------------------

def stage(model, p, node, inputs: list[StreamInfo], lanes) -> Stage:
    """ef_conv2d: ROM words in the engine's step order; depthwise lanes take one channel each."""
    x = inputs[0]
    x_t = p.tensors[node.input[0]]
    w_t, b_t, acc_t = (p.layers[node.name][k] for k in ("weight", "bias", "accum"))
    weight, ww = aligned_weights(model, node.input[1], x_t, w_t, acc_t)  # (OC, C/group, KH, KW)
    bias = align(to_int(model.get_initializer(node.input[2]), b_t), b_t.frac, acc_t.frac)
    depthwise = attr(node, "group", 1) != 1
    oc, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    c = x.channels
    ci, po, kp = lanes.ci, lanes.po, lanes.kp
    tensor, out_t, omin, omax = saturation(model, p, node)
    shift = acc_t.frac - out_t.frac  # negative: an exact left shift (ef_requant.vh)
    if depthwise:
        words = [hex_word([weight[g * po + lane, 0, ky, kx + j] for lane in range(po) for j in range(kp)], ww)
                 for g in range(oc // po) for ky in range(kh) for kx in range(0, kw, kp)]
    else:
        words = [hex_word([weight[g * po + lane, ch * ci + i, ky, kx + j] for lane in range(po) for j in range(kp)
                           for i in range(ci)], ww)
                 for g in range(oc // po) for ky in range(kh) for kx in range(0, kw, kp) for ch in range(c // ci)]
    biases = [hex_word(list(bias[g * po:(g + 1) * po]), acc_t.width) for g in range(oc // po)]
    window = Window.of(node, [kh, kw])
    params = dict(window_params(window, x.h, x.w), C=c, OC=oc, CI=ci, PO=po, KP=kp, DW=int(depthwise),
                  XW=x_t.width, XSIGNED=int(x_t.signed), WW=ww, ACCW=acc_t.width, SHIFT=shift,
                  OW=out_t.width, OMIN=omin, OMAX=omax,
                  PACK=int(bool(lanes.dsp and lanes.pairing and packable(x_t.width, ww))))
    params.update(read_regs(params))
    words = fold_rom(words, params["WFOLD"], weight_word_bits(params))
    return Stage(node.name, "ef_conv2d", params, {"WFILE": words, "BFILE": biases}, [], [("out", tensor)], oc,
                 out_t.width, lanes.cycles, lanes.multipliers, node.name, window_need(window, x.h, x.w))


# ---- precision (the knobs the search sets, the types that follow; hw/precision.py) ----------

def knobs(model, node, ranges, is_output: bool) -> list:
    """Weights, bias and (unless a fused activation sets it) the result are searched."""
    return [param_knob(model, node.name, "weight", node.input[1]), param_knob(model, node.name, "bias", node.input[2]),
            *result_knob(model, node, ranges, is_output)]


def derive_types(model, node, p, by_tensor: dict) -> None:
    """An exact accumulator (the only rounding is the final cast), the fused activation's result
    type, else the result trimmed to the accumulator's fractional bits."""
    weight = model.get_initializer(node.input[1])
    layer = p.layers[node.name]
    acc = exact_accumulator(p.tensors[node.input[0]], layer["weight"], layer["bias"], int(np.prod(weight.shape[1:])))
    p.set_layer(node.name, "accum", acc)
    if fused_result(model, node, p, by_tensor) is None:
        drop_unused_fraction(p, node.name, node.output[0], acc)


# ---- hls4ml (its configuration and its quirks; hw/hls.py) -----------------------------------

def hls_precision(cl, node, p) -> dict[str, dict[str, str]]:
    """Its own types, and its weights' and bias's (hls4ml's constant layers ``<node>_param0, 1``)."""
    return hls_entries(node, p, ("weight", "bias"))


def hls_graph(cl, node) -> None:
    """hls4ml 1.3's ONNX path writes a depthwise kernel (C, KH, KW, 1) channel-major, then reads it
    as if position-major (weight [k * C + c] for position k of channel c): the emulator was wrong
    on every 3x3 depthwise layer (1x1 ones, with one position, were right). Storing it
    position-major in ``cl`` (a copy) makes what it reads the real kernel (tests/hw: the emulator
    is bit-exact with the integer model)."""
    if attr(node, "group", 1) == 1:
        return
    w = cl.get_initializer(node.input[1])  # (C, KH, KW, 1) in the channels-last graph
    c = w.shape[0]
    cl.set_initializer(node.input[1], np.ascontiguousarray(w.reshape(c, -1).T).reshape(w.shape))


# ---- capability rule (its rows of the table in hw/capabilities.py; docs/onnx-support.md) ----

CONV_TESTS = ("tests/hw/test_features.py::test_feature_is_bit_exact[convs]",
              "tests/hw/test_features.py::test_feature_is_bit_exact[vgg_rgb]",
              "tests/hw/test_features.py::test_feature_is_bit_exact[post_add_bn]")

def check_conv(node, g: GraphView) -> None:
    weight = g.constant(node, 1, "W (input 1)")
    if weight.ndim != 4:
        raise Refusal("W (input 1)", f"weight of rank {weight.ndim}: only 2-D convolutions are built")
    if len(node.input) > 2 and node.input[2]:
        g.constant(node, 2, "B (input 2)")
    check_spatial(node, list(attribute(node, "kernel_shape", weight.shape[2:])))
    group = attribute(node, "group", 1)
    if group != 1:
        channels = weight.shape[1] * group
        if not (weight.shape[1] == 1 and weight.shape[0] == group == channels):
            raise Refusal("group", f"group={group} with {channels} input and {weight.shape[0]} output channels: only "
                          "group=1 and depthwise (group = input channels = output channels) are built")


CAPABILITIES: tuple[Capability, ...] = (
    Capability("Conv", "a Conv with its bias (BatchNorm and bias Add folded in)",
               f"2-D; kernels and strides of any shape (sides 1..{MAX_KERNEL}, strides 1..{MAX_STRIDE}); symmetric or "
               "asymmetric pads smaller than the kernel, auto_pad; group 1 or depthwise (group = channels); "
               "with or without bias; dilation refused",
               check_conv, "ef_conv2d", CONV_TESTS + ("tests/hw/test_capabilities.py::test_keras_style_padding_is_bit_exact",
                                                      "tests/hw/test_capabilities.py::test_refused_up_front")),
)
