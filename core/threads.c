/* core/threads.c: the compute thread pool (see threads.h for the rules).
 *
 * One pool per process, because there is one set of cores: two pools would each think
 * they own them.  A run publishes (fn, ctx, ntasks), bumps `generation` and wakes the
 * workers; everyone, the caller included, then takes task numbers from the atomic `next`
 * until they run out.  `busy` counts the workers still inside the run; the caller waits
 * for it to reach zero before returning, so the next run can reuse the job fields.
 *
 * Waiting is a short spin (consecutive layers of a network start runs microseconds apart,
 * and a futex wake-up costs more than that) followed by a condition-variable sleep, so an
 * idle pool burns no core that the data loader or another process could use.
 *
 * Binding: worker t (1 .. size-1) is bound to the t-th CPU this process may run on, much
 * as OpenMP's OMP_PROC_BIND=true does.  Without it Linux was seen to keep both threads of a
 * 2-thread pool on one core for whole steps (the woken worker placed beside its waker),
 * halving the speed in about half of the runs.  The caller (thread 0) is the user's thread,
 * and threads it creates (the data loader's) inherit its affinity, so it is bound to the
 * first CPU only for the duration of a run, and given its own mask back afterwards (two
 * system calls of about a microsecond per run; it stays where it was put, so the next run
 * does not move it).  Binding applies only
 * when the pool has no more threads than CPUs; MOCO_BIND=0 turns it off (e.g. for several
 * processes sharing a machine). */
#define _GNU_SOURCE
#include "threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

#define SPIN_NANOSECONDS 50000 /* how long a waiting thread polls before it sleeps */

static struct {
    pthread_mutex_t run_lock; /* held by the thread running the pool: one run at a time */
    pthread_mutex_t lock;     /* guards the sleeps below */
    pthread_cond_t wake;      /* workers: a new generation (or stop) */
    pthread_cond_t done;      /* caller: busy reached 0 */
    pthread_t workers[THREADPOOL_MAX];
    int started;              /* workers running */
    atomic_int size;          /* wanted threads including the caller; 0 = not chosen yet */
    atomic_uint generation;
    atomic_int stop;
    atomic_int busy;
    atomic_int next;
    struct WorkerStart {
        unsigned generation;  /* when it was created: a run published right after the
                               * creation must not be mistaken for an older one */
        int thread;           /* its thread number, 1 .. size - 1 */
    } start[THREADPOOL_MAX];
    ThreadpoolTask fn;
    void *ctx;
    int ntasks, max_threads;
} pool = {
    .run_lock = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};

static _Thread_local int inside_task; /* set while this thread runs tasks of the pool */

/* The CPUs the process may run on, read once (before any thread of the pool is bound). */
static cpu_set_t process_cpus;
static int process_cpus_known;
static pthread_once_t process_cpus_once = PTHREAD_ONCE_INIT;

static void read_process_cpus(void) {
    process_cpus_known = sched_getaffinity(0, sizeof process_cpus, &process_cpus) == 0 && CPU_COUNT(&process_cpus) > 0;
}

int threadpool_cpu_count(void) {
    pthread_once(&process_cpus_once, read_process_cpus);
    if (process_cpus_known) return CPU_COUNT(&process_cpus);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The default size: MOCO_NUM_THREADS when set to a valid count, else the cores. */
static int default_size(void) {
    const char *env = getenv("MOCO_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == 0 && v >= 1 && v <= THREADPOOL_MAX) return (int)v;
    }
    int cores = threadpool_cpu_count();
    return cores > THREADPOOL_MAX ? THREADPOOL_MAX : cores;
}

static int wanted_size(void) {
    int n = atomic_load(&pool.size);
    if (n == 0) {
        int zero = 0;
        n = default_size();
        if (!atomic_compare_exchange_strong(&pool.size, &zero, n)) n = zero; /* set meanwhile */
    }
    return n;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Spins until pred(arg) holds or SPIN_NANOSECONDS pass; returns whether it holds. */
static int spin_until(int (*pred)(const void *), const void *arg) {
    long long deadline = 0;
    for (int i = 1;; i++) {
        if (pred(arg)) return 1;
        cpu_relax();
        if ((i & 63) == 0) {
            long long t = now_ns();
            if (!deadline) deadline = t + SPIN_NANOSECONDS;
            else if (t > deadline) return pred(arg);
        }
    }
}

static void take_tasks(int thread) {
    if (thread >= pool.max_threads) return;
    inside_task = 1;
    for (;;) {
        int t = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (t >= pool.ntasks) break;
        pool.fn(pool.ctx, t, thread);
    }
    inside_task = 0;
}

static int generation_moved(const void *seen) {
    return atomic_load_explicit(&pool.generation, memory_order_acquire) != *(const unsigned *)seen ||
           atomic_load_explicit(&pool.stop, memory_order_relaxed);
}

static void *worker_main(void *arg) {
    const struct WorkerStart *me = arg;
    unsigned seen = me->generation;
    for (;;) {
        if (!spin_until(generation_moved, &seen)) {
            pthread_mutex_lock(&pool.lock);
            while (!generation_moved(&seen)) pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        if (atomic_load(&pool.stop)) break;
        seen = atomic_load_explicit(&pool.generation, memory_order_acquire);
        take_tasks(me->thread);
        if (atomic_fetch_sub_explicit(&pool.busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    return NULL;
}

/* Joins every worker; called with run_lock held. */
static void stop_workers(void) {
    if (!pool.started) return;
    pthread_mutex_lock(&pool.lock);
    atomic_store(&pool.stop, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.started; i++) pthread_join(pool.workers[i], NULL);
    pool.started = 0;
    atomic_store(&pool.stop, 0);
}

/* Whether to bind the pool's threads to CPUs, and the n-th allowed CPU. */
static int binding_wanted(void) {
    const char *env = getenv("MOCO_BIND");
    if (env && strcmp(env, "0") == 0) return 0;
    return wanted_size() <= threadpool_cpu_count();
}

static int nth_cpu(int n, cpu_set_t *out) {
    pthread_once(&process_cpus_once, read_process_cpus);
    if (!process_cpus_known) return -1;
    int seen = 0;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &process_cpus)) continue;
        if (seen++ == n) {
            CPU_ZERO(out);
            CPU_SET(c, out);
            return 0;
        }
    }
    return -1;
}

static void bind_thread(pthread_t t, int n) {
    cpu_set_t one;
    if (nth_cpu(n, &one) == 0) pthread_setaffinity_np(t, sizeof one, &one);
}

/* Starts size - 1 workers if they are not running; called with run_lock held. */
static void start_workers(void) {
    int want = wanted_size() - 1;
    if (pool.started == want) return;
    stop_workers();
    unsigned generation = atomic_load(&pool.generation);
    while (pool.started < want) {
        struct WorkerStart *st = &pool.start[pool.started];
        st->generation = generation, st->thread = pool.started + 1;
        if (pthread_create(&pool.workers[pool.started], NULL, worker_main, st)) break;
        pool.started++;
    }
    if (pool.started > 0 && binding_wanted())
        for (int i = 0; i < pool.started; i++) bind_thread(pool.workers[i], i + 1);
}

int threadpool_size(void) { return wanted_size(); }

int threadpool_set_size(int n) {
    if (n < 1 || n > THREADPOOL_MAX)
        return moco_error("threadpool: size must be between 1 and %d, got %d", THREADPOOL_MAX, n);
    if (inside_task) return moco_error("threadpool: cannot resize from inside a task");
    pthread_mutex_lock(&pool.run_lock);
    atomic_store(&pool.size, n);
    if (pool.started != n - 1) stop_workers(); /* the next run starts the right number */
    pthread_mutex_unlock(&pool.run_lock);
    return 0;
}

static int workers_done(const void *arg) {
    (void)arg;
    return atomic_load_explicit(&pool.busy, memory_order_acquire) == 0;
}

static void run_serially(int ntasks, ThreadpoolTask fn, void *ctx) {
    for (int t = 0; t < ntasks; t++) fn(ctx, t, 0);
}

void threadpool_run(int ntasks, int max_threads, ThreadpoolTask fn, void *ctx) {
    if (ntasks <= 0) return;
    if (ntasks == 1 || max_threads <= 1 || inside_task || pthread_mutex_trylock(&pool.run_lock) != 0) {
        run_serially(ntasks, fn, ctx);
        return;
    }
    start_workers();
    if (pool.started == 0) {
        pthread_mutex_unlock(&pool.run_lock);
        run_serially(ntasks, fn, ctx);
        return;
    }
    cpu_set_t caller_mask, first;
    int rebind = binding_wanted() && pthread_getaffinity_np(pthread_self(), sizeof caller_mask, &caller_mask) == 0 &&
                 nth_cpu(0, &first) == 0 && pthread_setaffinity_np(pthread_self(), sizeof first, &first) == 0;
    pool.fn = fn, pool.ctx = ctx, pool.ntasks = ntasks, pool.max_threads = max_threads;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.busy, pool.started, memory_order_relaxed);
    /* The release on generation publishes the job fields to the workers' acquire. */
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    take_tasks(0);
    if (!spin_until(workers_done, NULL)) {
        pthread_mutex_lock(&pool.lock);
        while (!workers_done(NULL)) pthread_cond_wait(&pool.done, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
    }
    if (rebind) pthread_setaffinity_np(pthread_self(), sizeof caller_mask, &caller_mask);
    pthread_mutex_unlock(&pool.run_lock);
}

int threadpool_inside_task(void) { return inside_task; }

void threadpool_split(long n, int parts, int part, long *lo, long *hi) {
    long base = n / parts, extra = n % parts;
    *lo = part * base + (part < extra ? part : extra);
    *hi = *lo + base + (part < extra ? 1 : 0);
}

void threadpool_shutdown(void) {
    pthread_mutex_lock(&pool.run_lock);
    stop_workers();
    pthread_mutex_unlock(&pool.run_lock);
}
