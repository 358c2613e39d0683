/* netloop._speedups: the compiled hot path.
 *
 * Two things, each a copy of pure-Python code that stays the reference implementation:
 *
 *   ConnCore  the base of netloop.Conn: the fields the hot path touches (``_data``, ``_pos``, ``_fd``, ``_state``,
 *             ``_seen``, ``_inbound``, ``_outbound``, ``_loop``, ``_send``, ``_recv``) as C members, and
 *             ``next``, ``peek``, ``discard``, ``read_into``, ``inbound_buffered``, ``write``, ``writev`` and
 *             ``outbound_buffered`` (netloop/_conn.py's ``Conn`` methods of those names). Anything off the
 *             common path calls the Python method.
 *   serve     ``EventLoop._serve`` (netloop/_eventloop.py) on epoll: poll, the inlined read path for plain
 *             "readable" events on accepted connections, every other event to its handler, tasks, timers.
 *
 * A connection whose ``_send``/``_recv`` are its socket's own methods is written and read with send(2)/recv(2)
 * on its descriptor, holding the GIL: the socket is non-blocking, so neither call waits. Anything else in those
 * slots (TLS, a client's held sends) is called as Python.
 *
 * Change this file and the Python it mirrors together; the test suite runs against both (NETLOOP_PURE=1).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/epoll.h>
#define HAVE_SERVE 1
#else
#define HAVE_SERVE 0
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* What configure() hands over from the Python side. */
static PyObject *no_inbound;         /* netloop._conn.NO_INBOUND */
static PyObject *no_outbound;        /* netloop._conn.NO_OUTBOUND */
static PyObject *short_buffer_error; /* netloop.ShortBufferError */
static PyObject *py_next;            /* the reference Conn.next, for the cases handled in Python */
static PyObject *py_write;           /* the reference Conn.write */
static PyTypeObject *socket_type;    /* _socket.socket */
static int closed_state = 7;         /* netloop._lifecycle.CLOSED */
/* netloop._lifecycle.SENDS: whether a write in each state goes to the socket at once (else Conn._enqueue decides:
 * queued, refused or dropped). A state outside the table sends nothing here. */
#define MAX_STATES 64
static unsigned char state_sends[MAX_STATES];
static Py_ssize_t state_count = 0;
static PyObject *empty;              /* b"" */

/* What references() hands over: the reference methods the compiled peek, discard, read_into and writev call for
 * every case they do not handle themselves. */
static PyObject *py_peek, *py_discard, *py_read_into, *py_writev;

static PyObject *s_size, *s_read, *s_enqueue, *s_buffer_rest, *s_fail_soon, *s_bytes_out, *s_bytes_in, *s_now,
    *s_running, *s_sleeping, *s_run_timers, *s_run_tasks, *s_close, *s_peer_eof, *s_keep_rest, *s_act,
    *s_handler_failed, *s_on_traffic, *s_internal_error, *s_keep_read, *s_read_failed, *s_read_on, *s_write_failed;

/* -- ConnCore ---------------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *data;
    Py_ssize_t pos;
    int fd;
    int state;
    double seen;
    PyObject *inbound;
    PyObject *outbound;
    PyObject *loop;
    PyObject *send;
    PyObject *recv;
    PyObject *more;   /* None, or a callable true while input waits beyond the socket (TLS: records in OpenSSL) */
    char send_direct; /* _send is the socket's own send */
    char recv_direct; /* _recv is the socket's own recv */
} ConnCore;

static PyTypeObject ConnCoreType;

static int
conn_traverse(ConnCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->data);
    Py_VISIT(self->inbound);
    Py_VISIT(self->outbound);
    Py_VISIT(self->loop);
    Py_VISIT(self->send);
    Py_VISIT(self->recv);
    Py_VISIT(self->more);
    return 0;
}

static int
conn_clear(ConnCore *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->inbound);
    Py_CLEAR(self->outbound);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->send);
    Py_CLEAR(self->recv);
    Py_CLEAR(self->more);
    return 0;
}

static void
conn_dealloc(ConnCore *self)
{
    /* A static type: a Python subclass's dealloc releases the reference its instance holds on its class. */
    PyObject_GC_UnTrack(self);
    conn_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Whether ``method`` is ``sock.<name>`` of a socket object: then the C path may do the call itself. */
static char
socket_method(PyObject *method, const char *name)
{
    if (method == NULL || !PyCFunction_Check(method) || socket_type == NULL) {
        return 0;
    }
    PyObject *owner = PyCFunction_GET_SELF(method);
    if (owner == NULL || !PyObject_TypeCheck(owner, socket_type)) {
        return 0;
    }
    return strcmp(((PyCFunctionObject *)method)->m_ml->ml_name, name) == 0;
}

/* ``_send`` and ``_recv``: the callable, and whether it is the socket's own method of that name. */
typedef struct {
    const char *name;
    size_t slot;   /* offset of the callable */
    size_t direct; /* offset of its flag */
} SocketCall;

static SocketCall send_call = {"send", offsetof(ConnCore, send), offsetof(ConnCore, send_direct)};
static SocketCall recv_call = {"recv", offsetof(ConnCore, recv), offsetof(ConnCore, recv_direct)};

/* An object field of ConnCore: its attribute name and where it is. */
typedef struct {
    const char *name;
    size_t offset;
} Field;

static int
refuse_deletion(ConnCore *self, const char *name)
{
    PyErr_Format(PyExc_AttributeError, "cannot delete '%s' of '%.100s': the compiled core reads it", name,
                 Py_TYPE(self)->tp_name);
    return -1;
}

static PyObject *
conn_get_call(ConnCore *self, void *closure)
{
    SocketCall *call = closure;
    PyObject *value = *(PyObject **)((char *)self + call->slot);
    if (value == NULL) {
        return PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '_%s'", Py_TYPE(self)->tp_name,
                            call->name);
    }
    return Py_NewRef(value);
}

static int
conn_set_call(ConnCore *self, PyObject *value, void *closure)
{
    SocketCall *call = closure;
    if (value == NULL) {
        char name[16];
        snprintf(name, sizeof(name), "_%s", call->name);
        return refuse_deletion(self, name);
    }
    PyObject **slot = (PyObject **)((char *)self + call->slot);
    Py_XSETREF(*slot, Py_NewRef(value));
    *((char *)self + call->direct) = socket_method(value, call->name);
    return 0;
}

/* The objects: unset until ``Conn.__init__`` sets them (reading one then raises AttributeError, as an unset slot of
 * the pure-Python core does), and never deleted again, so the compiled methods find them where they left them. */
static PyObject *
conn_get_field(ConnCore *self, void *closure)
{
    PyObject *value = *(PyObject **)((char *)self + ((Field *)closure)->offset);
    if (value == NULL) {
        return PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(self)->tp_name,
                            ((Field *)closure)->name);
    }
    return Py_NewRef(value);
}

static int
conn_set_field(ConnCore *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        return refuse_deletion(self, ((Field *)closure)->name);
    }
    Py_XSETREF(*(PyObject **)((char *)self + ((Field *)closure)->offset), Py_NewRef(value));
    return 0;
}

static Field data_field = {"_data", offsetof(ConnCore, data)};
static Field inbound_field = {"_inbound", offsetof(ConnCore, inbound)};
static Field outbound_field = {"_outbound", offsetof(ConnCore, outbound)};
static Field loop_field = {"_loop", offsetof(ConnCore, loop)};
static Field more_field = {"_more", offsetof(ConnCore, more)};

/* ``buffer._size`` of an inbound or outbound buffer; -1 with an exception set on failure. */
static Py_ssize_t
buffered(PyObject *buffer, PyObject *none)
{
    if (buffer == none) {
        return 0;
    }
    PyObject *size = PyObject_GetAttr(buffer, s_size);
    if (size == NULL) {
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(size);
    Py_DECREF(size);
    return n;
}

/* -1 with RuntimeError set until configure() handed over what the methods need. */
static int
check_configured(void)
{
    if (py_write == NULL || py_writev == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "netloop._speedups is not configured (netloop._compiled.adopt)");
        return -1;
    }
    return 0;
}

/* Call the Python reference ``method(self, *args)``. */
static PyObject *
reference(PyObject *method, ConnCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8];
    PyObject **stack = small;
    if (total + 1 > 8) {
        stack = PyMem_Malloc((total + 1) * sizeof(PyObject *));
        if (stack == NULL) {
            return PyErr_NoMemory();
        }
    }
    stack[0] = (PyObject *)self;
    for (Py_ssize_t i = 0; i < total; i++) {
        stack[i + 1] = args[i];
    }
    PyObject *result = PyObject_Vectorcall(method, stack, nargs + 1, kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return result;
}

/* The raised exception, normalized; the error indicator is cleared. */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise ``exc`` (from take_exception) again; steals it. */
static void
restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL) {
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

static int
set_data(ConnCore *self, PyObject *data)
{
    /* steals ``data`` */
    Py_XSETREF(self->data, data);
    return 0;
}

PyDoc_STRVAR(conn_next_doc, "next($self, n=-1)\n--\n\n*loop* Consume and return ``n`` bytes (all when ``n < 0``); ``ShortBufferError`` if fewer are there.");

static PyObject *
conn_next(ConnCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (check_configured() < 0) {
        return NULL;
    }
    Py_ssize_t n = -1;
    PyObject *data = self->data;
    if (kwnames != NULL || nargs > 1 || data == NULL || !PyBytes_CheckExact(data)
        || (nargs == 1 && !PyLong_CheckExact(args[0]))) {
        return reference(py_next, self, args, nargs, kwnames);
    }
    if (nargs == 1) {
        n = PyLong_AsSsize_t(args[0]);
        if (n == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear(); /* past Py_ssize_t: the reference answers (ShortBufferError, or all for a negative) */
            return reference(py_next, self, args, nargs, kwnames);
        }
    }
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (len == 0) {
        if (self->inbound == NULL) {
            return reference(py_next, self, args, nargs, kwnames); /* unset: the reference raises AttributeError */
        }
        /* Bytes kept from earlier reads (the current read's bytes are in _data only while none are kept). */
        PyObject *count = nargs == 1 ? Py_NewRef(args[0]) : PyLong_FromSsize_t(-1);
        if (count == NULL) {
            return NULL;
        }
        PyObject *result = PyObject_CallMethodOneArg(self->inbound, s_read, count);
        Py_DECREF(count);
        return result;
    }
    Py_ssize_t pos = self->pos;
    if (pos < 0 || pos > len) {
        /* ``_pos`` set from Python to no offset of ``_data``: never read memory with it; Python slices instead. */
        return reference(py_next, self, args, nargs, kwnames);
    }
    if (n < 0) {
        /* The whole read: the received bytes object itself when none was taken before. */
        self->data = Py_NewRef(empty);
        if (pos) {
            self->pos = 0;
            PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + pos, len - pos);
            Py_DECREF(data);
            return rest;
        }
        return data; /* the reference _data held */
    }
    if (n > len - pos) { /* not ``pos + n > len``: that overflows for a huge ``n`` */
        return PyErr_Format(short_buffer_error, "asked for %zd bytes, %zd buffered", n, len - pos);
    }
    Py_ssize_t end = pos + n;
    PyObject *part;
    if (pos == 0 && end == len) {
        part = Py_NewRef(data);
    } else {
        part = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + pos, n);
        if (part == NULL) {
            return NULL;
        }
    }
    if (end == len) {
        set_data(self, Py_NewRef(empty));
        self->pos = 0;
    } else {
        self->pos = end;
    }
    return part;
}

/* ``obj.<name>()``, or ``obj.<name>(arg)``, for its effect: 0, or -1 when it raised. */
static int
call_method(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *r = arg == NULL ? PyObject_CallMethodNoArgs(obj, name) : PyObject_CallMethodOneArg(obj, name, arg);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* ``obj.<name>(exc)`` with the exception just raised, which it takes over: 0, or -1 when the call raised. */
static int
hand_exception(PyObject *obj, PyObject *name)
{
    PyObject *exc = take_exception();
    int r = call_method(obj, name, exc);
    Py_XDECREF(exc);
    return r;
}

/* A dictionary's version (PEP 509): CPython gives a dict a new one at every change, so an unchanged version means
 * an unchanged dict and what was read from it still holds. Deprecated since 3.12 (still kept up to date there); from
 * 3.13 an instance's attributes may be stored beside its dict, so there the compiled loop reads every time. */
#if PY_VERSION_HEX < 0x030D0000
#define HAVE_DICT_VERSION 1
static inline uint64_t
dict_version(PyObject *dict)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return ((PyDictObject *)dict)->ma_version_tag;
#pragma GCC diagnostic pop
}
#else
#define HAVE_DICT_VERSION 0
static inline uint64_t
dict_version(PyObject *dict)
{
    (void)dict;
    return 0;
}
#endif

/* The loop's own attributes (``now``, ``bytes_out``...) live in its instance dict: EventLoop has no slots or
 * descriptors for them, so reading and writing that dict, when it is at hand, skips the attribute protocol. */
static PyObject *
loop_get(PyObject *dict, PyObject *loop, PyObject *name)
{
    if (dict != NULL) {
        PyObject *value = PyDict_GetItemWithError(dict, name);
        if (value != NULL) {
            return Py_NewRef(value);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_GetAttr(loop, name);
}

static int
loop_set(PyObject *dict, PyObject *loop, PyObject *name, PyObject *value)
{
    return dict != NULL ? PyDict_SetItem(dict, name, value) : PyObject_SetAttr(loop, name, value);
}

/* ``loop.<name> += n`` */
static int
add_to(PyObject *dict, PyObject *loop, PyObject *name, Py_ssize_t n)
{
    PyObject *old = loop_get(dict, loop, name);
    if (old == NULL) {
        return -1;
    }
    PyObject *inc = PyLong_FromSsize_t(n);
    PyObject *sum = inc ? PyNumber_Add(old, inc) : NULL;
    Py_DECREF(old);
    Py_XDECREF(inc);
    if (sum == NULL) {
        return -1;
    }
    int r = loop_set(dict, loop, name, sum);
    Py_DECREF(sum);
    return r;
}

#if HAVE_SERVE
/* ``loop._sleeping`` while the compiled loop serves: a flag whose truth is whether the loop is about to wait or
 * waiting in epoll_wait, so that another thread's ``EventLoop.submit`` decides whether to write the wake-up as it does
 * on the Python loop's bool. The loop sets and clears it in C around each wait (two dictionary writes per iteration
 * before): with the GIL held, as the bool was written, so the order "set, then look at the queue" against submit's
 * "append, then read it" is the same on both cores. */
typedef struct {
    PyObject_HEAD
    int sleeping;
} SleepFlag;

static int
sleep_flag_bool(SleepFlag *self)
{
    return self->sleeping;
}

static PyObject *
sleep_flag_repr(SleepFlag *self)
{
    return PyUnicode_FromString(self->sleeping ? "<netloop loop: sleeping>" : "<netloop loop: awake>");
}

static PyNumberMethods sleep_flag_number = {
    .nb_bool = (inquiry)sleep_flag_bool,
};

static PyTypeObject SleepFlagType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "netloop._speedups.SleepFlag",
    .tp_doc = PyDoc_STR("True while the compiled loop waits (or is about to wait) in epoll_wait."),
    .tp_basicsize = sizeof(SleepFlag),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_repr = (reprfunc)sleep_flag_repr,
    .tp_as_number = &sleep_flag_number,
};
#endif /* HAVE_SERVE */

/* Each loop ``serve`` runs. Its reads and the writes on its connections count their bytes here rather than in
 * ``loop.bytes_in`` and ``loop.bytes_out`` (two dictionary updates each per request); ``counted(loop)`` adds them for
 * ``EventLoop.stats``, and ``serve`` moves them into the attributes when it returns. A list of the running loops,
 * touched only with the GIL held (the compiled loop runs only where there is one). */
typedef struct Serving {
    PyObject *loop;
    PyObject *dict;
    Py_ssize_t received;
    Py_ssize_t sent;
    struct Serving *next;
    /* ``loop.now`` and ``loop._running`` as of the dict's version ``synced`` (0: not known): while the version is
     * the same, nobody has written the dict since but this loop itself, through loop_write. */
    uint64_t synced;
    double now;
    int running;
} Serving;

static Serving *running_loops;
static Serving *recent; /* the entry the last write found */

/* A forked child runs none of its parent's loops (their threads are not in it). */
static void
forget_running_loops(void)
{
    running_loops = NULL;
    recent = NULL;
}

static Serving *
serving_of(PyObject *loop)
{
    if (recent != NULL && recent->loop == loop) {
        return recent;
    }
    for (Serving *sv = running_loops; sv != NULL; sv = sv->next) {
        if (sv->loop == loop) {
            return recent = sv;
        }
    }
    return NULL;
}

/* Read ``loop.now`` and ``loop._running`` again: 0, or -1 with an exception set. */
static int refresh_now(Serving *sv);

static int
refresh(Serving *sv)
{
    if (refresh_now(sv) < 0) {
        return -1;
    }
    PyObject *running = loop_get(sv->dict, sv->loop, s_running);
    if (running == NULL) {
        return -1;
    }
    int go = PyObject_IsTrue(running);
    Py_DECREF(running);
    if (go < 0) {
        return -1;
    }
    sv->running = go;
    sv->synced = HAVE_DICT_VERSION && sv->dict != NULL ? dict_version(sv->dict) : 0;
    return 0;
}

/* Read ``loop.now`` alone again (where dicts have no version to tell that it is unchanged). */
static int
refresh_now(Serving *sv)
{
    PyObject *now = loop_get(sv->dict, sv->loop, s_now);
    if (now == NULL) {
        return -1;
    }
    double value = PyFloat_AsDouble(now);
    Py_DECREF(now);
    if (value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    sv->now = value;
    return 0;
}

/* ``sv->now`` and ``sv->running`` hold what the loop's dict says (read again only when someone else wrote it). */
static int
synced(Serving *sv)
{
    if (sv->synced != 0 && dict_version(sv->dict) == sv->synced) {
        return 0;
    }
    return refresh(sv);
}

/* ``loop.<name> = value`` by the loop itself: what it knew of the dict stays known. */
static int
loop_write(Serving *sv, PyObject *name, PyObject *value)
{
    int known = sv->synced != 0 && dict_version(sv->dict) == sv->synced;
    if (loop_set(sv->dict, sv->loop, name, value) < 0) {
        return -1;
    }
    if (known) {
        sv->synced = dict_version(sv->dict);
    }
    return 0;
}

PyDoc_STRVAR(conn_write_doc, "write($self, data)\n--\n\n*loop* Send ``data``: the socket is tried at once and only what the kernel refuses is buffered.");

/* ``data`` as a flat run of bytes, so that every length and offset below counts bytes: bytes and bytearray as they
 * are, any other buffer (a memoryview of any format or shape, an array) as a one-dimensional unsigned-byte view of
 * it, copied first where it is not contiguous. A new reference; NULL with an error set. */
static PyObject *
flat_bytes(PyObject *data)
{
    if (PyBytes_CheckExact(data) || PyByteArray_CheckExact(data)) {
        return Py_NewRef(data);
    }
    if (PyMemoryView_Check(data)) {
        Py_buffer *view = PyMemoryView_GET_BUFFER(data);
        if (view->len == 0) {
            return Py_NewRef(empty); /* an empty view of any stride: nothing to send (a cast would refuse it) */
        }
        if (view->ndim == 1 && view->itemsize == 1 && view->format != NULL && strcmp(view->format, "B") == 0
            && PyBuffer_IsContiguous(view, 'C')) {
            return Py_NewRef(data);
        }
    }
    PyObject *contiguous = PyMemoryView_GetContiguous(data, PyBUF_READ, 'C');
    if (contiguous == NULL) {
        return NULL;
    }
    PyObject *flat = PyObject_CallMethod(contiguous, "cast", "s", "B");
    Py_DECREF(contiguous);
    return flat;
}

/* After a send of ``sent`` bytes: count them, and the connection was seen at the loop's ``now`` (as ``Conn.write``
 * does with ``loop.bytes_out += sent`` and ``self._seen = loop.now``). */
static int
seen_now(ConnCore *self, Py_ssize_t sent)
{
    PyObject *now;
    Serving *sv = serving_of(self->loop);
    if (sv != NULL) {
        sv->sent += sent;
        if (HAVE_DICT_VERSION ? synced(sv) < 0 : refresh_now(sv) < 0) {
            return -1;
        }
        self->seen = sv->now;
        return 0;
    } else {
        PyObject *loop = Py_NewRef(self->loop);
        now = add_to(NULL, loop, s_bytes_out, sent) < 0 ? NULL : PyObject_GetAttr(loop, s_now);
        Py_DECREF(loop);
    }
    if (now == NULL) {
        return -1;
    }
    double seen = PyFloat_AsDouble(now);
    Py_DECREF(now);
    if (seen == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    self->seen = seen;
    return 0;
}

/* ``self._buffer_rest(data, sent)``: keep what the kernel refused of ``data``. */
static int
buffer_rest(ConnCore *self, PyObject *data, Py_ssize_t sent)
{
    PyObject *done = PyLong_FromSsize_t(sent);
    if (done == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethodObjArgs((PyObject *)self, s_buffer_rest, data, done, NULL);
    Py_DECREF(done);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static PyObject *write_flat(ConnCore *self, PyObject *data);

static PyObject *
conn_write(ConnCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (check_configured() < 0) {
        return NULL;
    }
    if (kwnames != NULL || nargs != 1 || self->loop == NULL || self->outbound == NULL || self->send == NULL
        || (!PyBytes_CheckExact(args[0]) && !PyObject_CheckBuffer(args[0]))) {
        /* Keywords, no buffer, or a connection not set up: the reference says what is wrong. */
        return reference(py_write, self, args, nargs, kwnames);
    }
    PyObject *data = flat_bytes(args[0]);
    if (data == NULL) {
        return NULL;
    }
    PyObject *result = write_flat(self, data);
    Py_DECREF(data);
    return result;
}

/* ``Conn.write`` of ``data`` from flat_bytes. */
static PyObject *
write_flat(ConnCore *self, PyObject *data)
{
    if (self->state < 0 || self->state >= state_count || !state_sends[self->state]) {
        return PyObject_CallMethodOneArg((PyObject *)self, s_enqueue, data);
    }
    Py_ssize_t waiting = buffered(self->outbound, no_outbound);
    if (waiting < 0) {
        return NULL;
    }
    if (waiting) {
        return PyObject_CallMethodOneArg((PyObject *)self, s_enqueue, data);
    }
    Py_ssize_t n, sent;
    Py_buffer view;
    /* A bytes object is its own buffer: the buffer protocol's fill and release cost more than the send's wrapper. */
    int viewed = !PyBytes_CheckExact(data);
    if (viewed) {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
    } else {
        view.buf = PyBytes_AS_STRING(data);
        view.len = PyBytes_GET_SIZE(data);
    }
    n = view.len; /* bytes, whatever the item size of what the caller passed */
    if (self->send_direct) {
        int err = 0;
        do {
            sent = send(self->fd, view.buf, (size_t)n, MSG_NOSIGNAL);
            err = errno;
        } while (sent < 0 && err == EINTR && PyErr_CheckSignals() == 0);
        if (viewed) {
            PyBuffer_Release(&view);
        }
        if (sent < 0) {
            if (PyErr_Occurred()) {
                return NULL; /* a signal handler raised */
            }
            if (err == EAGAIN || err == EWOULDBLOCK) {
                sent = 0;
            } else {
                errno = err;
                PyErr_SetFromErrno(PyExc_OSError);
                return hand_exception((PyObject *)self, s_fail_soon) < 0 ? NULL : PyLong_FromLong(0);
            }
        }
    } else {
        if (viewed) {
            PyBuffer_Release(&view);
        }
        PyObject *send = Py_NewRef(self->send); /* the call may replace ``_send`` */
        PyObject *r = PyObject_CallOneArg(send, data);
        Py_DECREF(send);
        if (r == NULL) {
            if (PyErr_ExceptionMatches(PyExc_BlockingIOError) || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
                PyErr_Clear();
                sent = 0;
            } else if (PyErr_ExceptionMatches(PyExc_OSError)) {
                /* Conn._write_failed: the connection fails with it (0); a TLS connection first sorts out what
                 * OpenSSL raised (a write to retry is buffered and counted as taken). */
                PyObject *exc = take_exception();
                PyObject *taken = PyObject_CallMethodObjArgs((PyObject *)self, s_write_failed, exc, data, NULL);
                Py_XDECREF(exc);
                return taken;
            } else {
                return NULL;
            }
        } else {
            sent = PyLong_AsSsize_t(r);
            Py_DECREF(r);
            if (sent == -1 && PyErr_Occurred()) {
                return NULL;
            }
        }
    }
    if (seen_now(self, sent) < 0) {
        return NULL;
    }
    if (sent < n && buffer_rest(self, data, sent) < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(conn_inbound_buffered_doc, "inbound_buffered($self)\n--\n\n*loop* How many inbound bytes are waiting to be consumed.");

static PyObject *
conn_inbound_buffered(ConnCore *self, PyObject *unused)
{
    if (check_configured() < 0) {
        return NULL;
    }
    if (self->inbound == NULL) {
        return conn_get_field(self, &inbound_field); /* raises AttributeError */
    }
    Py_ssize_t kept = buffered(self->inbound, no_inbound);
    if (kept != 0) {
        return kept < 0 ? NULL : PyLong_FromSsize_t(kept);
    }
    if (self->data == NULL) {
        return conn_get_field(self, &data_field);
    }
    Py_ssize_t len = PyObject_Length(self->data);
    if (len < 0) {
        return NULL;
    }
    if (self->pos >= 0 && self->pos <= len) {
        return PyLong_FromSsize_t(len - self->pos);
    }
    /* A ``_pos`` set from Python outside the read: Python's arithmetic, which cannot overflow. */
    PyObject *whole = PyLong_FromSsize_t(len);
    PyObject *pos = PyLong_FromSsize_t(self->pos);
    PyObject *rest = whole && pos ? PyNumber_Subtract(whole, pos) : NULL;
    Py_XDECREF(whole);
    Py_XDECREF(pos);
    return rest;
}

PyDoc_STRVAR(conn_outbound_buffered_doc, "outbound_buffered($self)\n--\n\n*loop* How many bytes wait for the kernel to take them.");

static PyObject *
conn_outbound_buffered(ConnCore *self, PyObject *unused)
{
    if (check_configured() < 0) {
        return NULL;
    }
    if (self->outbound == NULL) {
        return conn_get_field(self, &outbound_field);
    }
    if (self->outbound == no_outbound) {
        return PyLong_FromLong(0);
    }
    return PyObject_GetAttr(self->outbound, s_size);
}

/* The current read's bytes, when the compiled methods may work on them directly: 1 with ``*len`` and ``*pos`` set
 * (``_pos`` an offset within ``_data``, no bytes kept in ``_inbound``), 0 when the reference is to answer (kept bytes,
 * ``_data`` not a bytes object, ``_pos`` set from Python to no offset of it, a field unset), -1 on an error. */
static int
current_read(ConnCore *self, Py_ssize_t *len, Py_ssize_t *pos)
{
    if (self->inbound == NULL) {
        return 0;
    }
    if (self->inbound != no_inbound) {
        Py_ssize_t kept = buffered(self->inbound, no_inbound);
        if (kept != 0) {
            return kept < 0 ? -1 : 0;
        }
    }
    /* Only now: reading ``_size`` may have run Python code that set ``_data``. */
    if (self->data == NULL || !PyBytes_CheckExact(self->data)) {
        return 0;
    }
    *len = PyBytes_GET_SIZE(self->data);
    *pos = self->pos;
    return *pos >= 0 && *pos <= *len;
}

/* ``n`` of ``peek(n)``/``discard(n)``: 1 with ``*n`` set (-1 when none was given), 0 when the reference is to answer
 * (keywords, several arguments, no exact int, an int past Py_ssize_t), -1 on an error. */
static int
count_argument(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t *n)
{
    *n = -1;
    if (kwnames != NULL || nargs > 1) {
        return 0;
    }
    if (nargs == 0) {
        return 1;
    }
    if (!PyLong_CheckExact(args[0])) {
        return 0;
    }
    *n = PyLong_AsSsize_t(args[0]);
    if (*n == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* ``Conn._take``: the end of ``n`` bytes from ``pos`` (``n >= 0``), or -1 with ShortBufferError when fewer are there. */
static Py_ssize_t
take(Py_ssize_t len, Py_ssize_t pos, Py_ssize_t n)
{
    if (n > len - pos) { /* not ``pos + n > len``: that overflows for a huge ``n`` */
        PyErr_Format(short_buffer_error, "asked for %zd bytes, %zd buffered", n, len - pos);
        return -1;
    }
    return pos + n;
}

/* ``Conn._consumed``: the current read is consumed up to ``end``. */
static void
consumed(ConnCore *self, Py_ssize_t end, Py_ssize_t len)
{
    if (end == len) {
        set_data(self, Py_NewRef(empty));
        self->pos = 0;
    } else {
        self->pos = end;
    }
}

/* ``data[pos:end]`` of a bytes object: the object itself when that is all of it, as slicing gives. */
static PyObject *
bytes_slice(PyObject *data, Py_ssize_t pos, Py_ssize_t end)
{
    if (pos == 0 && end == PyBytes_GET_SIZE(data)) {
        return Py_NewRef(data);
    }
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + pos, end - pos);
}

PyDoc_STRVAR(conn_peek_doc, "peek($self, n=-1)\n--\n\n*loop* Return ``n`` bytes (all when ``n < 0``) without consuming them.");

static PyObject *
conn_peek(ConnCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (check_configured() < 0) {
        return NULL;
    }
    Py_ssize_t n, len, pos;
    int plain = count_argument(args, nargs, kwnames, &n);
    if (plain > 0) {
        plain = current_read(self, &len, &pos);
    }
    if (plain <= 0) {
        return plain < 0 ? NULL : reference(py_peek, self, args, nargs, kwnames);
    }
    Py_ssize_t end = n < 0 ? len : take(len, pos, n);
    return end < 0 ? NULL : bytes_slice(self->data, pos, end);
}

PyDoc_STRVAR(conn_discard_doc, "discard($self, n=-1)\n--\n\n*loop* Drop ``n`` bytes (all when ``n < 0``); returns how many were dropped.");

static PyObject *
conn_discard(ConnCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (check_configured() < 0) {
        return NULL;
    }
    Py_ssize_t n, len, pos;
    int plain = count_argument(args, nargs, kwnames, &n);
    if (plain > 0) {
        plain = current_read(self, &len, &pos);
    }
    if (plain <= 0) {
        return plain < 0 ? NULL : reference(py_discard, self, args, nargs, kwnames);
    }
    Py_ssize_t end = n < 0 ? len : take(len, pos, n);
    if (end < 0) {
        return NULL;
    }
    consumed(self, end, len);
    return PyLong_FromSsize_t(end - pos);
}

PyDoc_STRVAR(conn_read_into_doc, "read_into($self, buf)\n--\n\n*loop* Move up to ``len(buf)`` buffered bytes into ``buf``; returns how many.");

static PyObject *
conn_read_into(ConnCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (check_configured() < 0) {
        return NULL;
    }
    Py_ssize_t len, pos;
    int plain = kwnames == NULL && nargs == 1
                && (PyByteArray_CheckExact(args[0]) || PyMemoryView_Check(args[0]));
    if (plain) {
        plain = current_read(self, &len, &pos);
    }
    if (plain <= 0) {
        return plain < 0 ? NULL : reference(py_read_into, self, args, nargs, kwnames);
    }
    /* A writable run of unsigned bytes, as ``buf[:n] = memoryview(data)[...]`` takes; anything else (another format,
     * several dimensions, read-only, released) gets the reference's own error. */
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_ND) < 0) {
        PyErr_Clear();
        return reference(py_read_into, self, args, nargs, kwnames);
    }
    if (view.ndim != 1 || view.itemsize != 1 || (view.format != NULL && strcmp(view.format, "B") != 0)) {
        PyBuffer_Release(&view);
        return reference(py_read_into, self, args, nargs, kwnames);
    }
    Py_ssize_t n = view.len < len - pos ? view.len : len - pos;
    memcpy(view.buf, PyBytes_AS_STRING(self->data) + pos, (size_t)n);
    PyBuffer_Release(&view);
    consumed(self, pos + n, len);
    return PyLong_FromSsize_t(n);
}

/* ``Conn.writev`` sends at most this many buffers in one gather write (``netloop._conn.IOV_MAX``). */
static Py_ssize_t iov_max = 16;

#define SMALL_GATHER 16

PyDoc_STRVAR(conn_writev_doc, "writev($self, chunks)\n--\n\n*loop* Send several buffers with one gather write when possible; returns the total length.");

static PyObject *
conn_writev(ConnCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (check_configured() < 0) {
        return NULL;
    }
    PyObject *chunks = nargs == 1 && kwnames == NULL ? args[0] : NULL;
    if (chunks == NULL || !(PyList_CheckExact(chunks) || PyTuple_CheckExact(chunks)) || self->loop == NULL
        || self->outbound == NULL || !self->send_direct) {
        /* Keywords, another sequence, another sender (TLS, a held send), a connection not set up. */
        return reference(py_writev, self, args, nargs, kwnames);
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(chunks);
    if (count == 1) {
        PyObject *chunk = Py_NewRef(PySequence_Fast_GET_ITEM(chunks, 0));
        PyObject *r = conn_write(self, &chunk, 1, NULL);
        Py_DECREF(chunk);
        return r;
    }
    if (count == 0 || count > iov_max || self->state < 0 || self->state >= state_count
        || !state_sends[self->state]) {
        return reference(py_writev, self, args, nargs, kwnames);
    }
    Py_ssize_t waiting = buffered(self->outbound, no_outbound);
    if (waiting != 0) {
        return waiting < 0 ? NULL : reference(py_writev, self, args, nargs, kwnames);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *chunk = PySequence_Fast_GET_ITEM(chunks, i);
        if (!PyBytes_CheckExact(chunk) && !PyByteArray_CheckExact(chunk) && !PyMemoryView_Check(chunk)) {
            /* Another buffer type (an array, a class of the caller's, whose buffer may run its code) or no buffer:
             * the reference flattens or refuses it. Below, no code but CPython's own runs until the send. */
            return reference(py_writev, self, args, nargs, kwnames);
        }
    }
    PyObject *small_flat[SMALL_GATHER];
    struct iovec small_iov[SMALL_GATHER];
    Py_buffer small_views[SMALL_GATHER];
    PyObject **flat = small_flat;
    struct iovec *iov = small_iov;
    Py_buffer *views = small_views;
    if (count > SMALL_GATHER) {
        flat = PyMem_Malloc((size_t)count * sizeof(PyObject *));
        iov = PyMem_Malloc((size_t)count * sizeof(struct iovec));
        views = PyMem_Malloc((size_t)count * sizeof(Py_buffer));
        if (flat == NULL || iov == NULL || views == NULL) {
            PyMem_Free(flat);
            PyMem_Free(iov);
            PyMem_Free(views);
            return PyErr_NoMemory();
        }
    }
    /* The flat chunks and their buffers, held until the send is done. */
    PyObject *result = NULL;
    Py_ssize_t ready = 0, viewed = 0, total = 0, sent;
    for (; ready < count; ready++) {
        if ((flat[ready] = flat_bytes(PySequence_Fast_GET_ITEM(chunks, ready))) == NULL) {
            goto done;
        }
    }
    for (; viewed < count; viewed++) {
        if (PyObject_GetBuffer(flat[viewed], &views[viewed], PyBUF_SIMPLE) < 0) {
            goto done;
        }
        iov[viewed].iov_base = views[viewed].buf;
        iov[viewed].iov_len = (size_t)views[viewed].len;
        total += views[viewed].len;
    }
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)count;
    int err = 0;
    do {
        sent = sendmsg(self->fd, &msg, MSG_NOSIGNAL);
        err = errno;
    } while (sent < 0 && err == EINTR && PyErr_CheckSignals() == 0);
    for (; viewed > 0; viewed--) {
        PyBuffer_Release(&views[viewed - 1]);
    }
    if (sent < 0) {
        if (PyErr_Occurred()) {
            goto done; /* a signal handler raised */
        }
        if (err == EAGAIN || err == EWOULDBLOCK) {
            sent = 0;
        } else {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            result = hand_exception((PyObject *)self, s_fail_soon) < 0 ? NULL : PyLong_FromLong(0);
            goto done;
        }
    }
    if (seen_now(self, sent) < 0) {
        goto done;
    }
    /* What the kernel refused waits in the outbound buffer, chunk by chunk, as ``Conn.writev`` leaves it. */
    for (Py_ssize_t i = 0; i < count && sent < total; i++) {
        Py_ssize_t size = (Py_ssize_t)iov[i].iov_len;
        if (sent >= size) {
            sent -= size;
            continue;
        }
        if (buffer_rest(self, flat[i], sent) < 0) {
            goto done;
        }
        sent = 0;
    }
    result = PyLong_FromSsize_t(total);
done:
    for (; viewed > 0; viewed--) {
        PyBuffer_Release(&views[viewed - 1]);
    }
    for (Py_ssize_t i = 0; i < ready; i++) {
        Py_DECREF(flat[i]);
    }
    if (flat != small_flat) {
        PyMem_Free(flat);
        PyMem_Free(iov);
        PyMem_Free(views);
    }
    return result;
}

static PyMethodDef conn_methods[] = {
    {"next", (PyCFunction)(void (*)(void))conn_next, METH_FASTCALL | METH_KEYWORDS, conn_next_doc},
    {"write", (PyCFunction)(void (*)(void))conn_write, METH_FASTCALL | METH_KEYWORDS, conn_write_doc},
    {"inbound_buffered", (PyCFunction)conn_inbound_buffered, METH_NOARGS, conn_inbound_buffered_doc},
    {"outbound_buffered", (PyCFunction)conn_outbound_buffered, METH_NOARGS, conn_outbound_buffered_doc},
    {"peek", (PyCFunction)(void (*)(void))conn_peek, METH_FASTCALL | METH_KEYWORDS, conn_peek_doc},
    {"discard", (PyCFunction)(void (*)(void))conn_discard, METH_FASTCALL | METH_KEYWORDS, conn_discard_doc},
    {"read_into", (PyCFunction)(void (*)(void))conn_read_into, METH_FASTCALL | METH_KEYWORDS, conn_read_into_doc},
    {"writev", (PyCFunction)(void (*)(void))conn_writev, METH_FASTCALL | METH_KEYWORDS, conn_writev_doc},
    {NULL, NULL, 0, NULL},
};

/* The numbers: their deletion is refused by the member protocol itself (TypeError). */
static PyMemberDef conn_members[] = {
    {"_pos", T_PYSSIZET, offsetof(ConnCore, pos), 0, NULL},
    {"_fd", T_INT, offsetof(ConnCore, fd), 0, NULL},
    {"_state", T_INT, offsetof(ConnCore, state), 0, NULL},
    {"_seen", T_DOUBLE, offsetof(ConnCore, seen), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef conn_getset[] = {
    {"_data", (getter)conn_get_field, (setter)conn_set_field, NULL, &data_field},
    {"_inbound", (getter)conn_get_field, (setter)conn_set_field, NULL, &inbound_field},
    {"_outbound", (getter)conn_get_field, (setter)conn_set_field, NULL, &outbound_field},
    {"_loop", (getter)conn_get_field, (setter)conn_set_field, NULL, &loop_field},
    {"_more", (getter)conn_get_field, (setter)conn_set_field, NULL, &more_field},
    {"_send", (getter)conn_get_call, (setter)conn_set_call, NULL, &send_call},
    {"_recv", (getter)conn_get_call, (setter)conn_set_call, NULL, &recv_call},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Every field starts defined: the objects unset, the numbers those of a closed connection (descriptor -1, so no
 * path can touch descriptor 0 of a connection never set up). */
static PyObject *
conn_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    ConnCore *self = (ConnCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->data = self->inbound = self->outbound = self->loop = self->send = self->recv = self->more = NULL;
    self->pos = 0;
    self->fd = -1;
    self->state = closed_state;
    self->seen = 0.0;
    self->send_direct = self->recv_direct = 0;
    return (PyObject *)self;
}

static PyTypeObject ConnCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "netloop._speedups.ConnCore",
    .tp_doc = PyDoc_STR("The compiled fields and hot methods of netloop.Conn."),
    .tp_basicsize = sizeof(ConnCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = conn_new,
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_traverse = (traverseproc)conn_traverse,
    .tp_clear = (inquiry)conn_clear,
    .tp_methods = conn_methods,
    .tp_members = conn_members,
    .tp_getset = conn_getset,
};

/* -- serve ------------------------------------------------------------------------------------------------------- */

#if HAVE_SERVE

#define MAX_EVENTS 1024

static double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* An exception escaped the handling of an event on ``fd``: an ``Exception`` goes to ``loop._internal_error(exc, fd)``,
 * which logs it and closes the connection on ``fd``, and the loop goes on (0); anything else (SystemExit,
 * KeyboardInterrupt) ends the loop (-1, still raised). */
static int
event_failed(PyObject *loop, int fd)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *exc = take_exception();
    PyObject *where = PyLong_FromLong(fd);
    PyObject *r = where == NULL ? NULL : PyObject_CallMethodObjArgs(loop, s_internal_error, exc, where, NULL);
    Py_XDECREF(where);
    Py_XDECREF(exc);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* ``readers[fd]`` as the last look-up found it: a connection of the inlined read path, borrowed from ``readers``
 * (which holds it as long as its version is ``version``). */
typedef struct {
    PyObject *conn;
    uint64_t version;
} Reader;

/* Descriptors past this are looked up in ``readers`` every time. */
#define MAX_CACHED_FD 65536

typedef struct {
    PyObject *loop;
    PyObject *readers;
    PyObject *handlers;
    PyObject *on_traffic;
    char *scratch;
    Py_ssize_t size;
    double now;
    Serving *sv;
    Reader *cache; /* by descriptor: ``readers`` stays the truth, this only saves looking it up again */
    int cached;    /* entries in ``cache`` */
} Dispatch;

/* Remember that ``readers[fd]`` is ``conn`` as of ``version`` (nothing when the cache cannot grow). */
static void
remember(Dispatch *d, int fd, PyObject *conn, uint64_t version)
{
    if (!HAVE_DICT_VERSION || fd < 0 || fd >= MAX_CACHED_FD) {
        return;
    }
    if (fd >= d->cached) {
        int size = d->cached ? d->cached : 64;
        while (size <= fd) {
            size *= 2;
        }
        Reader *grown = PyMem_Realloc(d->cache, (size_t)size * sizeof(Reader));
        if (grown == NULL) {
            return; /* no cache: the look-up serves */
        }
        memset(grown + d->cached, 0, (size_t)(size - d->cached) * sizeof(Reader));
        d->cache = grown;
        d->cached = size;
    }
    d->cache[fd].conn = conn;
    d->cache[fd].version = version;
}

/* ``on_traffic(conn)``. The handler's bound method is called as its function with the handler first, as the method
 * itself would call it, without the method object's own call in between. */
static PyObject *
call_on_traffic(PyObject *on_traffic, PyObject *conn)
{
    if (PyMethod_Check(on_traffic)) {
        PyObject *args[2] = {PyMethod_GET_SELF(on_traffic), conn};
        return PyObject_Vectorcall(PyMethod_GET_FUNCTION(on_traffic), args, 2, NULL);
    }
    return PyObject_CallOneArg(on_traffic, conn);
}

/* The inlined read path of EventLoop._serve for one plain "readable" event on ``c``; -1 when an exception is
 * raised (for the caller's guard). The sanctioned fast copy of ``Conn._read_on``/``_traffic``/``_deliver``
 * (netloop/_conn.py), as the loop in ``EventLoop._serve`` is: change the three together. */
static int
read_event(Dispatch *d, ConnCore *c)
{
    PyObject *data;
    Py_ssize_t got;
    if (c->recv_direct) {
        got = recv(c->fd, d->scratch, (size_t)d->size, 0);
        if (got < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
                return 0;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return hand_exception((PyObject *)c, s_close);
        }
        data = got ? PyBytes_FromStringAndSize(d->scratch, got) : NULL;
        if (got && data == NULL) {
            return -1;
        }
    } else {
        if (c->recv == NULL) {
            return conn_get_call(c, &recv_call) == NULL ? -1 : 0; /* raises AttributeError */
        }
        PyObject *size = PyLong_FromSsize_t(d->size);
        PyObject *recv = Py_NewRef(c->recv);
        data = size ? PyObject_CallOneArg(recv, size) : NULL;
        Py_DECREF(recv);
        Py_XDECREF(size);
        if (data == NULL) {
            if (PyErr_ExceptionMatches(PyExc_BlockingIOError) || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
                PyErr_Clear();
                return 0;
            }
            /* Conn._read_failed closes with it; a TLS connection first sorts out what OpenSSL raised. */
            return PyErr_ExceptionMatches(PyExc_OSError) ? hand_exception((PyObject *)c, s_read_failed) : -1;
        }
        got = PyObject_Length(data);
        if (got <= 0) {
            Py_CLEAR(data);
            if (got < 0) {
                return -1;
            }
        }
    }
    if (got == 0) {
        return call_method((PyObject *)c, s_peer_eof, NULL); /* the peer's FIN */
    }
    c->seen = d->now;
    d->sv->received += got;
    Py_ssize_t kept = c->inbound == NULL ? 0 : buffered(c->inbound, no_inbound);
    if (kept != 0) {
        /* Conn._keep_read appends the read to the kept bytes within inbound_limit and inbound_cap; false: it
         * closed the connection, or showed the bytes to on_traffic itself. */
        PyObject *r = kept < 0 ? NULL : PyObject_CallMethodOneArg((PyObject *)c, s_keep_read, data);
        Py_DECREF(data);
        int deliver = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (deliver <= 0) {
            return deliver;
        }
    } else {
        set_data(c, data);
    }
    PyObject *action = call_on_traffic(d->on_traffic, (PyObject *)c);
    if (action == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyObject *exc = take_exception();
        set_data(c, Py_NewRef(empty));
        c->pos = 0;
        PyObject *r = PyObject_CallMethodObjArgs(d->loop, s_handler_failed, (PyObject *)c, s_on_traffic, exc, NULL);
        Py_XDECREF(exc);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    PyObject *left = c->data;
    int rest = left == NULL ? 0 : PyBytes_CheckExact(left) ? PyBytes_GET_SIZE(left) != 0 : PyObject_IsTrue(left);
    if (rest > 0) {
        rest = call_method((PyObject *)c, s_keep_rest, NULL);
    }
    int act = rest < 0 ? -1 : action == Py_None ? 0 : PyObject_IsTrue(action);
    if (act > 0) {
        act = call_method((PyObject *)c, s_act, action);
    }
    Py_DECREF(action);
    if (act < 0) {
        return -1;
    }
    if (c->more != NULL && c->more != Py_None) {
        /* Input no readiness event will report (TLS records OpenSSL read ahead): Conn._read_on reads on. */
        PyObject *more = Py_NewRef(c->more);
        PyObject *r = PyObject_CallNoArgs(more);
        Py_DECREF(more);
        int waiting = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (waiting != 0) {
            return waiting < 0 ? -1 : call_method((PyObject *)c, s_read_on, NULL);
        }
    }
    return 0;
}

/* One event: the inlined read path, else the descriptor's handler; -1 when an exception is raised. */
static int
dispatch(Dispatch *d, int fd, uint32_t ev)
{
    uint64_t version = dict_version(d->readers);
    if (ev == EPOLLIN && fd >= 0 && fd < d->cached && d->cache[fd].conn != NULL && d->cache[fd].version == version) {
        /* ``readers`` has not changed since this descriptor's connection was looked up. */
        PyObject *conn = Py_NewRef(d->cache[fd].conn);
        int r = read_event(d, (ConnCore *)conn);
        Py_DECREF(conn);
        return r;
    }
    PyObject *key = PyLong_FromLong(fd);
    if (key == NULL) {
        return -1;
    }
    PyObject *conn = PyDict_GetItemWithError(d->readers, key);
    if (conn == NULL) {
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0; /* detached by an earlier event of this batch */
    }
    if (conn == Py_None || ev != EPOLLIN || !PyObject_TypeCheck(conn, &ConnCoreType)) {
        PyObject *handler = PyDict_GetItemWithError(d->handlers, key);
        Py_DECREF(key);
        if (handler == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_INCREF(handler);
        PyObject *events = PyLong_FromUnsignedLong(ev);
        PyObject *r = events ? PyObject_CallOneArg(handler, events) : NULL;
        Py_XDECREF(events);
        Py_DECREF(handler);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        return 0;
    }
    Py_DECREF(key);
    remember(d, fd, conn, version);
    Py_INCREF(conn);
    int r = read_event(d, (ConnCore *)conn);
    Py_DECREF(conn);
    return r;
}

/* ``timers[0][0]``: when the first timer is due; -1 with an exception set on failure. */
static int
first_due(PyObject *timers, double *when)
{
    PyObject *entry = PyList_GET_ITEM(timers, 0);
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 1) {
        PyErr_SetString(PyExc_TypeError, "a timer entry is not a (when, seq, timer) tuple");
        return -1;
    }
    *when = PyFloat_AsDouble(PyTuple_GET_ITEM(entry, 0));
    return *when == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* ``self.now = now``, by the loop itself: its cached ``now`` is that value. */
static int
set_now(Serving *sv, double now)
{
    PyObject *v = PyFloat_FromDouble(now);
    if (v == NULL) {
        return -1;
    }
    int r = loop_write(sv, s_now, v);
    Py_DECREF(v);
    if (r == 0) {
        sv->now = now;
    }
    return r;
}

/* Move what the loop received and sent into ``loop.bytes_in`` and ``loop.bytes_out``. */
static int
count_bytes(Serving *sv)
{
    if (sv->received) {
        if (add_to(sv->dict, sv->loop, s_bytes_in, sv->received) < 0) {
            return -1;
        }
        sv->received = 0;
    }
    if (sv->sent) {
        if (add_to(sv->dict, sv->loop, s_bytes_out, sv->sent) < 0) {
            return -1;
        }
        sv->sent = 0;
    }
    return 0;
}

PyDoc_STRVAR(serve_doc,
"serve(loop, epfd, readers, handlers, tasks, timers, size, on_traffic)\n\n"
"EventLoop._serve on the epoll descriptor ``epfd``: returns when ``loop._running`` is false.");

static PyObject *
serve(PyObject *module, PyObject *args)
{
    Dispatch d;
    int epfd;
    PyObject *tasks, *timers;
    if (!PyArg_ParseTuple(args, "OiO!O!OO!nO:serve", &d.loop, &epfd, &PyDict_Type, &d.readers, &PyDict_Type,
                          &d.handlers, &tasks, &PyList_Type, &timers, &d.size, &d.on_traffic)) {
        return NULL;
    }
    if (d.size <= 0) {
        PyErr_SetString(PyExc_ValueError, "serve: the read size must be positive");
        return NULL;
    }
    PyObject *dict = PyObject_GenericGetDict(d.loop, NULL);
    if (dict == NULL) {
        return NULL;
    }
    if (!PyDict_Check(dict)) {
        Py_CLEAR(dict);
    }
    SleepFlag *sleeping = PyObject_New(SleepFlag, &SleepFlagType);
    if (sleeping == NULL) {
        Py_XDECREF(dict);
        return NULL;
    }
    sleeping->sleeping = 0;
    Serving sv = {d.loop, dict, 0, 0, NULL, 0, 0.0, 0};
    if (loop_set(dict, d.loop, s_sleeping, (PyObject *)sleeping) < 0 || refresh(&sv) < 0) {
        Py_DECREF(sleeping);
        Py_XDECREF(dict);
        return NULL;
    }
    d.now = sv.now;
    d.cache = NULL;
    d.cached = 0;
    struct epoll_event *events = PyMem_Malloc(MAX_EVENTS * sizeof(struct epoll_event));
    d.scratch = PyMem_Malloc((size_t)d.size);
    if (events == NULL || d.scratch == NULL) {
        PyMem_Free(events);
        PyMem_Free(d.scratch);
        Py_XDECREF(dict);
        return PyErr_NoMemory();
    }
    sv.next = running_loops;
    running_loops = &sv;
    d.sv = &sv;
    PyObject *result = NULL;
    for (;;) {
        /* ``while self._running``: read again only when someone else wrote the loop's dict. */
        if (synced(&sv) < 0) {
            goto done;
        }
        if (!sv.running) {
            break;
        }
        int timeout = -1;
        if (PyList_GET_SIZE(timers)) {
            double when;
            d.now = monotonic_now();
            if (set_now(&sv, d.now) < 0 || first_due(timers, &when) < 0) {
                goto done;
            }
            if (when <= d.now) {
                PyObject *now = PyFloat_FromDouble(d.now);
                PyObject *r = now ? PyObject_CallMethodOneArg(d.loop, s_run_timers, now) : NULL;
                Py_XDECREF(now);
                if (r == NULL) {
                    goto done;
                }
                Py_DECREF(r);
            }
            if (PyList_GET_SIZE(timers)) {
                if (first_due(timers, &when) < 0) {
                    goto done;
                }
                double wait = when - d.now;
                if (wait < 0.0) {
                    wait = 0.0;
                }
                double ms = ceil(wait * 1e3);
                timeout = ms > (double)INT_MAX ? INT_MAX : (int)ms;
            }
        }
        sleeping->sleeping = 1;
        Py_ssize_t queued = PyObject_Length(tasks);
        if (queued < 0) {
            goto done;
        }
        if (queued) {
            timeout = 0;
        }
        int n, err;
        if (timeout) {
            Py_BEGIN_ALLOW_THREADS
            n = epoll_wait(epfd, events, MAX_EVENTS, timeout);
            err = errno;
            Py_END_ALLOW_THREADS
        } else {
            n = epoll_wait(epfd, events, MAX_EVENTS, 0);
            err = errno;
        }
        sleeping->sleeping = 0;
        if (n < 0) {
            if (err != EINTR) {
                errno = err;
                PyErr_SetFromErrno(PyExc_OSError);
                goto done;
            }
            n = 0;
        }
        /* A signal taken while the loop ran or slept (on any thread: the main thread's loop is woken through
           signal.set_wakeup_fd) runs its Python handler now, as the Python loop's next instruction would. */
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
        for (int i = 0; i < n; i++) {
            if (dispatch(&d, events[i].data.fd, events[i].events) < 0 && event_failed(d.loop, events[i].data.fd) < 0) {
                goto done;
            }
        }
        queued = PyObject_Length(tasks);
        if (queued < 0) {
            goto done;
        }
        if (queued) {
            PyObject *r = PyObject_CallMethodNoArgs(d.loop, s_run_tasks);
            if (r == NULL) {
                goto done;
            }
            Py_DECREF(r);
        }
    }
    result = Py_NewRef(Py_None);
done:
    /* The counts go into the attributes while the loop is still listed, so counted() never misses them. */
    if (result == NULL) {
        PyObject *exc = take_exception();
        if (count_bytes(&sv) < 0) {
            PyErr_Clear();
        }
        restore_exception(exc);
    } else if (count_bytes(&sv) < 0) {
        Py_CLEAR(result);
    }
    for (Serving **link = &running_loops; *link != NULL; link = &(*link)->next) {
        if (*link == &sv) {
            *link = sv.next;
            break;
        }
    }
    if (recent == &sv) {
        recent = NULL;
    }
    /* Awake for good: ``loop._sleeping`` is the plain bool again (a task submitted from now on is run by the
     * teardown, or refused). */
    sleeping->sleeping = 0;
    PyObject *exc = take_exception();
    if (loop_set(dict, d.loop, s_sleeping, Py_False) < 0) {
        if (exc == NULL) {
            exc = take_exception(); /* the loop had returned: this is its error now */
            Py_CLEAR(result);
        } else {
            PyErr_Clear(); /* the loop's own error is the one to raise */
        }
    }
    restore_exception(exc);
    Py_DECREF(sleeping);
    Py_XDECREF(dict);
    PyMem_Free(events);
    PyMem_Free(d.scratch);
    PyMem_Free(d.cache);
    return result;
}

#endif /* HAVE_SERVE */

PyDoc_STRVAR(counted_doc,
"counted(loop) -> (bytes_in, bytes_out)\n\n"
"``loop.bytes_in`` and ``loop.bytes_out`` with what a running compiled loop has counted and not yet added to them.");

static PyObject *
counted(PyObject *module, PyObject *loop)
{
    PyObject *in = PyObject_GetAttr(loop, s_bytes_in);
    PyObject *out = in ? PyObject_GetAttr(loop, s_bytes_out) : NULL;
    if (out == NULL) {
        Py_XDECREF(in);
        return NULL;
    }
    Serving *sv = serving_of(loop);
    if (sv != NULL && (sv->received || sv->sent)) {
        PyObject *more_in = PyLong_FromSsize_t(sv->received);
        PyObject *more_out = PyLong_FromSsize_t(sv->sent);
        PyObject *sum_in = more_in ? PyNumber_Add(in, more_in) : NULL;
        PyObject *sum_out = more_out ? PyNumber_Add(out, more_out) : NULL;
        Py_XDECREF(more_in);
        Py_XDECREF(more_out);
        Py_SETREF(in, sum_in);
        Py_SETREF(out, sum_out);
        if (in == NULL || out == NULL) {
            Py_XDECREF(in);
            Py_XDECREF(out);
            return NULL;
        }
    }
    PyObject *result = PyTuple_Pack(2, in, out);
    Py_DECREF(in);
    Py_DECREF(out);
    return result;
}

PyDoc_STRVAR(configure_doc,
"configure(no_inbound, no_outbound, short_buffer_error, next, write, socket_type, sends, closed)\n\n"
"Hand over what the compiled code shares with netloop._conn: its buffer stand-ins, the error, the reference\n"
"methods it falls back to, the socket type whose methods it may replace, and from netloop._lifecycle the SENDS\n"
"table (a tuple of bools indexed by state) and the CLOSED state.");

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *inbound, *outbound, *error, *next, *write, *sock_type, *sends;
    int closed;
    if (!PyArg_ParseTuple(args, "OOOOOO!O!i:configure", &inbound, &outbound, &error, &next, &write, &PyType_Type,
                          &sock_type, &PyTuple_Type, &sends, &closed)) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(sends);
    if (count > MAX_STATES || closed < 0 || closed >= count) {
        PyErr_Format(PyExc_ValueError, "configure: %zd states (at most %d), CLOSED=%d", count, MAX_STATES, closed);
        return NULL;
    }
    unsigned char table[MAX_STATES];
    for (Py_ssize_t i = 0; i < count; i++) {
        int yes = PyObject_IsTrue(PyTuple_GET_ITEM(sends, i));
        if (yes < 0) {
            return NULL;
        }
        table[i] = (unsigned char)yes;
    }
    Py_XSETREF(no_inbound, Py_NewRef(inbound));
    Py_XSETREF(no_outbound, Py_NewRef(outbound));
    Py_XSETREF(short_buffer_error, Py_NewRef(error));
    Py_XSETREF(py_next, Py_NewRef(next));
    Py_XSETREF(py_write, Py_NewRef(write));
    Py_XSETREF(socket_type, (PyTypeObject *)Py_NewRef(sock_type));
    memcpy(state_sends, table, (size_t)count);
    state_count = count;
    closed_state = closed;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(lifecycle_doc,
"lifecycle() -> (sends, closed)\n\n"
"The lifecycle table as the compiled code holds it since configure(): SENDS as a tuple of bools, and CLOSED.");

static PyObject *
lifecycle(PyObject *module, PyObject *unused)
{
    PyObject *sends = PyTuple_New(state_count);
    if (sends == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < state_count; i++) {
        PyTuple_SET_ITEM(sends, i, PyBool_FromLong(state_sends[i]));
    }
    return Py_BuildValue("(Ni)", sends, closed_state);
}

PyDoc_STRVAR(references_doc,
"references(methods)\n\n"
"Hand over the reference ``Conn`` methods (by name) that the compiled peek, discard, read_into and writev call for\n"
"what they do not handle themselves.");

static PyObject *
references(PyObject *module, PyObject *methods)
{
    static const struct {
        PyObject **var;
        const char *name;
    } wanted[] = {{&py_peek, "peek"}, {&py_discard, "discard"}, {&py_read_into, "read_into"}, {&py_writev, "writev"}};
    if (!PyDict_Check(methods)) {
        PyErr_SetString(PyExc_TypeError, "references: a dict of methods by name");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
        PyObject *method = PyDict_GetItemString(methods, wanted[i].name);
        if (method == NULL) {
            return PyErr_Format(PyExc_KeyError, "references: no reference %s", wanted[i].name);
        }
    }
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
        Py_XSETREF(*wanted[i].var, Py_NewRef(PyDict_GetItemString(methods, wanted[i].name)));
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(methods_for_doc,
"methods_for(cls) -> dict\n\n"
"ConnCore's compiled methods, by name, as method descriptors of ``cls`` (a subclass of ConnCore). Set on ``cls``, a\n"
"call on an instance of exactly ``cls`` is one the interpreter specializes (it does so only for a C method of the\n"
"instance's own type): no subtype check and no generic call path per call, which ConnCore's inherited ones take.");

static PyObject *
methods_for(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &ConnCoreType)) {
        PyErr_SetString(PyExc_TypeError, "methods_for: a subclass of ConnCore");
        return NULL;
    }
    PyObject *methods = PyDict_New();
    if (methods == NULL) {
        return NULL;
    }
    for (PyMethodDef *def = conn_methods; def->ml_name != NULL; def++) {
        PyObject *method = PyDescr_NewMethod((PyTypeObject *)cls, def);
        if (method == NULL || PyDict_SetItemString(methods, def->ml_name, method) < 0) {
            Py_XDECREF(method);
            Py_DECREF(methods);
            return NULL;
        }
        Py_DECREF(method);
    }
    return methods;
}

static PyMethodDef module_methods[] = {
    {"methods_for", methods_for, METH_O, methods_for_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"lifecycle", lifecycle, METH_NOARGS, lifecycle_doc},
    {"references", references, METH_O, references_doc},
    {"counted", counted, METH_O, counted_doc},
#if HAVE_SERVE
    {"serve", serve, METH_VARARGS, serve_doc},
#endif
    {NULL, NULL, 0, NULL},
};

static PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "netloop._speedups",
    .m_doc = PyDoc_STR("netloop's compiled hot path: the Conn base type and the epoll loop."),
    .m_size = -1,
    .m_methods = module_methods,
};

/* Every Python name the compiled code looks up, with the class it is looked up on: netloop/_compiled.py declares
 * the same table (``LOOKUPS``) and checks it, and the classes, against ``_speedups.LOOKUPS`` when the module loads. */
static const struct {
    PyObject **var;
    const char *owner;
    const char *name;
} lookups[] = {
    {&s_size, "RingBuffer OutboundBuffer", "_size"},
    {&s_read, "RingBuffer", "read"},
    {&s_enqueue, "Conn", "_enqueue"},
    {&s_buffer_rest, "Conn", "_buffer_rest"},
    {&s_fail_soon, "Conn", "_fail_soon"},
    {&s_close, "Conn", "_close"},
    {&s_peer_eof, "Conn", "_peer_eof"},
    {&s_keep_rest, "Conn", "_keep_rest"},
    {&s_keep_read, "Conn", "_keep_read"},
    {&s_read_failed, "Conn", "_read_failed"},
    {&s_read_on, "Conn", "_read_on"},
    {&s_write_failed, "Conn", "_write_failed"},
    {&s_act, "Conn", "_act"},
    {&s_bytes_out, "EventLoop", "bytes_out"},
    {&s_bytes_in, "EventLoop", "bytes_in"},
    {&s_now, "EventLoop", "now"},
    {&s_running, "EventLoop", "_running"},
    {&s_sleeping, "EventLoop", "_sleeping"},
    {&s_run_timers, "EventLoop", "_run_timers"},
    {&s_run_tasks, "EventLoop", "_run_tasks"},
    {&s_handler_failed, "EventLoop", "handler_failed"},
    {&s_internal_error, "EventLoop", "_internal_error"},
    {&s_on_traffic, "EventHandler", "on_traffic"},
};

/* ``LOOKUPS``: the table above as ``((owner, name), ...)``. */
static PyObject *
lookups_table(void)
{
    size_t count = sizeof(lookups) / sizeof(lookups[0]);
    PyObject *table = PyTuple_New((Py_ssize_t)count);
    if (table == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        PyObject *entry = Py_BuildValue("(sO)", lookups[i].owner, *lookups[i].var);
        if (entry == NULL) {
            Py_DECREF(table);
            return NULL;
        }
        PyTuple_SET_ITEM(table, (Py_ssize_t)i, entry);
    }
    return table;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    for (size_t i = 0; i < sizeof(lookups) / sizeof(lookups[0]); i++) {
        if ((*lookups[i].var = PyUnicode_InternFromString(lookups[i].name)) == NULL) {
            return NULL;
        }
    }
    if (pthread_atfork(NULL, NULL, forget_running_loops) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    long most = sysconf(_SC_IOV_MAX); /* as netloop._conn.IOV_MAX: at least 16, at most 1024 */
    iov_max = most < 16 ? 16 : most > 1024 ? 1024 : (Py_ssize_t)most;
    if ((empty = PyBytes_FromStringAndSize(NULL, 0)) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&ConnCoreType) < 0) {
        return NULL;
    }
#if HAVE_SERVE
    if (PyType_Ready(&SleepFlagType) < 0) {
        return NULL;
    }
#endif
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *table = lookups_table();
    int failed = table == NULL || PyModule_AddObjectRef(m, "LOOKUPS", table) < 0
                 || PyModule_AddObjectRef(m, "ConnCore", (PyObject *)&ConnCoreType) < 0;
    Py_XDECREF(table);
    if (failed) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
