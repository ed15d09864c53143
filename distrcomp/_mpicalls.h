/* The MPI calls distrcomp._hotpath makes without mpi4py, when distrcomp._mpicalls_<abi> was built.
 *
 * _hotpath needs neither MPI's headers nor its library; _mpicalls_<abi> (distrcomp/_mpicalls.c) is
 * compiled against the installed MPI's mpi.h, one module per MPI ABI (mpich, openmpi), and hands
 * _hotpath this table in a capsule. Handles cross it as intptr_t: MPICH's are ints, Open MPI's
 * pointers; each function returns an MPI error code (MPI_SUCCESS is 0). */
#ifndef DISTRCOMP_MPICALLS_H
#define DISTRCOMP_MPICALLS_H
#include <stdint.h>

#define DC_MPICALLS_VERSION 1
#define DC_MPICALLS_CAPSULE "distrcomp._mpicalls.api"

typedef struct {
    int version; /* DC_MPICALLS_VERSION */
    /* MPI_Isend of `count` bytes at `buf`, then one MPI_Test: *done is 1 when the send has
     * completed (nothing to keep), else 0 and *request is its handle. */
    int (*isend)(intptr_t comm, const void *buf, int count, int dest, int tag, intptr_t *request, int *done);
    /* MPI_Improbe (wait 0) or MPI_Mprobe (wait 1) for a message from any source with any tag:
     * *found (always 1 after MPI_Mprobe), then its *message handle, *source, *tag and size in
     * bytes *count. MPI_Mprobe blocks: the caller releases the GIL around it. */
    int (*probe)(intptr_t comm, int wait, int *found, intptr_t *message, int *source, int *tag, int *count);
    /* MPI_Mrecv of `count` bytes into `buf`: the message *message was probed with (then null). */
    int (*mrecv)(intptr_t *message, void *buf, int count);
} dc_mpicalls;

#endif
