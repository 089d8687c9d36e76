/* core/dist.h: the communication layer of data-parallel training, one small interface over
 * two backends:
 *   single  one process, every collective is the identity (the default, always built);
 *   mpi     Open MPI (core/dist_mpi.c, built when mpicc is present: `make deps` installs
 *           it), chosen at dist_init when the process was started by mpirun (or MOCO_DIST=mpi).
 * Only the thread that called dist_init calls these (MPI_THREAD_FUNNELED); the compute
 * pool's threads never communicate.  Counts are elements; buffers larger than an int of
 * elements are sent in pieces.  Every collective is called by every rank in the same order,
 * as MPI requires; a failure returns -1 with moco_last_error() set, and dist_abort ends the
 * whole job (a rank that stops while the others wait would otherwise hang them). */
#ifndef MOCO_DIST_H
#define MOCO_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Idempotent.  Chooses and starts the backend; 0 or -1 (MPI failed to start). */
int dist_init(void);
int dist_rank(void);            /* 0 .. size-1 (0 before dist_init) */
int dist_size(void);            /* 1 before dist_init and with the single backend */
/* "single" or "mpi (Open MPI x.y, N ranks)"; and whether this build has the MPI backend. */
const char *dist_backend(void);
int dist_have_mpi(void);

/* buf (n) = the sum over ranks of every rank's buf (n), in place; the same result on every
 * rank.  The caller divides for a mean. */
int dist_allreduce_sum_f32(float *buf, int64_t n);
int dist_allreduce_sum_f64(double *buf, int64_t n);
/* recv (size * n) = every rank's send (n), rank by rank. */
int dist_allgather_f32(const float *send, int64_t n, float *recv);
/* buf (bytes) on every rank = root's buf. */
int dist_bcast(void *buf, size_t bytes, int root);
int dist_barrier(void);
/* Ends every rank of the job with status code (MPI_Abort); with the single backend,
 * returns and lets the caller exit. */
void dist_abort(int code);
/* An error that every rank raises together (an option all ranks refuse, agreed by a
 * collective): marked before it is raised, so the top level ends this rank normally
 * (MPI_Finalize) instead of MPI_Abort, and only one rank prints the message. */
void dist_mark_agreed_failure(void);
int dist_take_agreed_failure(void); /* whether one was marked; clears the mark */
/* Before exit: MPI_Finalize (a rank that exits without it makes mpirun report the job as
 * failed).  Idempotent. */
int dist_finalize(void);

#endif
