/* tests/bench/peak.c: the machine's fused multiply-add peak, for `make bench` to report the
 * achieved GFLOP/s of the convolutions against.
 *     build/tests/bench_peak [threads]     (default: the cores this process may use)
 * Each thread runs independent chains of FMAs on registers (enough chains to cover the FMA
 * latency on every x86 core of the last decade) for about 0.3 s, once with 512-bit vectors
 * where the CPU has AVX-512F and once with 256-bit (AVX2 + FMA); the figure is 2 flops per
 * lane per FMA over the wall time of the slowest thread.  Compiled with target attributes,
 * so the binary runs (and reports only what works) on any x86-64. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <immintrin.h>

#define CHAINS 12
#define ROUNDS (1L << 24)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static volatile float sink;

__attribute__((target("avx512f"))) static double run512(long rounds) {
    __m512 acc[CHAINS], a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long r = 0; r < rounds; r++)
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    sink = _mm512_reduce_add_ps(s);
    return 2.0 * 16 * CHAINS * (double)rounds;
}

__attribute__((target("avx2,fma"))) static double run256(long rounds) {
    __m256 acc[CHAINS], a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long r = 0; r < rounds; r++)
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    __m256 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
    float v[8];
    _mm256_storeu_ps(v, s);
    sink = v[0];
    return 2.0 * 8 * CHAINS * (double)rounds;
}

typedef struct {
    int wide;
    long rounds;
    double flops;
} Job;

static pthread_barrier_t barrier;

static void *worker(void *p) {
    Job *j = p;
    pthread_barrier_wait(&barrier);
    j->flops = j->wide ? run512(j->rounds) : run256(j->rounds);
    return NULL;
}

/* GFLOP/s of `threads` threads running the kernel at once. */
static double measure(int wide, int threads) {
    pthread_t tid[256];
    Job jobs[256];
    /* calibrate the rounds to ~0.3 s on one thread */
    double t0 = now();
    double f = wide ? run512(ROUNDS / 64) : run256(ROUNDS / 64);
    double dt = now() - t0;
    long rounds = (long)(ROUNDS / 64 * (0.3 / (dt > 1e-6 ? dt : 1e-6)));
    (void)f;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
    for (int t = 0; t < threads; t++) {
        jobs[t] = (Job){.wide = wide, .rounds = rounds};
        pthread_create(&tid[t], NULL, worker, &jobs[t]);
    }
    pthread_barrier_wait(&barrier);
    t0 = now();
    double total = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        total += jobs[t].flops;
    }
    dt = now() - t0;
    pthread_barrier_destroy(&barrier);
    return total / dt / 1e9;
}

int main(int argc, char **argv) {
    cpu_set_t set;
    int threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    if (argc > 1) threads = atoi(argv[1]);
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "bench_peak: threads must be 1..256\n");
        return 2;
    }
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f"), has256 = __builtin_cpu_supports("avx2") &&
                                                             __builtin_cpu_supports("fma");
    /* best of three, as for the other benchmarks */
    double p512 = 0, p256 = 0;
    for (int rep = 0; rep < 3; rep++) {
        if (has512) {
            double g = measure(1, threads);
            if (g > p512) p512 = g;
        }
        if (has256) {
            double g = measure(0, threads);
            if (g > p256) p256 = g;
        }
    }
    printf("{\"threads\": %d, \"avx512_gflops\": %.1f, \"avx2_gflops\": %.1f}\n", threads, p512, p256);
    return 0;
}
