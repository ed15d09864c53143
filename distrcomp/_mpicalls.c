/* distrcomp._mpicalls_<abi>: the three MPI calls of distrcomp._hotpath's small messages, made
 * directly instead of through mpi4py's Python-level objects (see distrcomp/_mpicalls.h).
 *
 * Optional, built at install against the mpi.h of the MPI found there (setup.py: $MPICC, the
 * environment's bin/mpicc, or mpicc on PATH) and named after its ABI, like mpi4py's own
 * MPI.<abi> modules; distrcomp.p2p imports it only when the MPI that mpi4py loaded has that ABI,
 * so its libmpi is the one already in the process. What it saves: on Open MPI, mpi4py's
 * Isend, Test, Mprobe, Status and Message.Recv calls were ~0.9 us of a 1.7 us one-way 8-byte
 * message. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <mpi.h>

#include "_mpicalls.h"

#if defined(DC_ABI_MPICH) == defined(DC_ABI_OPENMPI)
#error "build with exactly one of -DDC_ABI_MPICH, -DDC_ABI_OPENMPI"
#endif
#if defined(DC_ABI_MPICH) && !defined(MPICH_VERSION) && !defined(MPICH_NAME)
#error "DC_ABI_MPICH, but this mpi.h is not MPICH's"
#endif
#if defined(DC_ABI_OPENMPI) && !defined(OPEN_MPI)
#error "DC_ABI_OPENMPI, but this mpi.h is not Open MPI's"
#endif

#define COMM(handle) ((MPI_Comm)(handle))

static int
dc_isend(intptr_t comm, const void *buf, int count, int dest, int tag, intptr_t *request, int *done)
{
    MPI_Request req;
    *done = 0;
    int err = MPI_Isend(buf, count, MPI_BYTE, dest, tag, COMM(comm), &req);
    if (err != MPI_SUCCESS)
        return err;
    err = MPI_Test(&req, done, MPI_STATUS_IGNORE);
    *request = (intptr_t)req; /* MPI_REQUEST_NULL once done */
    return err;
}

static int
dc_probe(intptr_t comm, int wait, int *found, intptr_t *message, int *source, int *tag, int *count)
{
    MPI_Message msg = MPI_MESSAGE_NULL;
    MPI_Status status;
    int err;
    if (wait) {
        err = MPI_Mprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, COMM(comm), &msg, &status);
        *found = 1;
    } else {
        err = MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, COMM(comm), found, &msg, &status);
    }
    if (err != MPI_SUCCESS || !*found)
        return err;
    *message = (intptr_t)msg;
    *source = status.MPI_SOURCE;
    *tag = status.MPI_TAG;
    return MPI_Get_count(&status, MPI_BYTE, count);
}

static int
dc_mrecv(intptr_t *message, void *buf, int count)
{
    MPI_Message msg = (MPI_Message)*message;
    int err = MPI_Mrecv(buf, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
    *message = (intptr_t)msg;
    return err;
}

static const dc_mpicalls api = {DC_MPICALLS_VERSION, dc_isend, dc_probe, dc_mrecv};

#define CONCAT_(a, b) a##b
#define CONCAT(a, b) CONCAT_(a, b)
#define STRING_(a) #a
#define STRING(a) STRING_(a)
#ifdef DC_ABI_MPICH
#define ABI mpich
#else
#define ABI openmpi
#endif

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "distrcomp._mpicalls_" STRING(ABI),
    "MPI calls for distrcomp._hotpath, compiled against this MPI's mpi.h (optional; see distrcomp.p2p).", -1, NULL,
};

PyMODINIT_FUNC
CONCAT(PyInit__mpicalls_, ABI)(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New((void *)&api, DC_MPICALLS_CAPSULE, NULL);
    if (capsule == NULL || PyModule_AddObject(module, "api", capsule) < 0 ||
        PyModule_AddStringConstant(module, "abi", STRING(ABI)) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
