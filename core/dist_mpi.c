/* core/dist_mpi.c: the MPI backend of core/dist.h, compiled only with MOCO_WITH_MPI (the
 * Makefile defines it, and adds mpicc's include and link flags, when mpicc is present).
 *
 * Errors: MPI_ERRORS_RETURN on the world communicator, so a failed call returns its code
 * here (turned into a message) instead of killing the process; a rank that dies is noticed
 * by mpirun, which then ends the others.  Counts above INT_MAX go in pieces. */
#ifdef MOCO_WITH_MPI
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "dist.h"
#include "error.h"

static int mpi_fail(const char *what, int rc) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error %d", rc);
    return moco_error("dist (MPI): %s failed: %s", what, text);
}

int dist_mpi_init(int *rank, int *size, char *name, size_t name_size) {
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mpi_fail("MPI_Init_thread", rc);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    char *nl = strchr(version, ',');
    if (nl) *nl = 0;
    snprintf(name, name_size, "mpi (%s, %d ranks)", version, *size);
    return 0;
}

#define PIECE (INT_MAX / 2) /* elements per call */

int dist_mpi_allreduce_f32(float *buf, int64_t n) {
    for (int64_t o = 0; o < n; o += PIECE) {
        int c = (int)(n - o < PIECE ? n - o : PIECE);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + o, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail("MPI_Allreduce", rc);
    }
    return 0;
}

int dist_mpi_allreduce_f64(double *buf, int64_t n) {
    for (int64_t o = 0; o < n; o += PIECE) {
        int c = (int)(n - o < PIECE ? n - o : PIECE);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + o, c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail("MPI_Allreduce", rc);
    }
    return 0;
}

int dist_mpi_allgather_f32(const float *send, int64_t n, float *recv) {
    if (n > INT_MAX) return moco_error("dist (MPI): allgather of %lld elements per rank is too large", (long long)n);
    int rc = MPI_Allgather(send, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail("MPI_Allgather", rc);
}

int dist_mpi_bcast(void *buf, size_t bytes, int root) {
    for (size_t o = 0; o < bytes; o += PIECE) {
        int c = (int)(bytes - o < PIECE ? bytes - o : PIECE);
        int rc = MPI_Bcast((char *)buf + o, c, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail("MPI_Bcast", rc);
    }
    return 0;
}

int dist_mpi_barrier(void) {
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail("MPI_Barrier", rc);
}

void dist_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

int dist_mpi_finalize(void) {
    int rc = MPI_Finalize();
    return rc == MPI_SUCCESS ? 0 : mpi_fail("MPI_Finalize", rc);
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int dist_mpi_not_built;
#endif
