/*
 * zero_overlap.c — why batching the zeroing of a prefault window costs
 * throughput on a memory-bandwidth-bound machine (docs/design.md,
 * "Performance notes").
 *
 * Each thread clears its own pre-touched buffer 4 KiB page by page, as a
 * fault path does, and spends `W` iterations of dependent ALU work per page
 * (the rest of a fault: metadata, PTE, MMU walk). `window=1` interleaves:
 * clear one page, do its work. `window=9` batches, as prefault order 3
 * does: clear nine pages, then do their work. `window=0` is plain memset,
 * the zero-fill limit. A locked instruction follows each batch, as the PTE
 * compare-and-swap does. Rates are medians of 11 rounds, the three
 * patterns alternating within each round.
 *
 *   gcc -O2 -pthread docs/models/zero_overlap.c -o /tmp/zero_overlap
 *   /tmp/zero_overlap 20; /tmp/zero_overlap 50; /tmp/zero_overlap 100
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define SZ (1UL << 29)
#define ROUNDS 11

static int W, WIN;
static pthread_barrier_t bar;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline void work(long *x, int n) {
    for (int i = 0; i < n; i++) {
        __asm__ volatile("" ::: "memory");
        *x = *x * 31 + i;
    }
}

static void *run(void *arg) {
    char *b = arg;
    long x = 0;
    pthread_barrier_wait(&bar);
    if (WIN == 0) {
        for (size_t o = 0; o < SZ; o += 4096)
            memset(b + o, 0, 4096);
        return NULL;
    }
    for (size_t o = 0; o + WIN * 4096UL <= SZ; o += WIN * 4096UL) {
        for (int k = 0; k < WIN; k++)
            memset(b + o + k * 4096UL, 0, 4096);
        __atomic_fetch_add(&x, 1, __ATOMIC_SEQ_CST);
        for (int k = 0; k < WIN; k++) {
            work(&x, W);
            b[o + k * 4096UL] = 1;
        }
    }
    return (void *)x;
}

static int cmp(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return d < 0 ? -1 : d > 0;
}

int main(int argc, char **argv) {
    W = argc > 1 ? atoi(argv[1]) : 50;
    char *bufs[2];
    for (int i = 0; i < 2; i++) {
        bufs[i] = mmap(0, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (bufs[i] == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        madvise(bufs[i], SZ, MADV_HUGEPAGE);
        memset(bufs[i], 1, SZ);
    }
    int wins[] = {0, 1, 9};
    double res[2][3][ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        for (int t = 1; t <= 2; t++)
            for (int c = 0; c < 3; c++) {
                WIN = wins[c];
                pthread_barrier_init(&bar, NULL, t);
                pthread_t th[2];
                double s = now();
                for (int i = 0; i < t; i++)
                    pthread_create(&th[i], NULL, run, bufs[i]);
                for (int i = 0; i < t; i++)
                    pthread_join(th[i], NULL);
                res[t - 1][c][r] = t * (SZ / 4096) / (now() - s) / 1e6;
                pthread_barrier_destroy(&bar);
            }
    for (int t = 0; t < 2; t++)
        for (int c = 0; c < 3; c++) {
            qsort(res[t][c], ROUNDS, sizeof(double), cmp);
            double m = res[t][c][ROUNDS / 2], z = res[t][0][ROUNDS / 2];
            printf("threads=%d window=%d W=%d: %.2f M pages/s (%.1f%% of memset)\n", t + 1, wins[c], W, m,
                   100 * m / z);
        }
    return 0;
}
