/*
 * window_l1.c — why a prefault window of nine pages costs more than its
 * CPU work on this machine (docs/design.md, "Performance notes").
 *
 * Each variant clears a pre-touched 1 GiB buffer 4 KiB page by page, as a
 * fault path does: per page a clear, five metadata stores (a 64-byte frame
 * descriptor per page) and a compare-and-swap on an 8-byte "PTE"; with
 * window 9 the pages are cleared nine at a time and the eight extra pages are
 * then "touched" (a locked OR on the PTE, a one-byte store), as the MMU's
 * first access to a prefaulted page does. `chain` adds, once per fault (per
 * page for window 1, per window for window 9), a chain of 40 dependent loads
 * over 40 cache lines of an 18 KiB structure — the shape of a fault handler's
 * entry (CPU -> mm -> lock -> VMA tree -> page-table walk -> allocator), whose
 * data is small enough to stay in the 32 KiB L1 between two faults that clear
 * 4 KiB, but not between two faults that clear 36 KiB.
 *
 * Rates are per round against memset measured at both ends of the round
 * (the higher of the two), medians of the rounds: the same pairing as
 * `oxmm bench faults`.
 *
 *   gcc -O2 docs/models/window_l1.c -o /tmp/window_l1 && /tmp/window_l1 11
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define SZ (1UL << 30)
#define PAGES (SZ / 4096)
#define CHAIN 40
#define STRIDE 56 /* u64s: 7 cache lines between links */

static char *buf;
static uint64_t *meta, *pte, *chain;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double memset_pass(void) {
    double s = now();
    for (size_t p = 0; p < PAGES; p++)
        memset(buf + p * 4096, 0, 4096);
    return (now() - s) / PAGES * 1e9;
}

static uint64_t walk_chain(void) {
    uint64_t i = 0;
    for (int k = 0; k < CHAIN; k++)
        i = __atomic_load_n(&chain[i], __ATOMIC_RELAXED);
    return i;
}

static void fault(size_t p) {
    memset(buf + p * 4096, 0, 4096);
    for (int w = 0; w < 5; w++)
        __atomic_store_n(&meta[p * 8 + w], p, __ATOMIC_RELAXED);
    uint64_t expect = 0;
    __atomic_compare_exchange_n(&pte[p], &expect, (p << 12) | 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

static double run(int win, int with_chain) {
    uint64_t sink = 0;
    double s = now();
    for (size_t p = 0; p < PAGES; p += win) {
        int n = PAGES - p < (size_t)win ? (int)(PAGES - p) : win;
        if (with_chain)
            sink += walk_chain();
        for (int k = 0; k < n; k++)
            fault(p + k);
        for (int k = 1; k < n; k++) {
            __atomic_fetch_or(&pte[p + k], 2, __ATOMIC_RELAXED);
            *(volatile char *)(buf + (p + k) * 4096) = 1;
        }
    }
    double ns = (now() - s) / PAGES * 1e9;
    memset(pte, 0, PAGES * sizeof *pte);
    if (sink == 1)
        puts("");
    return ns;
}

static int cmp(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return d < 0 ? -1 : d > 0;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 11;
    if (rounds < 1 || rounds > 99)
        rounds = 11;
    buf = mmap(0, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    meta = mmap(0, PAGES * 64, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pte = mmap(0, PAGES * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    chain = calloc(CHAIN * STRIDE + 8, sizeof *chain);
    if (buf == MAP_FAILED || meta == MAP_FAILED || pte == MAP_FAILED || !chain) {
        perror("allocating");
        return 1;
    }
    /* Pre-touch everything, so no host first-touch fault is timed. */
    madvise(buf, SZ, MADV_HUGEPAGE);
    memset(buf, 1, SZ);
    memset(meta, 0, PAGES * 64);
    memset(pte, 0, PAGES * 8);
    for (int k = 0; k < CHAIN; k++)
        chain[k * STRIDE] = ((k + 1) % CHAIN) * STRIDE;

    const int wins[] = {1, 1, 9, 9};
    const int chains[] = {0, 1, 0, 1};
    double ratio[4][99], lim[99];
    for (int r = 0; r < rounds; r++) {
        double m0 = memset_pass();
        double t[4];
        for (int v = 0; v < 4; v++)
            t[v] = run(wins[v], chains[v]);
        double m1 = memset_pass();
        lim[r] = m0 < m1 ? m0 : m1;
        for (int v = 0; v < 4; v++)
            ratio[v][r] = lim[r] / t[v];
    }
    qsort(lim, rounds, sizeof(double), cmp);
    printf("memset: %.1f ns per 4 KiB page (median of %d rounds)\n", lim[rounds / 2], rounds);
    for (int v = 0; v < 4; v++) {
        qsort(ratio[v], rounds, sizeof(double), cmp);
        printf("window %d, %s: %.1f%% of memset (paired median)\n", wins[v],
               chains[v] ? "40-line dependent chain per fault" : "no chain", 100 * ratio[v][rounds / 2]);
    }
    return 0;
}
