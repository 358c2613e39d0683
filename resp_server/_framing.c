/* The compiled framer of resp_server.parser: the complete, well-formed multibulk requests at the start of a read,
 * framed in one pass. Optional: without it (no C compiler, or NETLOOP_PURE=1) the parser frames in Python.
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
            PyObject *arg = PyBytes_FromStringAndSize(p, (Py_ssize_t)length);
            if (arg == NULL) {
                Py_DECREF(command);
                goto fail;
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
        Py_DECREF(command);
        done = p;
    }
    PyObject *result = Py_BuildValue("(Nn)", commands, (Py_ssize_t)(done - base));
    return result;
fail:
    Py_DECREF(commands);
    return NULL;
}

static PyMethodDef methods[] = {
    {"frame", (PyCFunction)(void (*)(void))frame, METH_FASTCALL,
     "frame(max_array, max_bulk, data, start) -> (commands, end): the complete, well-formed multibulk requests from "
     "data[start:] on, and where the rest starts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef framing_module = {
    PyModuleDef_HEAD_INIT, "resp_server._framing", "The compiled RESP request framer of resp_server.parser.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__framing(void)
{
    return PyModule_Create(&framing_module);
}
