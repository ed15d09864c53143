/* distrcomp._hotpath: the compiled path of every small message's send and recv.
 *
 * Optional: distrcomp.p2p.Engine is the whole engine in Python and the reference for what
 * this does; when this module is built, p2p uses a subclass of Engine whose base, Core,
 * answers send() and recv() here for the common messages and hands everything else to the
 * Python methods (_send_py, _recv_py, _decode_entry). This file talks to MPI through mpi4py's
 * methods (Isend, Mprobe, Message.Recv, as the Python engine does, and isend), so it needs
 * neither MPI's nor numpy's headers and works with any MPI mpi4py works with; when
 * distrcomp._mpicalls_<abi> was built for the MPI in use (see _mpicalls.h), p2p hands it that
 * module's calls, and inline frames are sent, and every frame probed and received, with them
 * instead (a bare pickle then unpickled by MPI.pickle.loads, as mpi4py's recv does): mpi4py's
 * Python-level objects and argument parsing were half of an 8-byte message's time on Open MPI.
 * What the rest saves is the interpreter: measured on MPICH, the Python glue and encode/decode
 * cost more per one-way message than MPI itself.
 *
 * Handled here, and only here:
 *   send  dest and tag plain ints in range, and obj either
 *         - a C-contiguous numpy array whose frame head distrcomp.wire has already built for
 *           its (dtype, shape): inline (wire._c_heads: small arrays sent before), or followed
 *           by the array's memory as its payload (wire._payload_heads), waited for here, or
 *         - a plain object (plain_object: exact builtin scalars, str and bytes in dicts,
 *           lists and tuples, small), which mpi4py's lowercase isend pickles and sends in one
 *           call, or
 *         - an object pickle 5 writes as one stream of at most FRAME_MAX bytes, with no
 *           out-of-band buffer; either way the message is a "bare pickle" frame;
 *   wait  every request the engine waits for (Engine.wait's loop: test it, take the frames
 *         that arrive meanwhile, give the core away between polls);
 *   recv  timeout None, nothing queued, and the next frame is the one asked for and either a
 *         bare pickle (received and unpickled by mpi4py's Message.recv, or as above) or an
 *         array whose head wire has already read (wire._described): inline, or followed by its
 *         payload, or a REPEAT payload (received by the MPI calls when built).
 * Both send and recv keep the last array head sent to and received from each node (p2p's
 * REPEAT: an array whose head is the last one sent to its destination goes as its payload
 * alone), in the lists the Python engine keeps them in.
 * The wire format stays defined in distrcomp/wire.py and the MPI tags in distrcomp/p2p.py;
 * this file reads four facts of them: the kind in the MPI tag's low bits, an array frame's
 * kind byte, its inline flag (bit 0 of byte 1), and its little-endian head length at bytes 6-7.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "_mpicalls.h"

#define FRAME_MAX 16384 /* wire.FRAME_MAX; checked against it when a Core is attached */
#define KIND_ARRAY 1 /* the first byte of an array frame */
/* The MPI tag of a message of tag t: t << KIND_BITS | kind (p2p.FRAMED, PAYLOAD, BARE). */
#define KIND_BITS 2
#define KIND_MASK 3
#define FRAMED 0
#define PAYLOAD 1
#define BARE 2
#define REPEAT 3
#define REPEAT_MAX INT_MAX /* p2p._REPEAT_MAX: larger payloads are always sent after their head */
#define MAX_DIMS 64
#define PLAIN_DEPTH 4                /* levels of dicts, lists and tuples plain_object accepts */
#define PLAIN_BUDGET (FRAME_MAX / 2) /* an upper bound of a plain object's pickle, in bytes */
/* What each item of a plain object costs in that budget, at least: so at most 64 items, since
 * the scan (~4 ns an item) must cost less than the path saves (~0.3 us a message). */
#define PLAIN_ITEM 128
#define SPIN_POLLS 64 /* p2p._SPIN_POLLS: tests of a request alone before a wait takes frames and yields */

typedef struct {
    PyObject_HEAD
    /* Shared with the Python engine (members of the same names): */
    PyObject *comm;
    PyObject *status;
    PyObject *queue;    /* collections.deque of (src, tag, obj) */
    PyObject *pending;  /* list of (request, buffer, dest, nth) */
    PyObject *sent;     /* list: messages sent to each node */
    PyObject *heads_to, *heads_from; /* lists: the last array head sent to, received from each node */
    Py_ssize_t n_node;
    Py_ssize_t max_tag;
    Py_ssize_t n_received;
    Py_ssize_t purge_at;
    /* Set by _attach: */
    PyObject *isend, *isend_lower, *mprobe, *improbe, *get_count, *get_source, *get_tag;
    PyObject *any_source, *any_tag, *mpi_error;
    PyObject *c_heads, *payload_heads, *described; /* wire._c_heads, _payload_heads, _described */
    PyObject *payload_type;                         /* the MPI datatype a uint8 array is sent as */
    PyObject *ndarray, *dumps, *protocol, *kw_callback, *block; /* block: distrcomp.buffers.block */
    PyObject *blocks; /* its cache's (nbytes, block, owner) entries, oldest first: BlockCache.blocks */
    PyObject *oob, *oob_append; /* out-of-band buffers of the pickle being made */
    int busy;                   /* a send is pickling: a nested send takes the Python path */
    /* The last array head sent, so a program sending one shape again skips the dicts: */
    PyObject *last_dtype, *last_head;
    int last_payload; /* last_head is from wire._payload_heads: the array follows it */
    int last_ndim;
    Py_ssize_t last_shape[MAX_DIMS];
    /* The last inline array head received twice in a row, so a program receiving one shape
     * again skips the dicts and numpy's constructor: recv_copy is __copy__ of a C-contiguous
     * array of that head's dtype and shape, whose copy then takes the data (recv_nbytes
     * bytes). recv_seen: the last inline head fast_decode decoded (shapes that alternate are
     * not remembered: making a template costs more than it saves once). */
    PyObject *recv_head, *recv_copy, *recv_seen;
    Py_ssize_t recv_nbytes, recv_size; /* the data's bytes, the whole frame's */
    /* Set by _use_mpicalls, when distrcomp._mpicalls_<abi> was built for this MPI: */
    const dc_mpicalls *mpi; /* its calls, used instead of mpi4py's for inline frames */
    intptr_t mpi_comm;      /* comm's MPI handle */
    PyObject *request_fromhandle, *loads; /* mpi4py's Request.fromhandle, MPI.pickle.loads */
    PyObject *message_fromhandle;         /* mpi4py's Message.fromhandle */
} Core;

static PyObject *s_send_py, *s_send_stream, *s_recv_py, *s_decode_entry, *s_undecodable_entry, *s_purge, *s_take_repeat;
static PyObject *s_recv_method, *s_recv_lower, *s_test, *s_take_frame, *s_abandon;
static PyObject *s_dtype, *s_shape, *s_append;

/* ------------------------------------------------------------------ send */

/* The frame of a C-contiguous array whose head is cached: a new reference, or NULL without an
 * exception when this array takes the Python path. *payload is set to 1 when the frame is a
 * head whose payload is the array's memory (wire._payload_heads), to 0 when the data is in it;
 * *nbytes to the array's size in bytes. */
static PyObject *
array_frame(Core *self, PyObject *array, int *payload, Py_ssize_t *nbytes)
{
    *payload = 0;
    Py_buffer view;
    if (PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear(); /* not C-contiguous, or a dtype without a buffer format */
        return NULL;
    }
    *nbytes = view.len;
    PyObject *head = NULL, *frame = NULL;
    PyObject *dtype = PyObject_GetAttr(array, s_dtype);
    if (dtype == NULL)
        goto done;
    if (dtype == self->last_dtype && view.ndim == self->last_ndim && view.ndim <= MAX_DIMS &&
        (view.ndim == 0 || memcmp(view.shape, self->last_shape, sizeof(Py_ssize_t) * view.ndim) == 0)) {
        if (self->last_payload) {
            *payload = 1;
            frame = self->last_head;
            Py_INCREF(frame);
            goto done;
        }
        head = self->last_head;
        Py_INCREF(head);
    } else {
        PyObject *shape = PyObject_GetAttr(array, s_shape);
        if (shape == NULL)
            goto done;
        PyObject *key = PyTuple_Pack(2, dtype, shape);
        Py_DECREF(shape);
        if (key == NULL)
            goto done;
        head = PyDict_GetItemWithError(self->c_heads, key); /* borrowed */
        if (head == NULL && !PyErr_Occurred()) {
            head = PyDict_GetItemWithError(self->payload_heads, key);
            *payload = head != NULL;
        }
        Py_DECREF(key);
        if (head == NULL || !PyBytes_CheckExact(head) || PyBytes_GET_SIZE(head) > FRAME_MAX ||
            view.ndim > MAX_DIMS) {
            *payload = 0;
            head = NULL;
            goto done;
        }
        Py_INCREF(head);
        Py_INCREF(dtype);
        Py_XSETREF(self->last_dtype, dtype);
        Py_INCREF(head);
        Py_XSETREF(self->last_head, head);
        self->last_payload = *payload;
        self->last_ndim = view.ndim;
        if (view.ndim)
            memcpy(self->last_shape, view.shape, sizeof(Py_ssize_t) * view.ndim);
        if (*payload) {
            frame = head; /* the head is the whole frame */
            head = NULL;
            goto done;
        }
    }
    Py_ssize_t head_len = PyBytes_GET_SIZE(head);
    if (head_len + view.len > FRAME_MAX)
        goto done; /* cannot happen for a cached head; the Python path decides then */
    frame = PyBytes_FromStringAndSize(NULL, head_len + view.len);
    if (frame != NULL) {
        memcpy(PyBytes_AS_STRING(frame), PyBytes_AS_STRING(head), head_len);
        memcpy(PyBytes_AS_STRING(frame) + head_len, view.buf, view.len);
    }
done:
    Py_XDECREF(dtype);
    Py_XDECREF(head);
    PyBuffer_Release(&view);
    return frame;
}

/* Raise the error now set with the one in (type, value, traceback), which this takes, as its
 * context: a failure while handling that error (an interrupt) does not hide it. */
static void
chain_context(PyObject *type, PyObject *value, PyObject *traceback)
{
    PyObject *type2, *value2, *traceback2;
    PyErr_Fetch(&type2, &value2, &traceback2);
    PyErr_NormalizeException(&type2, &value2, &traceback2);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL)
        PyException_SetTraceback(value, traceback);
    if (value2 != NULL)
        PyException_SetContext(value2, value); /* steals value */
    else
        Py_XDECREF(value);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    PyErr_Restore(type2, value2, traceback2);
}

/* What Engine.wait does: return 0 once `request` has completed, taking every frame that
 * arrives meanwhile into the queue and giving the core away between polls; -1 with an
 * exception when MPI fails, decoding raises something that is not kept, or a signal handler
 * raises (KeyboardInterrupt). */
static int
core_wait(Core *self, PyObject *request)
{
    PyObject *probe_args[3] = {self->any_source, self->any_tag, self->status};
    for (int polls = 0;; polls++) {
        PyObject *done = PyObject_CallMethodNoArgs(request, s_test);
        if (done == NULL)
            return -1;
        Py_DECREF(done);
        if (done == Py_True)
            return 0;
        if (polls < SPIN_POLLS)
            continue;
        PyObject *message = PyObject_Vectorcall(self->improbe, probe_args, 3, NULL);
        if (message == NULL)
            return -1;
        if (message == Py_None) {
            Py_DECREF(message);
            sched_yield();
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        PyObject *entry = PyObject_VectorcallMethod(
            s_take_frame, (PyObject *[]){(PyObject *)self, message, self->status}, 3, NULL);
        Py_DECREF(message);
        if (entry == NULL)
            return -1;
        PyObject *appended = PyObject_CallMethodOneArg(self->queue, s_append, entry);
        Py_DECREF(entry);
        if (appended == NULL)
            return -1;
        Py_DECREF(appended);
    }
}

/* wait(request, *keep): see Engine.wait; interrupted, the request and keep go to Engine._abandon. */
static PyObject *
Core_wait(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1)
        return PyErr_Format(PyExc_TypeError, "wait() takes a request and the buffers to keep");
    if (self->improbe == NULL)
        return PyErr_Format(PyExc_RuntimeError, "distrcomp._hotpath: wait before _attach");
    if (core_wait(self, args[0]) == 0)
        Py_RETURN_NONE;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *keep = PyTuple_New(nargs - 1);
    if (keep != NULL) {
        for (Py_ssize_t i = 1; i < nargs; i++) {
            Py_INCREF(args[i]);
            PyTuple_SET_ITEM(keep, i - 1, args[i]);
        }
        PyObject *kept = PyObject_VectorcallMethod(s_abandon, (PyObject *[]){(PyObject *)self, args[0], keep}, 3, NULL);
        Py_DECREF(keep);
        Py_XDECREF(kept);
    }
    if (PyErr_Occurred())
        chain_context(type, value, traceback); /* keeping them failed too */
    else
        PyErr_Restore(type, value, traceback);
    return NULL;
}

/* True if obj is made only of exact builtins - None, bool, int of at most 64 bits, float, str,
 * bytes, in dicts, lists and tuples at most PLAIN_DEPTH deep - and its pickle takes at most
 * *budget bytes (counted generously). pickle.dumps runs no Python code on such an object, cannot
 * fail and makes no out-of-band buffers, so mpi4py's lowercase isend, which pickles with
 * MPI.pickle (pickle.dumps unless the program configured another) in C, sends the stream send's
 * own pickling would make: one message the receiver takes as a BARE frame. The scan calls no
 * Python code either (exact types only), so nothing can change obj meanwhile. */
static int
plain_object(PyObject *obj, int depth, Py_ssize_t *budget)
{
    PyTypeObject *type = Py_TYPE(obj);
    if ((*budget -= PLAIN_ITEM) < 0)
        return 0;
    if (obj == Py_None || type == &PyBool_Type || type == &PyFloat_Type)
        return 1;
    if (type == &PyLong_Type) {
        int overflow;
        long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (value == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return !overflow;
    }
    if (type == &PyUnicode_Type) {
        Py_ssize_t length = PyUnicode_GetLength(obj);
        if (length < 0) {
            PyErr_Clear();
            return 0;
        }
        return (*budget -= 4 * length) >= 0; /* UTF-8: at most 4 bytes a character */
    }
    if (type == &PyBytes_Type)
        return (*budget -= PyBytes_GET_SIZE(obj)) >= 0;
    if (depth >= PLAIN_DEPTH)
        return 0;
    /* A container too long for what is left is refused before its items are looked at. */
    if (type == &PyList_Type || type == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
        if (n > *budget / PLAIN_ITEM)
            return 0;
        PyObject **items = PySequence_Fast_ITEMS(obj);
        for (Py_ssize_t i = 0; i < n; i++)
            if (!plain_object(items[i], depth + 1, budget))
                return 0;
        return 1;
    }
    if (type == &PyDict_Type) {
        if (PyDict_GET_SIZE(obj) > *budget / (2 * PLAIN_ITEM))
            return 0;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(obj, &pos, &key, &value))
            if (!plain_object(key, depth + 1, budget) || !plain_object(value, depth + 1, budget))
                return 0;
        return 1;
    }
    return 0;
}

/* obj pickled (protocol 5, out-of-band buffers collected): a new reference, or NULL without an
 * exception when obj takes the Python path (pickling failed, or a nested send). When the stream
 * is not a bare pickle frame by itself (out-of-band buffers, or longer than FRAME_MAX),
 * *buffers is set to a new list of the out-of-band buffers: the Python engine frames it. */
static PyObject *
pickle_stream(Core *self, PyObject *obj, PyObject **buffers)
{
    *buffers = NULL;
    if (self->busy)
        return NULL;
    PyObject *args[3] = {obj, self->protocol, self->oob_append};
    self->busy = 1;
    PyObject *stream = PyObject_Vectorcall(self->dumps, args, 2, self->kw_callback);
    self->busy = 0;
    if (stream != NULL && (PyList_GET_SIZE(self->oob) != 0 || !PyBytes_CheckExact(stream) ||
                           PyBytes_GET_SIZE(stream) > FRAME_MAX)) {
        *buffers = PyList_GetSlice(self->oob, 0, PY_SSIZE_T_MAX);
        if (*buffers == NULL)
            Py_CLEAR(stream);
    }
    if (PyList_SetSlice(self->oob, 0, PY_SSIZE_T_MAX, NULL) < 0) {
        Py_XDECREF(stream);
        Py_CLEAR(*buffers);
        return NULL;
    }
    /* The Python path pickles again and raises the TypeError naming the type; a KeyboardInterrupt
     * (or any BaseException that is not an Exception) propagates from here. */
    if (stream == NULL && *buffers == NULL && PyErr_ExceptionMatches(PyExc_Exception))
        PyErr_Clear();
    return stream;
}

/* self.<name>(*args, **kwargs), as this method was called: the Python engine's way. */
static PyObject *
call_python(Core *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *stack[8];
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (total + 1 > 8) {
        PyErr_SetString(PyExc_TypeError, "distrcomp: too many arguments");
        return NULL;
    }
    stack[0] = (PyObject *)self;
    memcpy(stack + 1, args, sizeof(PyObject *) * total);
    return PyObject_VectorcallMethod(name, stack, nargs + 1, kwnames);
}

static int
as_index(PyObject *value, Py_ssize_t low, Py_ssize_t high, Py_ssize_t *out)
{
    if (!PyLong_CheckExact(value))
        return 0;
    Py_ssize_t v = PyLong_AsSsize_t(value);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (v < low || v > high)
        return 0;
    *out = v;
    return 1;
}

/* Raise MPI's error `err` as mpi4py would (MPI.Exception(err)); NULL. */
static PyObject *
mpi_error(Core *self, int err)
{
    PyObject *code = PyLong_FromLong(err);
    if (code != NULL) {
        PyErr_SetObject(self->mpi_error, code);
        Py_DECREF(code);
    }
    return NULL;
}

/* An MPI handle (intptr_t) as mpi4py writes one: unsigned, MPICH's ints sign-extended. */
static PyObject *
handle_object(intptr_t handle)
{
    return PyLong_FromVoidPtr((void *)handle);
}

/* The `count` bytes at `buf` sent to `dest` with MPI tag `mtag` by the MPI calls: Py_None (a new
 * reference) when the send completed at once, else the send's mpi4py Request; NULL with an
 * exception when MPI failed (nothing was sent). */
static PyObject *
mpi_isend(Core *self, const void *buf, int count, Py_ssize_t dest, Py_ssize_t mtag)
{
    intptr_t request = 0;
    int done = 0;
    int err = self->mpi->isend(self->mpi_comm, buf, count, (int)dest, (int)mtag, &request, &done);
    if (err != 0)
        return mpi_error(self, err);
    if (done)
        Py_RETURN_NONE;
    PyObject *handle = handle_object(request);
    PyObject *result = handle == NULL ? NULL : PyObject_CallOneArg(self->request_fromhandle, handle);
    Py_XDECREF(handle);
    return result;
}

/* Start sending the memory of the C-contiguous `array` to `dest` with MPI tag `mtag`: Py_None (a
 * new reference) when the send completed at once, else its mpi4py Request; NULL with an exception.
 * By the MPI calls when there are (MPI_Isend of the array's bytes, without mpi4py's parsing of
 * [array, "B"] on the path between two transfers: measured on MPICH, 1 MiB ping-pong, distrcomp
 * 0.885 -> 0.907 of Send/Recv, medians of 3 runs each), else by mpi4py's Isend. The caller keeps
 * the array alive until the request completes (MPI reads its memory; numpy never moves an
 * array's memory), as mpi4py's request would. */
static PyObject *
payload_isend(Core *self, PyObject *array, PyObject *dest, Py_ssize_t mtag)
{
    if (self->mpi != NULL) {
        Py_ssize_t to = PyLong_AsSsize_t(dest);
        if (to == -1 && PyErr_Occurred())
            return NULL;
        Py_buffer view;
        if (PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS) < 0)
            return NULL;
        if (view.len <= INT_MAX) {
            PyObject *result = mpi_isend(self, view.buf, (int)view.len, to, mtag);
            PyBuffer_Release(&view);
            return result;
        }
        PyBuffer_Release(&view); /* more than an int counts: mpi4py sends it (large-count datatypes) */
    }
    PyObject *tag_obj = PyLong_FromSsize_t(mtag);
    PyObject *spec = tag_obj == NULL ? NULL : PyList_New(2);
    if (spec == NULL) {
        Py_XDECREF(tag_obj);
        return NULL;
    }
    Py_INCREF(array);
    PyList_SET_ITEM(spec, 0, array);
    Py_INCREF(self->payload_type);
    PyList_SET_ITEM(spec, 1, self->payload_type);
    PyObject *isend_args[3] = {spec, dest, tag_obj};
    PyObject *request = PyObject_Vectorcall(self->isend, isend_args, 3, NULL);
    Py_DECREF(spec);
    Py_DECREF(tag_obj);
    return request;
}

/* Send the memory of the C-contiguous `array` to `dest` with `tag` and `kind` (FRAMED | PAYLOAD:
 * the payload of the frame just sent; REPEAT: in place of a message whose frame is the last
 * head sent to dest), the `nth` message to dest, and wait until MPI is done with it (the array
 * is the caller's: value semantics). 0, or -1 with an exception; interrupted
 * (KeyboardInterrupt), the payload still goes, and its request and the array are kept in
 * pending until it has, as Engine._send_payloads keeps them. */
static int
send_payload(Core *self, PyObject *array, PyObject *dest, Py_ssize_t tag, int kind, PyObject *nth)
{
    PyObject *request = payload_isend(self, array, dest, tag << KIND_BITS | kind);
    if (request == NULL)
        return -1;
    if (request == Py_None) { /* done at once */
        Py_DECREF(request);
        return 0;
    }
    if (core_wait(self, request) == 0) {
        Py_DECREF(request);
        return 0;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *entry = PyTuple_Pack(4, request, array, dest, nth);
    Py_DECREF(request);
    if (entry == NULL || PyList_Append(self->pending, entry) < 0)
        chain_context(type, value, traceback); /* keeping them failed too */
    else
        PyErr_Restore(type, value, traceback);
    Py_XDECREF(entry);
    return -1;
}

/* Whether `last` (an entry of heads_to: bytes, or None) is the frame `frame` (bytes). */
static int
same_bytes(PyObject *last, PyObject *frame)
{
    if (last == frame)
        return 1;
    return PyBytes_CheckExact(last) && PyBytes_CheckExact(frame) && PyBytes_GET_SIZE(last) == PyBytes_GET_SIZE(frame) &&
           memcmp(PyBytes_AS_STRING(last), PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame)) == 0;
}

static PyObject *
Core_send(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t dest, tag;
    PyObject *frame = NULL;
    if (self->isend == NULL || kwnames != NULL || nargs != 3 ||
        !as_index(args[0], 0, self->n_node - 1, &dest) || !as_index(args[2], 0, self->max_tag, &tag) ||
        !PyList_CheckExact(self->sent) || PyList_GET_SIZE(self->sent) != self->n_node ||
        !PyList_CheckExact(self->pending) || !PyList_CheckExact(self->heads_to) ||
        PyList_GET_SIZE(self->heads_to) != self->n_node)
        goto python;
    PyObject *obj = args[1];
    int kind = FRAMED, payload = 0, lower = 0;
    Py_ssize_t budget = PLAIN_BUDGET, nbytes = 0;
    if (Py_TYPE(obj) == (PyTypeObject *)self->ndarray) {
        frame = array_frame(self, obj, &payload, &nbytes);
    } else if (!self->busy && plain_object(obj, 0, &budget)) {
        /* mpi4py pickles and sends it in one call, without Isend's message parsing (the request
         * keeps the pickle alive): ~0.3 us less per message, a tenth of a small message's time */
        kind = BARE;
        lower = 1;
        frame = Py_None;
        Py_INCREF(frame);
    } else {
        kind = BARE;
        PyObject *buffers;
        frame = pickle_stream(self, obj, &buffers);
        if (buffers != NULL) {
            PyObject *result = PyObject_VectorcallMethod(
                s_send_stream, (PyObject *[]){(PyObject *)self, args[0], args[2], frame, buffers}, 5, NULL);
            Py_DECREF(frame);
            Py_DECREF(buffers);
            return result;
        }
    }
    if (frame == NULL) {
        if (PyErr_Occurred())
            return NULL;
        goto python;
    }
    PyObject *count = PyList_GET_ITEM(self->sent, dest);
    Py_ssize_t nth = PyLong_AsSsize_t(count);
    if (nth == -1 && PyErr_Occurred())
        goto fail;
    PyObject *nth_obj = PyLong_FromSsize_t(nth + 1);
    if (nth_obj == NULL)
        goto fail;
    if (payload && nbytes <= REPEAT_MAX && same_bytes(PyList_GET_ITEM(self->heads_to, dest), frame)) {
        /* REPEAT: the payload alone, counted as the message it stands for */
        Py_DECREF(frame);
        Py_INCREF(nth_obj); /* kept for send_payload: the list's reference is replaced by a nested send */
        PyList_SetItem(self->sent, dest, nth_obj); /* steals the other */
        int failed = send_payload(self, obj, args[0], tag, REPEAT, nth_obj);
        Py_DECREF(nth_obj);
        if (failed < 0)
            return NULL;
        if (PyList_GET_SIZE(self->pending) >= self->purge_at)
            return PyObject_CallMethodNoArgs((PyObject *)self, s_purge);
        Py_RETURN_NONE;
    }
    PyObject *request;
    int direct = self->mpi != NULL && !lower && !payload && PyBytes_CheckExact(frame);
    if (direct) {
        request = mpi_isend(self, PyBytes_AS_STRING(frame), (int)PyBytes_GET_SIZE(frame), dest, tag << KIND_BITS | kind);
    } else {
        PyObject *mtag = PyLong_FromSsize_t(tag << KIND_BITS | kind);
        if (mtag == NULL) {
            Py_DECREF(nth_obj);
            goto fail;
        }
        PyObject *isend_args[3] = {lower ? obj : frame, args[0], mtag};
        request = PyObject_Vectorcall(lower ? self->isend_lower : self->isend, isend_args, 3, NULL);
        Py_DECREF(mtag);
    }
    if (request == NULL) { /* nothing was sent (MPI failed, or mpi4py's pickling on the plain path) */
        Py_DECREF(nth_obj);
        goto fail;
    }
    PyList_SetItem(self->sent, dest, nth_obj); /* counted once sent; steals nth_obj */
    if (payload) {
        Py_INCREF(frame);
        PyList_SetItem(self->heads_to, dest, frame); /* steals; the head REPEAT compares with */
    }
    if (request == Py_None) { /* the MPI calls' send completed at once */
        Py_DECREF(request);
        Py_DECREF(frame);
        Py_RETURN_NONE;
    }
    /* A small frame is often sent at once (copied out by MPI): then there is nothing to keep.
     * A head is kept without looking, so that its payload follows it at once. The MPI calls
     * have looked once already. */
    if (!payload && !direct) {
        PyObject *done = PyObject_CallMethodNoArgs(request, s_test);
        if (done == NULL) {
            Py_DECREF(request);
            goto fail;
        }
        Py_DECREF(done);
        if (done == Py_True) {
            Py_DECREF(request);
            Py_DECREF(frame);
            Py_RETURN_NONE;
        }
    }
    Py_INCREF(nth_obj); /* the list holds one reference; the entry takes another */
    PyObject *entry = PyTuple_New(4);
    if (entry == NULL) {
        Py_DECREF(nth_obj);
        Py_DECREF(request);
        goto fail;
    }
    PyTuple_SET_ITEM(entry, 0, request);
    PyTuple_SET_ITEM(entry, 1, frame); /* the entry keeps the frame alive until MPI is done */
    Py_INCREF(args[0]);
    PyTuple_SET_ITEM(entry, 2, args[0]);
    PyTuple_SET_ITEM(entry, 3, nth_obj);
    int appended = PyList_Append(self->pending, entry);
    Py_DECREF(entry);
    if (appended < 0)
        return NULL;
    if (payload && send_payload(self, obj, args[0], tag, FRAMED | PAYLOAD, nth_obj) < 0)
        return NULL;
    if (PyList_GET_SIZE(self->pending) >= self->purge_at)
        return PyObject_CallMethodNoArgs((PyObject *)self, s_purge);
    Py_RETURN_NONE;
fail:
    Py_DECREF(frame);
    return NULL;
python:
    return call_python(self, s_send_py, args, nargs, kwnames);
}

/* ------------------------------------------------------------------ recv */

/* An idle block of `nbytes` from distrcomp.buffers' cache, moved to the end of its list as
 * BlockCache.block moves it, or else what distrcomp.buffers.block gives: a new reference, or
 * NULL with an exception. Idle (buffers._idle): only its entry refers to the block, and only
 * the entry and the block (its base) to the owner of its memory, which every array made on
 * it and every view has as its base. Done here because a large receive runs this with the
 * caches cold (the copy just evicted them): the Python call measured ~3 us there, 3% of a
 * 1 MiB message, against ~0.3 us warm. */
static PyObject *idle_block(Core *self, PyObject *nbytes);

static PyObject *
receive_block(Core *self, PyObject *nbytes)
{
    PyObject *block = idle_block(self, nbytes);
    if (block != NULL || PyErr_Occurred())
        return block;
    return PyObject_CallOneArg(self->block, nbytes);
}

/* An idle block of `nbytes` bytes of the cache, handed out as receive_block does (a new
 * reference); NULL without an exception when there is none, with one when that failed. */
static PyObject *
idle_block(Core *self, PyObject *nbytes)
{
    Py_ssize_t want = PyLong_AsSsize_t(nbytes);
    if (want == -1 && PyErr_Occurred())
        return NULL;
    PyObject *blocks = self->blocks;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(blocks); i++) {
        PyObject *entry = PyList_GET_ITEM(blocks, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3)
            break; /* not the cache's entries: leave it to Python */
        PyObject *block = PyTuple_GET_ITEM(entry, 1);
        if (Py_REFCNT(block) != 1 || Py_REFCNT(PyTuple_GET_ITEM(entry, 2)) != 2)
            continue;
        Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0));
        if (size == -1 && PyErr_Occurred())
            return NULL;
        if (size != want)
            continue;
        Py_INCREF(entry);
        int moved = PyList_SetSlice(blocks, i, i + 1, NULL) == 0 && PyList_Append(blocks, entry) == 0;
        Py_DECREF(entry); /* the list holds it again, or the error is set */
        if (!moved)
            return NULL;
        Py_INCREF(block);
        return block;
    }
    return NULL;
}

/* The array in the received frame `buf` of `size` bytes when it is an inline array with the
 * last head fast_decode decoded (a new array of its own memory, the data copied in): a new
 * reference; NULL without an exception when not. */
static PyObject *
known_inline(Core *self, const unsigned char *buf, Py_ssize_t size)
{
    if (self->recv_head == NULL || size < 8 || buf[0] != KIND_ARRAY)
        return NULL;
    Py_ssize_t head_len = buf[6] | (buf[7] << 8);
    if (size != self->recv_size || head_len != PyBytes_GET_SIZE(self->recv_head) ||
        memcmp(buf, PyBytes_AS_STRING(self->recv_head), head_len) != 0)
        return NULL;
    PyObject *array = PyObject_CallNoArgs(self->recv_copy);
    if (array == NULL)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        Py_DECREF(array);
        return NULL;
    }
    if (view.len == self->recv_nbytes)
        memcpy(view.buf, buf + head_len, view.len);
    else
        Py_CLEAR(array); /* cannot happen: the copy has the template's size */
    PyBuffer_Release(&view);
    return array;
}

/* Remember `array`, just decoded from the inline head `head`, for known_inline: a private
 * C-contiguous copy of it as the template. Failing leaves the last one (errors cleared). */
static void
remember_inline(Core *self, PyObject *head, PyObject *array, Py_ssize_t nbytes, Py_ssize_t size)
{
    PyObject *template = PyObject_CallMethod(array, "__copy__", NULL);
    PyObject *copy = template == NULL ? NULL : PyObject_GetAttrString(template, "__copy__");
    Py_buffer view;
    if (copy != NULL && PyObject_GetBuffer(template, &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) == 0) {
        int fits = view.len == nbytes;
        PyBuffer_Release(&view);
        if (fits) {
            Py_INCREF(head);
            Py_XSETREF(self->recv_head, head);
            Py_XSETREF(self->recv_copy, copy);
            copy = NULL;
            self->recv_nbytes = nbytes;
            self->recv_size = size;
        }
    }
    PyErr_Clear();
    Py_XDECREF(copy);
    Py_XDECREF(template);
}

/* The array `described` (wire._described's (dtype, shape, order, nbytes, inline)) on `memory`
 * from byte `offset`: a new reference, or NULL with an exception. */
static PyObject *
array_on(Core *self, PyObject *described, PyObject *memory, Py_ssize_t offset)
{
    PyObject *start = PyLong_FromSsize_t(offset);
    if (start == NULL)
        return NULL;
    PyObject *args[6] = {PyTuple_GET_ITEM(described, 1), PyTuple_GET_ITEM(described, 0), memory, start,
                         Py_None, PyTuple_GET_ITEM(described, 2)};
    PyObject *array = PyObject_Vectorcall(self->ndarray, args, 6, NULL);
    Py_DECREF(start);
    return array;
}

/* What wire has read of the array head `head` (an entry of heads_from) when its data is a
 * payload: its wire._described tuple (borrowed), or NULL, with an exception only when looking
 * it up failed. */
static PyObject *
payload_described(Core *self, PyObject *head)
{
    if (!PyBytes_CheckExact(head))
        return NULL;
    PyObject *described = PyDict_GetItemWithError(self->described, head); /* borrowed */
    if (described == NULL || !PyTuple_CheckExact(described) || PyTuple_GET_SIZE(described) != 5 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(described, 3)))
        return NULL;
    int inline_ = PyObject_IsTrue(PyTuple_GET_ITEM(described, 4)); /* (dtype, shape, order, nbytes, inline) */
    return inline_ == 0 ? described : NULL;
}

/* The array in a received FRAMED frame from node `from` (`from_id`) with MPI tag `mtag`, if
 * this module decodes it: an inline array (on the frame's own buffer), or an array sent as a
 * payload (received here, into distrcomp.buffers' memory, as wire.decode would; its head is
 * kept in heads_from, as Engine._decode_entry keeps it). A new reference; NULL without an
 * exception when the Python decoder must; NULL with one when receiving failed. */
static PyObject *
fast_decode(Core *self, PyObject *frame, PyObject *from, Py_ssize_t from_id, Py_ssize_t mtag)
{
    Py_ssize_t size = PyByteArray_GET_SIZE(frame);
    const unsigned char *buf = (const unsigned char *)PyByteArray_AS_STRING(frame);
    if (size < 8 || buf[0] != KIND_ARRAY)
        return NULL;
    Py_ssize_t head_len = buf[6] | (buf[7] << 8);
    if (head_len > size)
        return NULL;
    PyObject *head = PyBytes_FromStringAndSize((const char *)buf, head_len);
    if (head == NULL)
        return NULL;
    PyObject *described = PyDict_GetItemWithError(self->described, head); /* borrowed */
    if (described == NULL || !PyTuple_CheckExact(described) || PyTuple_GET_SIZE(described) != 5) {
        Py_DECREF(head);
        return NULL;
    }
    /* (dtype, shape, order, nbytes, inline) */
    PyObject *nbytes = PyTuple_GET_ITEM(described, 3);
    int inline_ = PyObject_IsTrue(PyTuple_GET_ITEM(described, 4));
    if (inline_ < 0 || PyObject_IsTrue(nbytes) != 1 || (inline_ && ((uintptr_t)(buf + head_len)) % 16 != 0)) {
        Py_DECREF(head); /* unaligned inline data: the Python decoder copies it */
        return NULL;
    }
    PyObject *memory;
    Py_ssize_t offset = 0;
    if (inline_) {
        memory = frame;
        Py_INCREF(memory);
        offset = head_len;
    } else {
        if (size != head_len) { /* an array head is the whole frame; the Python decoder says what is wrong */
            Py_DECREF(head);
            return NULL;
        }
        Py_INCREF(head);
        PyList_SetItem(self->heads_from, from_id, head); /* steals; checked a list of n_node by recv */
        memory = receive_block(self, nbytes);
        if (memory == NULL) {
            Py_DECREF(head);
            return NULL;
        }
        PyObject *payload_tag = PyLong_FromSsize_t((mtag & ~(Py_ssize_t)KIND_MASK) | PAYLOAD);
        PyObject *received = payload_tag == NULL ? NULL :
            PyObject_VectorcallMethod(s_recv_method, (PyObject *[]){self->comm, memory, from, payload_tag}, 4, NULL);
        Py_XDECREF(payload_tag);
        if (received == NULL) {
            Py_DECREF(memory);
            Py_DECREF(head);
            return NULL;
        }
        Py_DECREF(received);
    }
    PyObject *array = array_on(self, described, memory, offset);
    Py_DECREF(memory);
    if (array != NULL && inline_) {
        Py_ssize_t data = PyLong_AsSsize_t(nbytes);
        int again = self->recv_seen != NULL && PyBytes_GET_SIZE(self->recv_seen) == head_len &&
                    memcmp(PyBytes_AS_STRING(self->recv_seen), buf, head_len) == 0;
        if (again && data > 0 && head_len + data <= size)
            remember_inline(self, head, array, data, size);
        PyErr_Clear();
        Py_INCREF(head);
        Py_XSETREF(self->recv_seen, head);
    }
    Py_DECREF(head);
    return array;
}

/* An array made, while recv waits for a message from a node, for the REPEAT payload that node
 * would send next (see ready_array); all NULL when none was made. */
typedef struct {
    Py_ssize_t from;
    PyObject *head, *described; /* what it was made for, compared by identity (held: never reused) */
    PyObject *memory, *array;
} Ready;

static void
ready_clear(Ready *ready)
{
    Py_CLEAR(ready->array);
    Py_CLEAR(ready->memory); /* an unused block is idle again */
    Py_CLEAR(ready->head);
    Py_CLEAR(ready->described);
}

/* Make, in *ready, the array a REPEAT payload from node `from` would be received into: an idle
 * block of the cache (never new memory: the payload may not come) and the array on it, as
 * take_repeat makes them after the payload has arrived. recv makes it before it blocks for a
 * message from `from` that has not arrived, so that making it is not on the path between two
 * transfers. Measured on MPICH, 1 MiB ping-pong with mpi4py alone: making an array on the
 * receive buffer after Mrecv cost 6-9% of the message's time (0.90-0.91 of Send/Recv; made
 * before the Mprobe, 0.97), though it takes 0.3 us in a loop of its own: after a transfer, the
 * caches are cold. With payload_isend, distrcomp went from 0.838-0.903 to 0.956-0.982 of
 * Send/Recv. The array is unused when what comes is another message; it is then dropped and
 * its block is idle again. 0 (nothing made when no array head from `from` is known and
 * described, it is inline, or no block of its size is idle), or -1 with an exception. */
static int
ready_array(Core *self, Py_ssize_t from, Ready *ready)
{
    PyObject *head = PyList_GET_ITEM(self->heads_from, from);
    PyObject *described = payload_described(self, head);
    if (described == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *memory = idle_block(self, PyTuple_GET_ITEM(described, 3));
    if (memory == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *array = array_on(self, described, memory, 0);
    if (array == NULL) {
        Py_DECREF(memory);
        return -1;
    }
    ready->from = from;
    Py_INCREF(head);
    ready->head = head;
    Py_INCREF(described);
    ready->described = described;
    ready->memory = memory;
    ready->array = array;
    return 0;
}

/* The array of a REPEAT payload of `count` bytes from node `from`, received here into
 * distrcomp.buffers' memory, when the last array head from that node is one wire has read
 * (wire._described) and says `count` bytes: a new reference. The payload is mpi4py's Message
 * `message`, or when that is NULL, *c_message, probed by the MPI calls. NULL without an
 * exception when Engine._take_repeat must (the message still to be received); NULL with one
 * when receiving failed. The array recv made while it waited (*ready) is used when
 * it is the one. */
static PyObject *
take_repeat(Core *self, PyObject *message, intptr_t *c_message, Py_ssize_t from, Py_ssize_t count, Ready *ready)
{
    PyObject *head = PyList_GET_ITEM(self->heads_from, from);
    PyObject *described = payload_described(self, head);
    if (described == NULL)
        return NULL;
    PyObject *nbytes = PyTuple_GET_ITEM(described, 3);
    if (PyLong_AsSsize_t(nbytes) != count) {
        PyErr_Clear(); /* too large for a Py_ssize_t: not this payload's */
        return NULL;
    }
    Py_INCREF(described); /* the dict may change while the payload is received */
    PyObject *array = NULL, *memory;
    int made = ready->array != NULL && ready->from == from && ready->head == head && ready->described == described;
    if (made) { /* the array recv made while it waited (ready_array): its block is the one */
        memory = ready->memory;
        ready->memory = NULL;
    } else {
        memory = receive_block(self, nbytes);
    }
    if (memory == NULL)
        goto done;
    if (message != NULL) {
        PyObject *received = PyObject_VectorcallMethod(s_recv_method, (PyObject *[]){message, memory}, 2, NULL);
        if (received == NULL)
            goto done;
        Py_DECREF(received);
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(memory, &view, PyBUF_WRITABLE) < 0)
            goto done;
        if (view.len != count) { /* cannot happen: a block has the size asked for */
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_RuntimeError, "distrcomp: a block of %zd bytes for a payload of %zd", view.len, count);
            goto done;
        }
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = self->mpi->mrecv(c_message, view.buf, (int)count);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
        if (err != 0) {
            mpi_error(self, err);
            goto done;
        }
    }
    if (made) {
        array = ready->array;
        ready->array = NULL;
    } else {
        array = array_on(self, described, memory, 0);
    }
done:
    Py_XDECREF(memory);
    Py_DECREF(described);
    return array;
}

/* The next message from any node with any tag, by the MPI calls: its *source, MPI *tag, size in
 * bytes *count, and *message handle (to be received by mrecv).
 * Blocks until one has arrived, without the GIL; before it blocks, makes in *ready the array a
 * REPEAT payload from `src` (a node, or -1: none) would be received into (ready_array).
 * 0, or -1 with an exception. */
static int
mpi_probe(Core *self, intptr_t *message, Py_ssize_t *source, Py_ssize_t *tag, int *count, Py_ssize_t src, Ready *ready)
{
    int found = 0, from = 0, mtag = 0;
    int err = self->mpi->probe(self->mpi_comm, 0, &found, message, &from, &mtag, count);
    if (err == 0 && !found) {
        if (src >= 0 && ready_array(self, src, ready) < 0)
            return -1;
        Py_BEGIN_ALLOW_THREADS
        err = self->mpi->probe(self->mpi_comm, 1, &found, message, &from, &mtag, count);
        Py_END_ALLOW_THREADS
    }
    if (err != 0) {
        mpi_error(self, err);
        return -1;
    }
    *source = from;
    *tag = mtag;
    return 0;
}

static PyObject *
Core_recv(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t src, tag;
    if (self->mprobe == NULL || kwnames != NULL || nargs != 3 || args[2] != Py_None ||
        !as_index(args[0], -1, self->n_node - 1, &src) || !as_index(args[1], -1, self->max_tag, &tag) ||
        !PyList_CheckExact(self->heads_from) || PyList_GET_SIZE(self->heads_from) != self->n_node)
        goto python;
    Py_ssize_t queued = PyObject_Size(self->queue);
    if (queued != 0) {
        if (queued < 0)
            return NULL;
        goto python;
    }
    PyObject *message = NULL, *frame = NULL, *got_src = NULL, *got_mtag = NULL, *obj = NULL, *result = NULL,
             *entry = NULL;
    Py_ssize_t from, mtag;
    intptr_t c_message = 0; /* the MPI calls' probed message, while a FRAMED frame is not received */
    int c_count = 0;
    Ready ready = {0, NULL, NULL, NULL, NULL};
    if (self->mpi != NULL) {
        if (mpi_probe(self, &c_message, &from, &mtag, &c_count, src, &ready) < 0)
            goto done;
        got_src = PyLong_FromSsize_t(from);
        got_mtag = got_src ? PyLong_FromSsize_t(mtag) : NULL;
        if (got_mtag == NULL)
            goto done;
        if ((mtag & KIND_MASK) == BARE) { /* received now; unpickled below, as mpi4py's recv would */
            frame = PyBytes_FromStringAndSize(NULL, c_count);
            if (frame == NULL)
                goto done;
            int err = self->mpi->mrecv(&c_message, PyBytes_AS_STRING(frame), c_count);
            if (err != 0) {
                mpi_error(self, err);
                goto done;
            }
        }
    } else {
        PyObject *probe_args[3] = {self->any_source, self->any_tag, self->status};
        message = PyObject_Vectorcall(self->mprobe, probe_args, 3, NULL);
        if (message == NULL)
            return NULL;
        got_src = PyObject_CallNoArgs(self->get_source);
        got_mtag = got_src ? PyObject_CallNoArgs(self->get_tag) : NULL;
        if (got_mtag == NULL)
            goto done;
        from = PyLong_AsSsize_t(got_src);
        mtag = PyLong_AsSsize_t(got_mtag);
        if (PyErr_Occurred())
            goto done;
    }
    self->n_received++;
    if ((mtag & KIND_MASK) == REPEAT) {
        Py_ssize_t size = c_count;
        if (message != NULL) {
            PyObject *count = PyObject_CallNoArgs(self->get_count);
            size = count == NULL ? -1 : PyLong_AsSsize_t(count);
            Py_XDECREF(count);
            if (size == -1 && PyErr_Occurred())
                goto done;
        }
        obj = take_repeat(self, message, &c_message, from, size, &ready);
        if (obj == NULL && !PyErr_Occurred()) { /* Engine._take_repeat receives it, with mpi4py */
            if (message == NULL) {
                PyObject *handle = handle_object(c_message);
                message = handle == NULL ? NULL : PyObject_CallOneArg(self->message_fromhandle, handle);
                Py_XDECREF(handle);
                if (message != NULL)
                    c_message = 0; /* the Message object has it now */
            }
            PyObject *count = message == NULL ? NULL : PyLong_FromSsize_t(size);
            if (count == NULL)
                goto done;
            entry = PyObject_VectorcallMethod(
                s_take_repeat, (PyObject *[]){(PyObject *)self, message, got_src, got_mtag, count}, 5, NULL);
            Py_DECREF(count);
            if (entry == NULL)
                goto done;
        }
        if (obj == NULL && entry == NULL)
            goto done;
    } else if ((mtag & KIND_MASK) == BARE) {
        /* mpi4py receives and unpickles it (the buffer mprobe allocated); as _take_frame does.
         * Received by the MPI calls, MPI.pickle.loads unpickles it, as mpi4py's recv does. */
        obj = message == NULL ? PyObject_CallOneArg(self->loads, frame) : PyObject_CallMethodNoArgs(message, s_recv_lower);
        if (obj == NULL) {
            if (PyErr_ExceptionMatches(self->mpi_error) || !PyErr_ExceptionMatches(PyExc_Exception))
                goto done;
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            entry = PyObject_VectorcallMethod(
                s_undecodable_entry, (PyObject *[]){(PyObject *)self, got_src, got_mtag, value}, 4, NULL);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            if (entry == NULL)
                goto done;
        }
    } else {
        Py_ssize_t size = c_count;
        if (message != NULL) {
            PyObject *count = PyObject_CallNoArgs(self->get_count);
            if (count == NULL)
                goto done;
            size = PyLong_AsSsize_t(count);
            Py_DECREF(count);
        }
        if (size < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_RuntimeError, "distrcomp: probed a frame of %zd bytes", size);
            goto done;
        }
        if (message == NULL && size <= FRAME_MAX) {
            /* The MPI calls receive a frame here, and a frame with the last inline head
             * received needs no bytearray (known_inline) */
            unsigned char stack[FRAME_MAX];
            int err = self->mpi->mrecv(&c_message, stack, (int)size);
            if (err != 0) {
                mpi_error(self, err);
                goto done;
            }
            obj = known_inline(self, stack, size);
            if (obj == NULL && PyErr_Occurred())
                goto done;
            if (obj == NULL && (frame = PyByteArray_FromStringAndSize((const char *)stack, size)) == NULL)
                goto done;
        } else {
            frame = PyByteArray_FromStringAndSize(NULL, size);
            if (frame == NULL)
                goto done;
            if (message == NULL) {
                int err = self->mpi->mrecv(&c_message, PyByteArray_AS_STRING(frame), (int)size);
                if (err != 0) {
                    mpi_error(self, err);
                    goto done;
                }
            } else {
                PyObject *received =
                    PyObject_VectorcallMethod(s_recv_method, (PyObject *[]){message, frame}, 2, NULL);
                if (received == NULL)
                    goto done;
                Py_DECREF(received);
            }
            obj = known_inline(self, (const unsigned char *)PyByteArray_AS_STRING(frame), size);
            if (obj == NULL && PyErr_Occurred())
                goto done;
        }
        if (obj == NULL)
            obj = fast_decode(self, frame, got_src, from, mtag);
        if (obj == NULL) {
            if (PyErr_Occurred())
                goto done;
            entry = PyObject_VectorcallMethod(s_decode_entry,
                                              (PyObject *[]){(PyObject *)self, frame, got_src, got_mtag}, 4, NULL);
            if (entry == NULL)
                goto done;
        }
    }
    if (entry == NULL && (src < 0 || from == src) && (tag < 0 || (mtag >> KIND_BITS) == tag)) {
        result = obj;
        obj = NULL;
        goto done;
    }
    /* Queue the entry (the queue was empty) and let the Python engine take it from there. */
    if (entry == NULL && (entry = Py_BuildValue("(nnO)", from, mtag >> KIND_BITS, obj)) == NULL)
        goto done;
    PyObject *appended = PyObject_CallMethodOneArg(self->queue, s_append, entry);
    if (appended == NULL)
        goto done;
    Py_DECREF(appended);
    result = call_python(self, s_recv_py, args, nargs, kwnames);
done:
    ready_clear(&ready);
    Py_XDECREF(message);
    Py_XDECREF(frame);
    Py_XDECREF(got_src);
    Py_XDECREF(got_mtag);
    Py_XDECREF(obj);
    Py_XDECREF(entry);
    return result;
python:
    return call_python(self, s_recv_py, args, nargs, kwnames);
}

/* ------------------------------------------------------------------ distrcomp.send / recv */

/* distrcomp.send and distrcomp.recv themselves, when compiled: once an engine is registered
 * they call it without a Python frame in between; before that (MPI not initialised yet), with
 * keyword arguments, or with a wrong number of arguments, they call the Python functions they
 * replace, which initialise MPI or raise the TypeError Python would. */
static PyObject *registered;        /* the process's engine (a Core), once initialised */
static PyObject *send_py, *recv_py; /* distrcomp's Python send and recv */
static PyObject *zero, *any_tag;    /* the default tags: 0 for send, ANY_TAG (-1) for recv */
static PyTypeObject *core_type;

static PyObject *Core_send(Core *, PyObject *const *, Py_ssize_t, PyObject *);
static PyObject *Core_recv(Core *, PyObject *const *, Py_ssize_t, PyObject *);

static PyObject *
entry_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (registered == NULL || kwnames != NULL || nargs < 2 || nargs > 3)
        return PyObject_Vectorcall(send_py, args, nargs, kwnames);
    PyObject *full[3] = {args[0], args[1], nargs == 3 ? args[2] : zero};
    return Core_send((Core *)registered, full, 3, NULL);
}

static PyObject *
entry_recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (registered == NULL || kwnames != NULL || nargs < 1 || nargs > 3)
        return PyObject_Vectorcall(recv_py, args, nargs, kwnames);
    PyObject *full[3] = {args[0], nargs >= 2 ? args[1] : any_tag, nargs == 3 ? args[2] : Py_None};
    return Core_recv((Core *)registered, full, 3, NULL);
}

static PyMethodDef entry_defs[2] = {
    {"send", (PyCFunction)(void (*)(void))entry_send, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"recv", (PyCFunction)(void (*)(void))entry_recv, METH_FASTCALL | METH_KEYWORDS, NULL},
};

/* entry_points(send, recv, send_signature, recv_signature): the compiled send and recv, each
 * documented as the Python function it stands for (signature line, then its docstring). */
static PyObject *
module_entry_points(PyObject *module, PyObject *args)
{
    PyObject *functions[2];
    const char *signatures[2];
    if (!PyArg_ParseTuple(args, "OOss:entry_points", &functions[0], &functions[1], &signatures[0], &signatures[1]))
        return NULL;
    PyObject *made[2] = {NULL, NULL};
    PyObject *name = PyUnicode_FromString("distrcomp");
    if (name == NULL)
        return NULL;
    for (int i = 0; i < 2; i++) {
        if (entry_defs[i].ml_doc != NULL)
            continue; /* documented once per process */
        PyObject *doc = PyObject_GetAttrString(functions[i], "__doc__");
        if (doc == NULL)
            goto fail;
        PyObject *text = PyUnicode_Check(doc)
                             ? PyUnicode_FromFormat("%s%s\n--\n\n%U", entry_defs[i].ml_name, signatures[i], doc)
                             : PyUnicode_FromFormat("%s%s\n--\n\n", entry_defs[i].ml_name, signatures[i]);
        Py_DECREF(doc);
        if (text == NULL)
            goto fail;
        const char *utf8 = PyUnicode_AsUTF8(text);
        char *copy = utf8 ? PyMem_RawMalloc(strlen(utf8) + 1) : NULL; /* lives as long as the process */
        if (copy != NULL)
            strcpy(copy, utf8);
        Py_DECREF(text);
        if (copy == NULL) {
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            goto fail;
        }
        entry_defs[i].ml_doc = copy;
    }
    for (int i = 0; i < 2; i++) {
        made[i] = PyCFunction_NewEx(&entry_defs[i], NULL, name);
        if (made[i] == NULL)
            goto fail;
    }
    Py_DECREF(name);
    if ((zero == NULL && (zero = PyLong_FromLong(0)) == NULL) ||
        (any_tag == NULL && (any_tag = PyLong_FromLong(-1)) == NULL))
        goto fail_late;
    /* Again after importlib.reload(distrcomp): the new module's Python functions. */
    Py_INCREF(functions[0]);
    Py_XSETREF(send_py, functions[0]);
    Py_INCREF(functions[1]);
    Py_XSETREF(recv_py, functions[1]);
    return Py_BuildValue("(NN)", made[0], made[1]);
fail:
    Py_DECREF(name);
fail_late:
    Py_XDECREF(made[0]);
    Py_XDECREF(made[1]);
    return NULL;
}

/* register(engine): the engine distrcomp.send and recv call from now on. */
static PyObject *
module_register(PyObject *module, PyObject *engine)
{
    if (!PyObject_TypeCheck(engine, core_type))
        return PyErr_Format(PyExc_TypeError, "distrcomp._hotpath.register: not a Core: %R", engine);
    Py_INCREF(engine);
    Py_XSETREF(registered, engine);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"entry_points", module_entry_points, METH_VARARGS,
     "entry_points(send, recv, send_signature, recv_signature): compiled distrcomp.send and recv."},
    {"register", module_register, METH_O, "register(engine): the engine the compiled send and recv call."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ the type */

static PyObject *
new_ref(PyObject *object) /* Py_NewRef, which Python 3.9 lacks */
{
    Py_INCREF(object);
    return object;
}

static PyObject *
Core_attach(Core *self, PyObject *args)
{
    PyObject *c_heads, *payload_heads, *described, *any_source, *any_tag, *mpi_error, *block, *blocks;
    PyObject *payload_type;
    Py_ssize_t frame_max;
    if (!PyArg_ParseTuple(args, "O!O!O!nOOOOO!O:_attach", &PyDict_Type, &c_heads, &PyDict_Type, &payload_heads,
                          &PyDict_Type, &described, &frame_max, &any_source, &any_tag, &mpi_error, &block,
                          &PyList_Type, &blocks, &payload_type))
        return NULL;
    if (frame_max != FRAME_MAX)
        return PyErr_Format(PyExc_RuntimeError, "distrcomp._hotpath was built for FRAME_MAX=%d, wire has %zd",
                            FRAME_MAX, frame_max);
    if (self->comm == NULL || self->status == NULL)
        return PyErr_Format(PyExc_RuntimeError, "distrcomp._hotpath: comm and _status must be set before _attach");
    PyObject *numpy = PyImport_ImportModule("numpy");
    if (numpy == NULL)
        return NULL;
    PyObject *ndarray = PyObject_GetAttrString(numpy, "ndarray");
    Py_DECREF(numpy);
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) {
        Py_XDECREF(ndarray);
        return NULL;
    }
    PyObject *dumps = PyObject_GetAttrString(pickle, "dumps");
    Py_DECREF(pickle);
    PyObject *oob = PyList_New(0);
    PyObject *fields[] = {
        PyObject_GetAttrString(self->comm, "Isend"),
        PyObject_GetAttrString(self->comm, "isend"),
        PyObject_GetAttrString(self->comm, "mprobe"),
        PyObject_GetAttrString(self->comm, "improbe"),
        PyObject_GetAttrString(self->status, "Get_count"),
        PyObject_GetAttrString(self->status, "Get_source"),
        PyObject_GetAttrString(self->status, "Get_tag"),
        ndarray,
        dumps,
        PyLong_FromLong(5),
        Py_BuildValue("(s)", "buffer_callback"),
        oob,
        oob ? PyObject_GetAttrString(oob, "append") : NULL,
        new_ref(c_heads),
        new_ref(payload_heads),
        new_ref(described),
        new_ref(any_source),
        new_ref(any_tag),
        new_ref(mpi_error),
        new_ref(block),
        new_ref(blocks),
        new_ref(payload_type),
    };
    PyObject **slots[] = {&self->isend, &self->isend_lower, &self->mprobe, &self->improbe, &self->get_count,
                          &self->get_source, &self->get_tag, &self->ndarray, &self->dumps, &self->protocol, &self->kw_callback,
                          &self->oob, &self->oob_append, &self->c_heads, &self->payload_heads, &self->described,
                          &self->any_source, &self->any_tag, &self->mpi_error, &self->block, &self->blocks,
                          &self->payload_type};
    size_t n = sizeof(fields) / sizeof(fields[0]);
    int failed = 0;
    for (size_t i = 0; i < n; i++)
        failed |= fields[i] == NULL;
    if (failed || !PyType_Check(ndarray)) {
        for (size_t i = 0; i < n; i++)
            Py_XDECREF(fields[i]);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "distrcomp._hotpath: numpy.ndarray is not a type");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        Py_XSETREF(*slots[i], fields[i]);
    Py_RETURN_NONE;
}

/* _use_mpicalls(capsule, Request.fromhandle, Message.fromhandle, MPI.pickle.loads): make inline
 * frames' sends, every receive's probe and REPEAT payloads' receives with the calls in
 * distrcomp._mpicalls_<abi>'s capsule, on comm's handle. */
static PyObject *
Core_use_mpicalls(Core *self, PyObject *args)
{
    PyObject *capsule, *request_fromhandle, *message_fromhandle, *loads;
    if (!PyArg_ParseTuple(args, "OOOO:_use_mpicalls", &capsule, &request_fromhandle, &message_fromhandle, &loads))
        return NULL;
    if (self->isend == NULL)
        return PyErr_Format(PyExc_RuntimeError, "distrcomp._hotpath: _use_mpicalls before _attach");
    const dc_mpicalls *mpi = PyCapsule_GetPointer(capsule, DC_MPICALLS_CAPSULE);
    if (mpi == NULL)
        return NULL;
    if (mpi->version != DC_MPICALLS_VERSION)
        return PyErr_Format(PyExc_RuntimeError, "distrcomp._hotpath needs MPI calls version %d, got %d",
                            DC_MPICALLS_VERSION, mpi->version);
    PyObject *handle = PyObject_GetAttrString(self->comm, "handle");
    if (handle == NULL)
        return NULL;
    void *comm = PyLong_AsVoidPtr(handle);
    Py_DECREF(handle);
    if (comm == NULL && PyErr_Occurred())
        return NULL;
    Py_INCREF(request_fromhandle);
    Py_XSETREF(self->request_fromhandle, request_fromhandle);
    Py_INCREF(message_fromhandle);
    Py_XSETREF(self->message_fromhandle, message_fromhandle);
    Py_INCREF(loads);
    Py_XSETREF(self->loads, loads);
    self->mpi_comm = (intptr_t)comm;
    self->mpi = mpi;
    Py_RETURN_NONE;
}

#define OBJECT_FIELDS(X)                                                                                      \
    X(comm) X(status) X(queue) X(pending) X(sent) X(isend) X(isend_lower) X(mprobe) X(improbe)                \
    X(get_count) X(get_source) X(get_tag) X(any_source) X(any_tag) X(mpi_error) X(c_heads)                    \
    X(payload_heads) X(described) X(ndarray) X(dumps) X(protocol) X(kw_callback) X(block)                     \
    X(blocks) X(payload_type) X(oob) X(oob_append) X(last_dtype) X(last_head) X(request_fromhandle)         \
    X(loads) X(recv_head) X(recv_copy) X(recv_seen) X(heads_to) X(heads_from) X(message_fromhandle)

static int
Core_traverse(Core *self, visitproc visit, void *arg)
{
#define VISIT(name) Py_VISIT(self->name);
    OBJECT_FIELDS(VISIT)
#undef VISIT
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
Core_clear(Core *self)
{
#define CLEAR(name) Py_CLEAR(self->name);
    OBJECT_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void
Core_dealloc(Core *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef Core_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Core_send, METH_FASTCALL | METH_KEYWORDS,
     "send(dest, obj, tag): see distrcomp.send; common messages here, the rest by _send_py."},
    {"recv", (PyCFunction)(void (*)(void))Core_recv, METH_FASTCALL | METH_KEYWORDS,
     "recv(src, tag, timeout): see distrcomp.recv; common messages here, the rest by _recv_py."},
    {"wait", (PyCFunction)(void (*)(void))Core_wait, METH_FASTCALL,
     "wait(request, *keep): see Engine.wait; block until request completes, queueing the frames that arrive."},
    {"_attach", (PyCFunction)Core_attach, METH_VARARGS,
     "_attach(c_heads, payload_heads, described, frame_max, any_source, any_tag, mpi_error, block, blocks, "
     "payload_type): "
     "bind to comm, _status, wire's caches, buffers.block and its cache's list, the MPI datatype of a payload."},
    {"_use_mpicalls", (PyCFunction)Core_use_mpicalls, METH_VARARGS,
     "_use_mpicalls(capsule, Request.fromhandle, Message.fromhandle, MPI.pickle.loads): send inline frames, "
     "probe and receive REPEAT payloads with distrcomp._mpicalls_<abi>'s MPI calls instead of mpi4py's."},
    {NULL, NULL, 0, NULL},
};

/* _mpicalls: whether _use_mpicalls gave this engine its own MPI calls (p2p.mpi_calls). */
static PyObject *
Core_get_mpicalls(Core *self, void *closure)
{
    return PyBool_FromLong(self->mpi != NULL);
}

static PyGetSetDef Core_getset[] = {
    {"_mpicalls", (getter)Core_get_mpicalls, NULL, "whether inline frames and probes use _mpicalls_<abi>", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Core_members[] = {
    {"comm", T_OBJECT_EX, offsetof(Core, comm), 0, NULL},
    {"_status", T_OBJECT_EX, offsetof(Core, status), 0, NULL},
    {"_queue", T_OBJECT_EX, offsetof(Core, queue), 0, NULL},
    {"_pending", T_OBJECT_EX, offsetof(Core, pending), 0, NULL},
    {"_sent", T_OBJECT_EX, offsetof(Core, sent), 0, NULL},
    {"_heads_to", T_OBJECT_EX, offsetof(Core, heads_to), 0, NULL},
    {"_heads_from", T_OBJECT_EX, offsetof(Core, heads_from), 0, NULL},
    {"n_node", T_PYSSIZET, offsetof(Core, n_node), 0, NULL},
    {"max_tag", T_PYSSIZET, offsetof(Core, max_tag), 0, NULL},
    {"_n_received", T_PYSSIZET, offsetof(Core, n_received), 0, NULL},
    {"_purge_at", T_PYSSIZET, offsetof(Core, purge_at), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Core_slots[] = {
    {Py_tp_doc, "The compiled half of distrcomp.p2p's engine (see the module docstring)."},
    {Py_tp_methods, Core_methods},
    {Py_tp_members, Core_members},
    {Py_tp_getset, Core_getset},
    {Py_tp_traverse, Core_traverse},
    {Py_tp_clear, Core_clear},
    {Py_tp_dealloc, Core_dealloc},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

static PyType_Spec Core_spec = {
    "distrcomp._hotpath.Core",
    sizeof(Core),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    Core_slots,
};

static int
intern_names(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_send_py, "_send_py"}, {&s_send_stream, "_send_stream"}, {&s_recv_py, "_recv_py"}, {&s_decode_entry, "_decode_entry"},
        {&s_purge, "_purge"},     {&s_recv_method, "Recv"}, {&s_recv_lower, "recv"}, {&s_test, "Test"}, {&s_take_frame, "_take_frame"},
        {&s_abandon, "_abandon"}, {&s_take_repeat, "_take_repeat"},
        {&s_undecodable_entry, "_undecodable_entry"}, {&s_dtype, "dtype"},
        {&s_shape, "shape"},      {&s_append, "append"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return -1;
    }
    return 0;
}

static struct PyModuleDef hotpath_module = {
    PyModuleDef_HEAD_INIT, "distrcomp._hotpath",
    "The compiled path of small messages' send and recv (optional; see distrcomp.p2p).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    if (intern_names() < 0)
        return NULL;
    PyObject *module = PyModule_Create(&hotpath_module);
    if (module == NULL)
        return NULL;
    PyObject *core = PyType_FromSpec(&Core_spec);
    if (core == NULL || PyModule_AddObject(module, "Core", core) < 0) {
        Py_XDECREF(core);
        Py_DECREF(module);
        return NULL;
    }
    core_type = (PyTypeObject *)core; /* the module holds it, and the module is never unloaded */
    return module;
}
