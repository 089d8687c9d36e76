/* core/threads.h: libmoco's pool of compute threads, for batch-parallel layers (ggml's way:
 * our own few threads, created once, splitting the work of one call).
 *
 * threadpool_run(ntasks, max_threads, fn, ctx) calls fn(ctx, task, thread) once for every
 * task in [0, ntasks) and returns when all have finished.  The calling thread is thread 0
 * and takes part; up to max_threads - 1 workers take the rest, one task at a time from a
 * shared counter, so uneven tasks balance themselves.
 *
 * Ownership rule: a task owns what its index selects (images of the batch, channels, an
 * accumulator of its own), and may use the scratch of its `thread` (0 <= thread <
 * max_threads), which no other thread touches during the run.  It writes nothing another
 * task reads or writes.  Results must not depend on which thread ran a task: a reduction
 * across tasks is done after the run, in task order, so it depends on the number of tasks
 * (the caller's choice) and never on timing.
 *
 * Threads and cores: the pool has threadpool_size() threads including the caller (default:
 * the environment variable MOCO_NUM_THREADS when it holds a valid count, else the cores
 * this process may run on).  Its workers spin for a few tens of microseconds
 * after a run (consecutive layers follow each other closely) and then sleep on a condition
 * variable, so an idle pool costs no CPU.  BLAS calls made inside tasks must be
 * single-threaded: see moco_gemm_blas_begin (core/gemm.h).
 *
 * Nesting and re-entry: a run from inside a task, or from another thread while the pool is
 * busy, executes its tasks serially on the calling thread (correct, just not parallel). */
#ifndef MOCO_THREADS_H
#define MOCO_THREADS_H

#define THREADPOOL_MAX 64

typedef void (*ThreadpoolTask)(void *ctx, int task, int thread);

/* Threads a run uses, the caller included (>= 1). */
int threadpool_size(void);
/* Sets the size (1 .. THREADPOOL_MAX); workers are (re)started on the next run.  Returns -1
 * for a size out of range, or when called from inside a task. */
int threadpool_set_size(int n);
/* Runs fn(ctx, task, thread) for task = 0 .. ntasks - 1 on at most max_threads threads
 * (thread < max_threads) and returns when all are done (ntasks <= 0: none).  When workers
 * cannot be started (pthread_create fails) every task runs on the caller as thread 0. */
void threadpool_run(int ntasks, int max_threads, ThreadpoolTask fn, void *ctx);
/* 1 on a thread that is running a task of the pool (a run from there is serial). */
int threadpool_inside_task(void);
/* Part `part` of `parts` near-equal contiguous ranges of [0, n): [*lo, *hi). */
void threadpool_split(long n, int parts, int part, long *lo, long *hi);
/* The cores this process may run on: its CPU affinity mask as read on first use (before any
 * thread of the pool is bound to a core), else the online cores; at least 1.  The one
 * count of cores in libmoco (loader_cpu_count is this). */
int threadpool_cpu_count(void);
/* Stops and joins the workers (tests, leak checkers); a later run starts them again. */
void threadpool_shutdown(void);

/* Sets both thread counts to n, the one entry point (moco.set_num_threads): this pool (the
 * layers) and OpenBLAS's, used by products made outside the pool.  It lives in core/gemm.c,
 * the only code that talks to OpenBLAS.  Returns 0, or -1 when threadpool_set_size refuses
 * (nothing is changed then). */
int moco_set_num_threads(int n);

#endif
