/* resp_server's compiled hot path, optional: without it (no C compiler, or NETLOOP_PURE=1) the same work is done
 * in Python (resp_server.parser's framer, resp_server.session's dispatch loop), with the same results.
 *
 * frame: the complete, well-formed multibulk requests of a read, framed in one pass (resp_server.parser).
 * run: the commands of a batch that take the session's fast way, run in one loop (resp_server.session), HSET's
 * short way (resp_server.containers._hset's) done in C without its Python frame.
 * hset_short_way: what run needs for that, handed over once by resp_server.session when it loads.
 *
 * frame(max_array, max_bulk, data, start) -> (commands, end)
 *
 * commands: the argument lists of the requests framed from data[start:], each a list of bytes; end: where the first
 * request it did not frame starts (len(data) when it framed them all). It frames only what RespParser's general parser reads the
 * same way: "*N" (N from 1 to max_array, no sign, no leading zero) and N bulks "$L" (L up to max_bulk, no sign, no
 * leading zero) each followed by exactly L bytes and CRLF. It stops at anything else (an inline request, an empty
 * array, a malformed or unusual header, a request not complete yet) and leaves it to the general parser.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* A header's number: digits, no leading zero (except "0" itself), at most 18 of them, then CRLF. -1 when the
 * line is not that, or when it is not complete within [p, end). On success *next is past the CRLF. */
static long long
header_number(const char *p, const char *end, const char **next)
{
    const char *start = p;
    long long value = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (p - start >= 18)
            return -1;
        value = value * 10 + (*p - '0');
        p++;
    }
    if (p == start || (*start == '0' && p - start > 1))
        return -1;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
        return -1;
    *next = p + 2;
    return value;
}

static PyObject *
frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "frame(max_array: int, max_bulk: int, data: bytes, start: int)");
        return NULL;
    }
    long long max_array = PyLong_AsLongLong(args[0]);
    if (max_array == -1 && PyErr_Occurred())
        return NULL;
    long long max_bulk = PyLong_AsLongLong(args[1]);
    if (max_bulk == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t start = PyLong_AsSsize_t(args[3]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || start > PyBytes_GET_SIZE(args[2])) {
        PyErr_SetString(PyExc_ValueError, "start is out of the data");
        return NULL;
    }
    const char *base = PyBytes_AS_STRING(args[2]);
    const char *end = base + PyBytes_GET_SIZE(args[2]);
    const char *done = base + start; /* the end of the last request framed */
    PyObject *commands = PyList_New(0);
    if (commands == NULL)
        return NULL;
    PyObject *previous = NULL; /* the last command framed (borrowed from commands) */
    while (done < end && *done == '*') {
        const char *p;
        long long count = header_number(done + 1, end, &p);
        if (count < 1 || count > max_array)
            break;
        /* A complete request holds at least 6 bytes per bulk ("$0\r\n\r\n"): a count past that waits for more. */
        if (count > (end - p) / 6)
            break;
        PyObject *command = PyList_New((Py_ssize_t)count);
        if (command == NULL)
            goto fail;
        Py_ssize_t i;
        for (i = 0; i < count; i++) {
            if (p >= end || *p != '$')
                break;
            long long length = header_number(p + 1, end, &p);
            if (length < 0 || length > max_bulk || end - p < length + 2 || p[length] != '\r' || p[length + 1] != '\n')
                break;
            PyObject *arg = NULL;
            /* The name and the key of a pipeline's commands often repeat: the previous command's equal bytes object is
             * shared (immutable), which saves making it, hashing it again for the lookups, and freeing it. */
            if (i < 2 && previous != NULL && PyList_GET_SIZE(previous) > i) {
                PyObject *same = PyList_GET_ITEM(previous, i);
                if (PyBytes_GET_SIZE(same) == length && memcmp(PyBytes_AS_STRING(same), p, (size_t)length) == 0) {
                    Py_INCREF(same);
                    arg = same;
                }
            }
            if (arg == NULL) {
                arg = PyBytes_FromStringAndSize(p, (Py_ssize_t)length);
                if (arg == NULL) {
                    Py_DECREF(command);
                    goto fail;
                }
            }
            PyList_SET_ITEM(command, i, arg);
            p += length + 2;
        }
        if (i < count) { /* the items not set are NULL, which the list's deallocation skips */
            Py_DECREF(command);
            break;
        }
        if (PyList_Append(commands, command) < 0) {
            Py_DECREF(command);
            goto fail;
        }
        Py_DECREF(command); /* the batch's list holds it, and so previous stays valid */
        previous = command;
        done = p;
    }
    PyObject *result = Py_BuildValue("(Nn)", commands, (Py_ssize_t)(done - base));
    return result;
fail:
    Py_DECREF(commands);
    return NULL;
}

/* HSET's short way, as resp_server.containers._hset takes it: HSET key field value, where the store has nothing to
 * expire, watch, wake or notify (store._deadlines, store.watchers and store.blocked empty, store.notifying False) and
 * key holds a hash (a dict): one dict write, the reply ONE when the field is new, ZERO when it was there. Set once by
 * hset_short_way: the function HSET dispatches to, and the replies (resp_server.values' ONE and ZERO). */
static PyObject *hset_run = NULL, *hset_one = NULL, *hset_zero = NULL;
/* The store's attributes the short way and run read, by name (interned). */
static PyObject *deadlines_name = NULL, *watchers_name = NULL, *blocked_name = NULL, *notifying_name = NULL,
                *data_name = NULL, *ready_name = NULL, *events_name = NULL;

/* Whether store is as HSET's short way needs it: 1 with *data set to store._data (a new reference), 0 when not (or
 * when an attribute is not of the type the short way expects: the command then runs in Python), -1 on an error. */
static int
hset_store_is_quiet(PyObject *store, PyObject **data)
{
    PyObject *empty_names[3] = {deadlines_name, watchers_name, blocked_name};
    for (int k = 0; k < 3; k++) {
        PyObject *value = PyObject_GetAttr(store, empty_names[k]);
        if (value == NULL)
            return -1;
        int empty = PyDict_CheckExact(value) && PyDict_GET_SIZE(value) == 0;
        Py_DECREF(value);
        if (!empty)
            return 0;
    }
    PyObject *notifying = PyObject_GetAttr(store, notifying_name);
    if (notifying == NULL)
        return -1;
    int off = notifying == Py_False;
    Py_DECREF(notifying);
    if (!off)
        return 0;
    PyObject *value = PyObject_GetAttr(store, data_name);
    if (value == NULL)
        return -1;
    if (!PyDict_CheckExact(value)) {
        Py_DECREF(value);
        return 0;
    }
    *data = value;
    return 1;
}

/* HSET's short way on command (4 arguments) against the store's data: its reply (borrowed), or NULL, with no error
 * set when the command does not take it (a new key, another type) and with one on an error. The store's keys and a
 * hash's fields and values are bytes, and the dicts' growth allocates no tracked object (no garbage collection): the
 * lookup, the write and the old value's release run no Python code. */
static PyObject *
hset_short(PyObject *data, PyObject *command)
{
    PyObject *key = PyList_GET_ITEM(command, 1), *field = PyList_GET_ITEM(command, 2);
    if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(field))
        return NULL;
    PyObject *fields = PyDict_GetItemWithError(data, key); /* borrowed */
    if (fields == NULL || !PyDict_CheckExact(fields))
        return NULL;
    Py_ssize_t before = PyDict_GET_SIZE(fields);
    if (PyDict_SetItem(fields, field, PyList_GET_ITEM(command, 3)) < 0)
        return NULL;
    return PyDict_GET_SIZE(fields) > before ? hset_one : hset_zero; /* one more entry: the field is new */
}

/* hset_short_way(hset, store, one, zero): run takes HSET's short way for a command whose dispatch function is hset,
 * answering one or zero. store is a KeyValueStore: the attributes the short way reads are checked on it here, so a
 * rename fails at import, not as a wrong answer. */
static PyObject *
hset_short_way(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyBytes_CheckExact(args[2]) || !PyBytes_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "hset_short_way(hset, store: KeyValueStore, one: bytes, zero: bytes)");
        return NULL;
    }
    /* A new store is quiet: where it is not, an attribute the short way reads is missing (AttributeError) or not of
     * the type it expects. */
    PyObject *data = NULL;
    int quiet = hset_store_is_quiet(args[1], &data);
    Py_XDECREF(data);
    if (quiet < 0)
        return NULL;
    if (quiet == 0) {
        PyErr_SetString(PyExc_TypeError, "a new store's attributes are not what HSET's short way reads");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_XSETREF(hset_run, args[0]);
    Py_INCREF(args[2]);
    Py_XSETREF(hset_one, args[2]);
    Py_INCREF(args[3]);
    Py_XSETREF(hset_zero, args[3]);
    Py_RETURN_NONE;
}

/* run(dispatch, store, commands, start, replies, arity_error) -> int
 *
 * Runs commands[start:] in order while each takes the fast way: its name is in ``dispatch`` (name -> (run, low,
 * high)); appends run(store, args), or arity_error(name) when it has fewer than low or more than high arguments, to
 * ``replies``. Returns the index of the first command not run: one whose name ``dispatch`` lacks, or the one after a
 * command that left keyspace events or unblocked keys behind (store.events, store.ready), for the session to handle;
 * len(commands) when it ran them all. resp_server.session._run_fast is the same loop in Python.
 *
 * An HSET that takes its short way (above) is done here, without calling hset. The short way runs no Python code, so
 * what it found out about the store holds until a command runs in Python: the store's quiet state (data) and that
 * store.ready and store.events were empty (settled) are read once for a run of such HSETs, not once per command. */
static PyObject *
run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6 || !PyDict_CheckExact(args[0]) || !PyList_CheckExact(args[2]) || !PyList_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "run(dispatch: dict, store, commands: list, start: int, replies: list, arity_error)");
        return NULL;
    }
    PyObject *dispatch = args[0], *store = args[1], *commands = args[2], *replies = args[4], *arity_error = args[5];
    Py_ssize_t i = PyLong_AsSsize_t(args[3]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    PyObject *data = NULL; /* store._data while the store is known to be quiet for HSET's short way, else NULL */
    int settled = 0;       /* store.ready and store.events are known to be empty */
    for (; i >= 0 && i < PyList_GET_SIZE(commands); i++) {
        PyObject *command = PyList_GET_ITEM(commands, i);
        if (!PyList_CheckExact(command) || PyList_GET_SIZE(command) == 0)
            break;
        PyObject *name = PyList_GET_ITEM(command, 0);
        PyObject *entry = PyDict_GetItemWithError(dispatch, name); /* borrowed */
        if (entry == NULL) {
            if (PyErr_Occurred())
                goto error;
            break;
        }
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
            PyErr_SetString(PyExc_TypeError, "a dispatch entry is (run, low, high)");
            goto error;
        }
        Py_ssize_t low = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
        Py_ssize_t high = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        if ((low == -1 || high == -1) && PyErr_Occurred())
            goto error;
        Py_ssize_t size = PyList_GET_SIZE(command);
        PyObject *reply = NULL;
        if (size == 4 && PyTuple_GET_ITEM(entry, 0) == hset_run && low <= size && size <= high) {
            if (data == NULL && hset_store_is_quiet(store, &data) < 0)
                goto error;
            if (data != NULL) {
                reply = hset_short(data, command);
                if (reply == NULL && PyErr_Occurred())
                    goto error;
            }
        }
        if (reply != NULL) {
            if (PyList_Append(replies, reply) < 0)
                goto error;
            if (settled)
                continue;
        }
        else {
            Py_CLEAR(data); /* Python code runs: what was known of the store is known no longer */
            settled = 0;
            /* Held through the call, whatever the command does to the batch or the table. */
            Py_INCREF(command);
            Py_INCREF(entry);
            if (low <= size && size <= high) {
                PyObject *call[2] = {store, command};
                reply = PyObject_Vectorcall(PyTuple_GET_ITEM(entry, 0), call, 2, NULL);
            }
            else {
                reply = PyObject_CallOneArg(arity_error, name);
            }
            Py_DECREF(entry);
            Py_DECREF(command);
            if (reply == NULL)
                goto error;
            int appended = PyList_Append(replies, reply);
            Py_DECREF(reply);
            if (appended < 0)
                goto error;
        }
        /* store.ready or store.events: the session publishes the events and serves the unblocked clients first. */
        PyObject *names[2] = {ready_name, events_name};
        for (int k = 0; k < 2; k++) {
            PyObject *pending = PyObject_GetAttr(store, names[k]);
            if (pending == NULL)
                goto error;
            int truth = PyObject_IsTrue(pending);
            Py_DECREF(pending);
            if (truth < 0)
                goto error;
            if (truth) {
                Py_XDECREF(data);
                return PyLong_FromSsize_t(i + 1);
            }
        }
        settled = 1;
    }
    Py_XDECREF(data);
    return PyLong_FromSsize_t(i);
error:
    Py_XDECREF(data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"frame", (PyCFunction)(void (*)(void))frame, METH_FASTCALL,
     "frame(max_array, max_bulk, data, start) -> (commands, end): the complete, well-formed multibulk requests from "
     "data[start:] on, and where the rest starts."},
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(dispatch, store, commands, start, replies, arity_error) -> int: the commands from start on that take the "
     "fast way, run in order; where it stopped."},
    {"hset_short_way", (PyCFunction)(void (*)(void))hset_short_way, METH_FASTCALL,
     "hset_short_way(hset, store, one, zero): run takes HSET's short way itself for the commands that dispatch to "
     "hset, answering one or zero; store (a new KeyValueStore) is where the attributes it reads are checked."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "resp_server._speedups",
    "resp_server's compiled hot path: the request framer and the session's dispatch loop.", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject **names[7] = {&deadlines_name, &watchers_name, &blocked_name, &notifying_name,
                           &data_name,      &ready_name,    &events_name};
    const char *spellings[7] = {"_deadlines", "watchers", "blocked", "notifying", "_data", "ready", "events"};
    for (int k = 0; k < 7; k++) {
        if (*names[k] == NULL && (*names[k] = PyUnicode_InternFromString(spellings[k])) == NULL)
            return NULL;
    }
    return PyModule_Create(&speedups_module);
}
