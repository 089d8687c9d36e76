/* core/dist.c: the backend choice and the single-process backend (see dist.h).  The MPI
 * backend lives in dist_mpi.c, compiled with MOCO_WITH_MPI when the Makefile finds mpicc;
 * it provides the dist_mpi_* functions declared below. */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#ifdef MOCO_WITH_MPI
int dist_mpi_init(int *rank, int *size, char *name, size_t name_size);
int dist_mpi_allreduce_f32(float *buf, int64_t n);
int dist_mpi_allreduce_f64(double *buf, int64_t n);
int dist_mpi_allgather_f32(const float *send, int64_t n, float *recv);
int dist_mpi_bcast(void *buf, size_t bytes, int root);
int dist_mpi_barrier(void);
void dist_mpi_abort(int code);
int dist_mpi_finalize(void);
#endif

static int started, use_mpi, rank_, size_ = 1, finalized, agreed_failure;

#ifdef MOCO_WITH_MPI
static void finalize_at_exit(void) { dist_finalize(); }
#endif
static char backend_name[160] = "single";

/* mpirun (Open MPI's, MPICH's or a PMIx launcher) leaves these in every rank's environment. */
static int launched_by_mpirun(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

int dist_have_mpi(void) {
#ifdef MOCO_WITH_MPI
    return 1;
#else
    return 0;
#endif
}

int dist_init(void) {
    if (started) return 0;
    const char *env = getenv("MOCO_DIST");
    int want = env && strcmp(env, "mpi") == 0 ? 1 : env && strcmp(env, "single") == 0 ? 0 : launched_by_mpirun();
    if (want && !dist_have_mpi())
        return moco_error("dist: started by mpirun (or MOCO_DIST=mpi), but this moco-lua was built without "
                          "MPI: install Open MPI (make deps, or apt-get install libopenmpi-dev openmpi-bin) "
                          "and rebuild (make clean; make)");
#ifdef MOCO_WITH_MPI
    if (want) {
        if (dist_mpi_init(&rank_, &size_, backend_name, sizeof backend_name)) return -1;
        use_mpi = 1;
        /* a rank that exits without MPI_Finalize makes mpirun report the whole job as failed */
        atexit(finalize_at_exit);
    }
#endif
    started = 1;
    return 0;
}

void dist_mark_agreed_failure(void) { agreed_failure = 1; }
int dist_take_agreed_failure(void) {
    int was = agreed_failure;
    agreed_failure = 0;
    return was;
}

int dist_rank(void) { return rank_; }
int dist_size(void) { return size_; }
const char *dist_backend(void) { return backend_name; }

int dist_allreduce_sum_f32(float *buf, int64_t n) {
#ifdef MOCO_WITH_MPI
    if (use_mpi) return dist_mpi_allreduce_f32(buf, n);
#endif
    (void)buf, (void)n;
    return 0;
}

int dist_allreduce_sum_f64(double *buf, int64_t n) {
#ifdef MOCO_WITH_MPI
    if (use_mpi) return dist_mpi_allreduce_f64(buf, n);
#endif
    (void)buf, (void)n;
    return 0;
}

int dist_allgather_f32(const float *send, int64_t n, float *recv) {
#ifdef MOCO_WITH_MPI
    if (use_mpi) return dist_mpi_allgather_f32(send, n, recv);
#endif
    if (recv != send) memmove(recv, send, (size_t)n * sizeof *recv);
    return 0;
}

int dist_bcast(void *buf, size_t bytes, int root) {
    if (root < 0 || root >= size_)
        return moco_error("dist: broadcast root %d is not a rank (0 .. %d)", root, size_ - 1);
#ifdef MOCO_WITH_MPI
    if (use_mpi) return dist_mpi_bcast(buf, bytes, root);
#endif
    (void)buf, (void)bytes;
    return 0;
}

int dist_barrier(void) {
#ifdef MOCO_WITH_MPI
    if (use_mpi) return dist_mpi_barrier();
#endif
    return 0;
}

void dist_abort(int code) {
#ifdef MOCO_WITH_MPI
    if (use_mpi) dist_mpi_abort(code);
#endif
    (void)code;
}

int dist_finalize(void) {
    if (finalized || !started) return 0;
    finalized = 1;
#ifdef MOCO_WITH_MPI
    if (use_mpi) return dist_mpi_finalize();
#endif
    return 0;
}
