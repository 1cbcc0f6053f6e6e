// Compiled Verilator harness for a generated accelerator top (no cocotb): streams frames of 8-bit
// pixels through s_axis, collects the scores from m_axis, and records per frame the cycle its
// first pixel was accepted and the cycle its last score left. Optional random idle cycles on the
// input and backpressure on the output (percentages, seeded). Counts, per stage, the cycles its
// stage_busy bit was high. Stops with exit status 3 when nothing moves for <watchdog> cycles
// (a deadlock), instead of hanging.
//
// usage: harness <pixels.bin> <frames> <beats_per_frame> <outputs> <scores.out> [idle%] [stall%] [seed]
//                [watchdog_cycles] [busy.out]
// scores.out: one line per frame: "<first_in_cycle> <last_out_cycle> <score0> <score1> ..."
// busy.out: one line per stage: "<busy_cycles>"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <type_traits>
#include <vector>
#include "verilated.h"
#include TOP_HEADER

#ifndef STAGES
#define STAGES 1
#endif

template <typename T>
static bool bit_of(const T& value, int i) {
    if constexpr (std::is_integral_v<T>) return (value >> i) & 1;
    else return (value[i / 32] >> (i % 32)) & 1;  // VlWide: 32-bit words
}

int main(int argc, char** argv) {
    if (argc < 6) { std::fprintf(stderr, "usage: %s pixels.bin frames beats outputs scores.out [idle stall seed watchdog busy.out]\n", argv[0]); return 2; }
    const long frames = std::atol(argv[2]), beats = std::atol(argv[3]), outputs = std::atol(argv[4]);
    const int idle = argc > 6 ? std::atoi(argv[6]) : 0, stall = argc > 7 ? std::atoi(argv[7]) : 0;
    std::mt19937 rng(argc > 8 ? std::atoi(argv[8]) : 1);
    const uint64_t watchdog = argc > 9 ? std::strtoull(argv[9], nullptr, 10) : 50000000ULL;
    const char* busy_path = argc > 10 ? argv[10] : nullptr;
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
    uint64_t cycle = 0, last_move = 0;
    std::vector<long> first_in(frames, -1);
    std::vector<int64_t> scores(outputs);
    std::vector<uint64_t> busy(STAGES, 0);
    while (frame_out < frames) {
        if (cycle - last_move > watchdog) {
            std::fprintf(stderr, "deadlock: nothing moved for %llu cycles (cycle %llu, %ld of %ld beats in, %ld of %ld frames out)\n",
                         (unsigned long long)watchdog, (unsigned long long)cycle, sent, frames * beats, frame_out, frames);
            std::fclose(out);
            return 3;
        }
        // drive inputs for this cycle (before the rising edge)
        bool offer = sent < frames * beats && (int)(rng() % 100) >= idle;
        top.s_axis_tvalid = offer;
        if (offer) { top.s_axis_tdata = pixels[sent]; top.s_axis_tlast = (sent % beats) == beats - 1; }
        top.m_axis_tready = (int)(rng() % 100) >= stall;
        top.clk = 0; top.eval();
        bool in_fire = offer && top.s_axis_tready;
        bool out_fire = top.m_axis_tvalid && top.m_axis_tready;
        for (int s = 0; s < STAGES; ++s) busy[s] += bit_of(top.stage_busy, s);
        if (in_fire || out_fire) last_move = cycle;
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
    if (busy_path) {
        FILE* b = std::fopen(busy_path, "w");
        if (!b) { std::fprintf(stderr, "cannot write %s\n", busy_path); return 2; }
        for (int s = 0; s < STAGES; ++s) std::fprintf(b, "%llu\n", (unsigned long long)busy[s]);
        std::fclose(b);
    }
    top.final();
    return 0;
}
