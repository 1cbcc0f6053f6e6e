// Compiled Verilator harness for a generated accelerator top (no cocotb): streams frames of 8-bit
// pixels through s_axis, collects the scores from m_axis, and records per frame the cycle its
// first pixel was accepted and the cycle its last score left. Optional random idle cycles on the
// input and backpressure on the output (percentages, seeded).
//
// usage: harness <pixels.bin> <frames> <beats_per_frame> <outputs> <scores.out> [idle%] [stall%] [seed]
// scores.out: one line per frame: "<first_in_cycle> <last_out_cycle> <score0> <score1> ..."
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
#include "verilated.h"
#include TOP_HEADER

int main(int argc, char** argv) {
    if (argc < 6) { std::fprintf(stderr, "usage: %s pixels.bin frames beats outputs scores.out [idle stall seed]\n", argv[0]); return 2; }
    const long frames = std::atol(argv[2]), beats = std::atol(argv[3]), outputs = std::atol(argv[4]);
    const int idle = argc > 6 ? std::atoi(argv[6]) : 0, stall = argc > 7 ? std::atoi(argv[7]) : 0;
    std::mt19937 rng(argc > 8 ? std::atoi(argv[8]) : 1);
    std::vector<uint8_t> pixels(frames * beats);
    FILE* in = std::fopen(argv[1], "rb");
    if (!in || std::fread(pixels.data(), 1, pixels.size(), in) != pixels.size()) { std::fprintf(stderr, "cannot read %s\n", argv[1]); return 2; }
    std::fclose(in);
    FILE* out = std::fopen(argv[5], "w");
    if (!out) { std::fprintf(stderr, "cannot write %s\n", argv[5]); return 2; }

    VerilatedContext ctx;
    TOP_CLASS top(&ctx);
    top.clk = 0; top.rst_n = 0; top.s_axis_tvalid = 0; top.m_axis_tready = 0;
    for (int i = 0; i < 4; ++i) { top.clk = !top.clk; top.eval(); }
    top.rst_n = 1;

    long sent = 0, frame_out = 0, beat_out = 0;
    uint64_t cycle = 0;
    const uint64_t limit = 400000000ULL;
    std::vector<long> first_in(frames, -1);
    std::vector<int64_t> scores(outputs);
    while (frame_out < frames && cycle < limit) {
        // drive inputs for this cycle (before the rising edge)
        bool offer = sent < frames * beats && (int)(rng() % 100) >= idle;
        top.s_axis_tvalid = offer;
        if (offer) { top.s_axis_tdata = pixels[sent]; top.s_axis_tlast = (sent % beats) == beats - 1; }
        top.m_axis_tready = (int)(rng() % 100) >= stall;
        top.clk = 0; top.eval();
        bool in_fire = offer && top.s_axis_tready;
        bool out_fire = top.m_axis_tvalid && top.m_axis_tready;
        if (out_fire) {
            int64_t raw = (int64_t)top.m_axis_tdata;
            scores[beat_out] = raw;
            bool last = top.m_axis_tlast;
            if (++beat_out == outputs || last) {
                std::fprintf(out, "%ld %llu", first_in[frame_out], (unsigned long long)cycle);
                for (long i = 0; i < outputs; ++i) std::fprintf(out, " %lld", (long long)scores[i]);
                std::fprintf(out, "%s\n", (beat_out == outputs && last) ? "" : " framing-error");
                beat_out = 0; ++frame_out;
            }
        }
        if (in_fire) { if (sent % beats == 0) first_in[sent / beats] = (long)cycle; ++sent; }
        top.clk = 1; top.eval();
        ++cycle;
    }
    std::fclose(out);
    top.final();
    if (frame_out < frames) { std::fprintf(stderr, "timeout after %llu cycles: %ld of %ld frames out\n", (unsigned long long)cycle, frame_out, frames); return 1; }
    return 0;
}
