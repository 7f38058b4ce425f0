/*
 * The Linux baseline of `cargo xtask bench`: the same crossings the
 * exokernel's bench measures, measured the same way, on a stock Debian
 * cloud kernel.
 *
 * Runs as /init of an initramfs in QEMU with `-icount shift=0`, so every
 * rdtsc difference is an exact count of guest instructions (kernel and
 * user, every process on the one CPU). Each operation is timed on its own
 * many times; the rdtsc back-to-back floor (measured once, printed) is
 * subtracted from every sample. Prints
 *
 *     LINUX op=NAME median=N min=N max=N floor=N iterations=N
 *
 * per operation, then `LINUX-END`, and powers the machine off. Run by
 * hand outside QEMU (not as pid 1) it prints the same lines in TSC cycles
 * and exits instead.
 *
 * Built by xtask with `gcc -O2 -static`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exo_marker.h"

#define PAGE 4096UL

/* Start and end of a timed region: lfence keeps rdtsc from moving across
 * the operation on real hardware (rdtscp is not offered by QEMU's default
 * CPU model, so both ends are lfence-fenced rdtsc). */
static inline uint64_t tsc_start(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t tsc_end(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
}

static uint64_t floor_ticks;

static void die(const char *what)
{
    printf("LINUX-ERROR %s: %s\n", what, strerror(errno));
    fflush(stdout);
    if (getpid() == 1) {
        reboot(RB_POWER_OFF);
    }
    exit(1);
}

static uint64_t *samples(size_t n)
{
    uint64_t *s = calloc(n, sizeof *s);
    if (!s) {
        die("calloc");
    }
    return s;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort the raw differences, subtract the floor, print the line. */
static void report(const char *op, uint64_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        s[i] = s[i] > floor_ticks ? s[i] - floor_ticks : 0;
    }
    qsort(s, n, sizeof *s, cmp_u64);
    printf("LINUX op=%s median=%llu min=%llu max=%llu floor=%llu iterations=%zu\n", op,
           (unsigned long long)s[n / 2], (unsigned long long)s[0], (unsigned long long)s[n - 1],
           (unsigned long long)floor_ticks, n);
    fflush(stdout);
    free(s);
}

/* ---- system calls ------------------------------------------------------ */

static inline long raw_syscall0(long nr)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
    return ret;
}

static void bench_syscalls(void)
{
    enum { N = 2001, WARM = 50 };
    uint64_t *s = samples(N);
    /* getpid as a real system call every time: glibc's getpid() has had a
     * cache in some versions, and syscall(3) adds its own shuffling, so the
     * bare instruction (what the exokernel's null_syscall is). */
    for (int i = 0; i < N + WARM; i++) {
        uint64_t t0 = tsc_start();
        long pid = raw_syscall0(SYS_getpid);
        uint64_t t1 = tsc_end();
        if (pid <= 0) {
            die("getpid");
        }
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    report("linux_getpid", s, N);

    s = samples(N);
    for (int i = 0; i < N + WARM; i++) {
        uint64_t t0 = tsc_start();
        long ret = raw_syscall0(1000); /* no such system call */
        uint64_t t1 = tsc_end();
        if (ret != -ENOSYS) {
            errno = (int)-ret;
            die("enosys");
        }
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    report("linux_enosys", s, N);
}

/* ---- exceptions and faults --------------------------------------------- */

static volatile unsigned long traps;

static void on_trap(int sig)
{
    (void)sig;
    traps++;
}

static char *protected_page;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    char *page = (char *)((uintptr_t)info->si_addr & ~(PAGE - 1));
    if (page != protected_page || mprotect(page, PAGE, PROT_READ | PROT_WRITE) != 0) {
        static const char msg[] = "LINUX-ERROR unexpected SIGSEGV\n";
        write(1, msg, sizeof msg - 1);
        _exit(1);
    }
}

static void bench_int3(void)
{
    enum { N = 2001, WARM = 20 };
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_trap;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTRAP, &sa, NULL) != 0) {
        die("sigaction SIGTRAP");
    }
    uint64_t *s = samples(N);
    for (int i = 0; i < N + WARM; i++) {
        uint64_t t0 = tsc_start();
        __asm__ volatile("int3" ::: "memory");
        uint64_t t1 = tsc_end();
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    if (traps != N + WARM) {
        errno = EINVAL;
        die("int3 handler count");
    }
    report("linux_int3_sigtrap", s, N);
}

static void bench_write_fault(void)
{
    enum { N = 1001, WARM = 20 };
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) {
        die("sigaction SIGSEGV");
    }
    protected_page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (protected_page == MAP_FAILED) {
        die("mmap");
    }
    protected_page[0] = 1; /* present before the first timed write */
    uint64_t *s = samples(N);
    for (int i = 0; i < N + WARM; i++) {
        if (mprotect(protected_page, PAGE, PROT_READ) != 0) {
            die("mprotect read-only");
        }
        uint64_t t0 = tsc_start();
        *(volatile char *)protected_page = (char)i;
        uint64_t t1 = tsc_end();
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    report("linux_write_fault_mprotect", s, N);
    signal(SIGSEGV, SIG_DFL);
    munmap(protected_page, PAGE);
}

static void bench_demand_zero(void)
{
    enum { N = 2001, WARM = 20 };
    size_t len = (N + WARM) * PAGE;
    char *region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) {
        die("mmap");
    }
    /* One 4 KiB page per fault, as the exokernel maps, not a huge page. */
    madvise(region, len, MADV_NOHUGEPAGE);
    uint64_t *s = samples(N);
    for (int i = 0; i < N + WARM; i++) {
        uint64_t t0 = tsc_start();
        *(volatile char *)(region + (size_t)i * PAGE) = 1;
        uint64_t t1 = tsc_end();
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    report("linux_demand_zero_fault", s, N);
    munmap(region, len);
}

/* ---- two processes ----------------------------------------------------- */

static void pin_to_cpu0(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        die("sched_setaffinity");
    }
}

static void reap(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = ECHILD;
        die("child did not exit cleanly");
    }
}

static void bench_pipe(void)
{
    enum { N = 1001, WARM = 20 };
    int there[2], back[2];
    if (pipe(there) != 0 || pipe(back) != 0) {
        die("pipe");
    }
    pid_t pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        char c;
        while (read(there[0], &c, 1) == 1 && c != 'q') {
            if (write(back[1], &c, 1) != 1) {
                _exit(1);
            }
        }
        _exit(0);
    }
    uint64_t *s = samples(N);
    char c = 'x';
    for (int i = 0; i < N + WARM; i++) {
        uint64_t t0 = tsc_start();
        if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1) {
            die("pipe round trip");
        }
        uint64_t t1 = tsc_end();
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    c = 'q';
    if (write(there[1], &c, 1) != 1) {
        die("pipe quit");
    }
    reap(pid);
    close(there[0]);
    close(there[1]);
    close(back[0]);
    close(back[1]);
    report("linux_pipe_round_trip", s, N);
}

/*
 * Context switch plus a working set: the two processes (both pinned to
 * CPU 0) bounce with sched_yield (not a pipe), and each touches W distinct
 * pages of its own after it runs again.
 *
 * sched_yield on CFS hands the CPU to the other runnable process only once
 * their virtual run times are within the wakeup granularity (~1 ms, a
 * million instructions here): a freshly forked partner starts a slice
 * behind, and for its first few thousand rounds every yield returns at
 * once. So each working set first runs until SETTLE rounds in a row
 * alternated; from then on both advance alike and it stays alternating.
 * That it really alternates is checked, not assumed: the partner counts
 * its rounds in shared memory, and any timed round where the count did not
 * move by exactly one is reported (LINUX-WARN) rather than hidden.
 */
#define MAX_W 512
static const int working_sets[] = {1, 8, 64, 512};

/* Marks a timed round for the TLB-model plugin (docs/TLB_MODEL.md) with
 * tag 0x400 + W, as the exokernel's bench does; a no-op without it. A tag
 * is a constant of the instruction, hence one marker pair per W. */
static void switch_marker(int w, int end)
{
#define MARK(tag) do { if (end) exo_marker_end(tag); else exo_marker_begin(tag); } while (0)
    switch (w) {
    case 1: MARK(0x401); break;
    case 8: MARK(0x408); break;
    case 64: MARK(0x440); break;
    case 512: MARK(0x600); break;
    }
#undef MARK
}

struct shared {
    volatile long rounds; /* partner's completed rounds */
    volatile int w;       /* partner's current working set */
    volatile int stop;
};

static void touch(char *pages, int w)
{
    for (int i = 0; i < w; i++) {
        *(volatile char *)(pages + (size_t)i * PAGE) = 1;
    }
}

static char *working_set(void)
{
    char *pages = mmap(NULL, MAX_W * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED) {
        die("mmap");
    }
    madvise(pages, MAX_W * PAGE, MADV_NOHUGEPAGE);
    touch(pages, MAX_W); /* every page present: touches never fault */
    return pages;
}

static void bench_switch(void)
{
    enum { N = 501, WARM = 20, SETTLE = 64 };
    const long SETTLE_MAX = 1000000;
    struct shared *sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        die("mmap shared");
    }
    sh->w = 1;
    pin_to_cpu0();
    pid_t pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        char *mine = working_set();
        while (!sh->stop) {
            sched_yield();
            touch(mine, sh->w);
            sh->rounds++;
        }
        _exit(0);
    }
    char *mine = working_set();
    for (size_t k = 0; k < sizeof working_sets / sizeof working_sets[0]; k++) {
        int w = working_sets[k];
        sh->w = w;
        int in_a_row = 0;
        for (long i = 0; in_a_row < SETTLE && i < SETTLE_MAX; i++) {
            long before = sh->rounds;
            sched_yield();
            touch(mine, w);
            in_a_row = sh->rounds == before + 1 ? in_a_row + 1 : 0;
        }
        uint64_t *s = samples(N);
        long missed = 0;
        for (int i = 0; i < N + WARM; i++) {
            long before = sh->rounds;
            if (i >= WARM) {
                switch_marker(w, 0);
            }
            uint64_t t0 = tsc_start();
            sched_yield();
            touch(mine, w);
            uint64_t t1 = tsc_end();
            if (i >= WARM) {
                switch_marker(w, 1);
                s[i - WARM] = t1 - t0;
                missed += sh->rounds != before + 1;
            }
        }
        if (missed) {
            printf("LINUX-WARN op=linux_switch_touch_w%d: %ld of %d rounds did not alternate\n", w, missed, N);
        }
        char op[64];
        snprintf(op, sizeof op, "linux_switch_touch_w%d", w);
        report(op, s, N);
    }
    sh->stop = 1;
    reap(pid);
    munmap(mine, MAX_W * PAGE);
    munmap(sh, PAGE);
}

/* ---- process creation -------------------------------------------------- */

static void bench_fork(void)
{
    enum { N = 101, WARM = 5 };
    uint64_t *s = samples(N);
    for (int i = 0; i < N + WARM; i++) {
        uint64_t t0 = tsc_start();
        pid_t pid = fork();
        if (pid == 0) {
            _exit(0);
        }
        if (pid < 0) {
            die("fork");
        }
        reap(pid);
        uint64_t t1 = tsc_end();
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    report("linux_fork_exit_wait", s, N);
}

static void bench_exec(char *target)
{
    enum { N = 101, WARM = 5 };
    char *argv[] = {target, NULL};
    char *envp[] = {NULL};
    uint64_t *s = samples(N);
    for (int i = 0; i < N + WARM; i++) {
        uint64_t t0 = tsc_start();
        pid_t pid = fork();
        if (pid == 0) {
            execve(argv[0], argv, envp);
            _exit(127);
        }
        if (pid < 0) {
            die("fork");
        }
        reap(pid);
        uint64_t t1 = tsc_end();
        if (i >= WARM) {
            s[i - WARM] = t1 - t0;
        }
    }
    report("linux_fork_exec_wait", s, N);
}

/* ---- main -------------------------------------------------------------- */

/* As /init the console may not be open yet: give us one. */
static void open_console(void)
{
    if (fcntl(1, F_GETFD) != -1) {
        return;
    }
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int fd = open("/dev/console", O_RDWR);
    if (fd < 0) {
        fd = open("/dev/ttyS0", O_RDWR);
    }
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2) {
            close(fd);
        }
    }
}

static void measure_floor(void)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 1000; i++) {
        uint64_t t0 = tsc_start();
        uint64_t t1 = tsc_end();
        if (t1 - t0 < best) {
            best = t1 - t0;
        }
    }
    floor_ticks = best;
}

int main(int argc, char **argv)
{
    int as_init = getpid() == 1;
    if (as_init) {
        open_console();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("LINUX-START\n");
    measure_floor();
    bench_syscalls();
    bench_int3();
    bench_write_fault();
    bench_demand_zero();
    bench_pipe();
    bench_switch();
    bench_fork();
    bench_exec(argc > 1 ? argv[1] : "/hello"); /* a path given: a run by hand */
    printf("LINUX-END\n");
    fflush(stdout);
    if (as_init) {
        sync();
        reboot(RB_POWER_OFF);
    }
    return 0;
}
