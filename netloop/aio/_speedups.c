/* netloop.aio._speedups: asyncio's ready queue on a netloop loop, compiled.
 *
 * Three things, each a copy of pure-Python code in netloop/aio/_ready.py and netloop/aio/_loop.py that stays the
 * reference implementation:
 *
 *   CallSoon    ``Loop.call_soon`` out of asyncio's debug mode: an ``asyncio.Handle`` (asyncio's own class, its
 *               slots filled in C as ``_new_handle`` fills them) queued on the netloop loop's task queue as
 *               ``(run_handle, (handle,))``. In debug mode, on a closed loop, or for a call it cannot take, it calls
 *               the Python ``Loop.call_soon``.
 *   run_handle  ``_ready.run_handle``: run a handle in its context unless cancelled; a raise is reported to the
 *               loop's exception handler (``_ready.report``), SystemExit and KeyboardInterrupt propagate.
 *   Drain       ``EventLoop._run_tasks`` (netloop/_eventloop.py): run what is queued now, ``fn(*args)`` each; a
 *               queued ``run_handle`` runs without a call through Python. An ``Exception`` is logged
 *               (``_ready.task_failed``) and the drain goes on; anything else propagates.
 *
 * The slots of ``asyncio.Handle`` are found by name when ``setup`` is called (their member descriptors' offsets), so
 * a CPython whose Handle is laid out otherwise is refused at import (the Python copies serve), never misread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static PyTypeObject *handle_type; /* asyncio.Handle */
static PyObject *py_run_handle;   /* _ready.run_handle: the reference, for objects that are no Handle */
static PyObject *report;          /* _ready.report(handle, exc) */
static PyObject *run_handle_fn;   /* this module's run_handle, as queued */
static PyObject *s_closed, *s_debug, *s_context;

enum { CALLBACK, ARGS, CANCELLED, LOOP, SOURCE_TRACEBACK, REPR, CONTEXT, NSLOTS };
static const char *slot_names[NSLOTS] = {
    "_callback", "_args", "_cancelled", "_loop", "_source_traceback", "_repr", "_context",
};
static Py_ssize_t offsets[NSLOTS];

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

/* -- run_handle ------------------------------------------------------------------------------------------------ */

/* _ready.run_handle's body; 0, or -1 with an exception set (what escaped: SystemExit, KeyboardInterrupt, or a
 * failing report). */
static int
run_one(PyObject *handle)
{
    if (!PyObject_TypeCheck(handle, handle_type)) {
        PyObject *r = PyObject_CallOneArg(py_run_handle, handle);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    PyObject *cancelled = SLOT(handle, offsets[CANCELLED]);
    PyObject *context = SLOT(handle, offsets[CONTEXT]);
    PyObject *callback = SLOT(handle, offsets[CALLBACK]);
    PyObject *args = SLOT(handle, offsets[ARGS]);
    if (cancelled == NULL || context == NULL || callback == NULL || args == NULL) {
        PyObject *r = PyObject_CallOneArg(py_run_handle, handle); /* raises AttributeError as Python reads it */
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    if (cancelled != Py_False) {
        int truth = PyObject_IsTrue(cancelled);
        if (truth != 0) {
            return truth < 0 ? -1 : 0;
        }
    }
    PyObject *result = NULL;
    /* Held across the call: the callback may drop the last other references to its handle or reassign its slots. */
    Py_INCREF(handle);
    Py_INCREF(context);
    Py_INCREF(callback);
    Py_INCREF(args);
    if (PyContext_Enter(context) == 0) {
        if (PyTuple_CheckExact(args)) {
            result = PyObject_Call(callback, args, NULL);
        } else {
            PyObject *tuple = PySequence_Tuple(args);
            if (tuple != NULL) {
                result = PyObject_Call(callback, tuple, NULL);
                Py_DECREF(tuple);
            }
        }
        PyObject *exc = result == NULL ? take_exception() : NULL;
        if (PyContext_Exit(context) < 0) {
            Py_XDECREF(exc);
            Py_CLEAR(result);
        } else {
            restore_exception(exc);
        }
    }
    Py_DECREF(context);
    Py_DECREF(callback);
    Py_DECREF(args);
    if (result != NULL) {
        Py_DECREF(result);
        Py_DECREF(handle);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        Py_DECREF(handle);
        return -1;
    }
    PyObject *exc = take_exception();
    PyObject *r = PyObject_CallFunctionObjArgs(report, handle, exc, NULL);
    Py_DECREF(exc);
    Py_DECREF(handle);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static PyObject *
run_handle(PyObject *module, PyObject *handle)
{
    if (run_one(handle) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- CallSoon -------------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *loop;
    PyObject *loop_dict; /* the loop's __dict__: its _closed and _debug */
    PyObject *append;    /* the task queue's append */
    PyObject *slow;      /* the Python Loop.call_soon, bound to the loop */
    vectorcallfunc vectorcall;
} CallSoon;

static PyObject *
call_soon_vectorcall(CallSoon *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        if (PyTuple_GET_SIZE(kwnames) != 1 || PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), s_context) != 0) {
            goto slow; /* Python says what is wrong with them */
        }
        context = args[nargs];
        if (context == Py_None) {
            context = NULL;
        }
    }
    if (nargs < 1) {
        goto slow;
    }
    PyObject *closed = PyDict_GetItemWithError(self->loop_dict, s_closed);
    if (closed != Py_False) {
        goto slow;
    }
    PyObject *debug = PyDict_GetItemWithError(self->loop_dict, s_debug);
    if (debug != Py_False) {
        goto slow;
    }
    PyObject *callback_args = PyTuple_New(nargs - 1);
    if (callback_args == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(callback_args, i - 1, Py_NewRef(args[i]));
    }
    context = context != NULL ? Py_NewRef(context) : PyContext_CopyCurrent();
    if (context == NULL) {
        Py_DECREF(callback_args);
        return NULL;
    }
    PyObject *handle = handle_type->tp_alloc(handle_type, 0);
    if (handle == NULL) {
        Py_DECREF(callback_args);
        Py_DECREF(context);
        return NULL;
    }
    SLOT(handle, offsets[CALLBACK]) = Py_NewRef(args[0]);
    SLOT(handle, offsets[ARGS]) = callback_args;
    SLOT(handle, offsets[CANCELLED]) = Py_NewRef(Py_False);
    SLOT(handle, offsets[LOOP]) = Py_NewRef(self->loop);
    SLOT(handle, offsets[SOURCE_TRACEBACK]) = Py_NewRef(Py_None);
    SLOT(handle, offsets[REPR]) = Py_NewRef(Py_None);
    SLOT(handle, offsets[CONTEXT]) = context;
    PyObject *queued = PyTuple_Pack(1, handle);
    PyObject *entry = queued == NULL ? NULL : PyTuple_Pack(2, run_handle_fn, queued);
    Py_XDECREF(queued);
    PyObject *r = entry == NULL ? NULL : PyObject_CallOneArg(self->append, entry);
    Py_XDECREF(entry);
    if (r == NULL) {
        Py_DECREF(handle);
        return NULL;
    }
    Py_DECREF(r);
    return handle;
slow:
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static PyObject *
call_soon_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *loop, *append, *slow;
    if (!PyArg_ParseTuple(args, "OOO:CallSoon", &loop, &append, &slow)) {
        return NULL;
    }
    if (handle_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "netloop.aio._speedups.setup() has not been called");
        return NULL;
    }
    PyObject *loop_dict = PyObject_GenericGetDict(loop, NULL);
    if (loop_dict == NULL) {
        return NULL;
    }
    CallSoon *self = (CallSoon *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(loop_dict);
        return NULL;
    }
    self->loop = Py_NewRef(loop);
    self->loop_dict = loop_dict;
    self->append = Py_NewRef(append);
    self->slow = Py_NewRef(slow);
    self->vectorcall = (vectorcallfunc)call_soon_vectorcall;
    return (PyObject *)self;
}

static int
call_soon_traverse(CallSoon *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->loop_dict);
    Py_VISIT(self->append);
    Py_VISIT(self->slow);
    return 0;
}

static int
call_soon_clear(CallSoon *self)
{
    Py_CLEAR(self->loop);
    Py_CLEAR(self->loop_dict);
    Py_CLEAR(self->append);
    Py_CLEAR(self->slow);
    return 0;
}

static void
call_soon_dealloc(CallSoon *self)
{
    PyObject_GC_UnTrack(self);
    call_soon_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CallSoonType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "netloop.aio._speedups.CallSoon",
    .tp_doc = "CallSoon(loop, append, slow): loop.call_soon(callback, *args, context=None) -> asyncio.Handle",
    .tp_basicsize = sizeof(CallSoon),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = call_soon_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(CallSoon, vectorcall),
    .tp_traverse = (traverseproc)call_soon_traverse,
    .tp_clear = (inquiry)call_soon_clear,
    .tp_dealloc = (destructor)call_soon_dealloc,
};

/* -- Drain ----------------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *queue;   /* the netloop loop's task queue (a deque of (fn, args)) */
    PyObject *popleft; /* its popleft */
    PyObject *failed;  /* failed(fn, exc): log a task's Exception */
} Drain;

static PyObject *
drain_call(Drain *self, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "the task queue's drain takes no arguments");
        return NULL;
    }
    /* Only what is queued now: a task that queues another must not starve the poller. */
    Py_ssize_t queued = PyObject_Length(self->queue);
    if (queued < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < queued; i++) {
        PyObject *entry = PyObject_CallNoArgs(self->popleft);
        if (entry == NULL) {
            if (PyErr_ExceptionMatches(PyExc_IndexError)) {
                PyErr_Clear(); /* a task emptied the queue */
                break;
            }
            return NULL;
        }
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) {
            PyErr_Format(PyExc_ValueError, "a netloop loop's task must be (fn, args), not %R", entry);
            Py_DECREF(entry);
            return NULL;
        }
        PyObject *fn = PyTuple_GET_ITEM(entry, 0);
        PyObject *fn_args = PyTuple_GET_ITEM(entry, 1);
        int rc;
        if (fn == run_handle_fn && PyTuple_CheckExact(fn_args) && PyTuple_GET_SIZE(fn_args) == 1) {
            rc = run_one(PyTuple_GET_ITEM(fn_args, 0));
        } else {
            PyObject *tuple = PySequence_Tuple(fn_args);
            PyObject *r = tuple == NULL ? NULL : PyObject_Call(fn, tuple, NULL);
            Py_XDECREF(tuple);
            Py_XDECREF(r);
            rc = r == NULL ? -1 : 0;
        }
        if (rc < 0) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                Py_DECREF(entry);
                return NULL;
            }
            PyObject *exc = take_exception();
            PyObject *r = PyObject_CallFunctionObjArgs(self->failed, fn, exc, NULL);
            Py_DECREF(exc);
            if (r == NULL) {
                Py_DECREF(entry);
                return NULL;
            }
            Py_DECREF(r);
        }
        Py_DECREF(entry);
    }
    Py_RETURN_NONE;
}

static PyObject *
drain_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *queue, *failed;
    if (!PyArg_ParseTuple(args, "OO:Drain", &queue, &failed)) {
        return NULL;
    }
    PyObject *popleft = PyObject_GetAttrString(queue, "popleft");
    if (popleft == NULL) {
        return NULL;
    }
    Drain *self = (Drain *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(popleft);
        return NULL;
    }
    self->queue = Py_NewRef(queue);
    self->popleft = popleft;
    self->failed = Py_NewRef(failed);
    return (PyObject *)self;
}

static int
drain_traverse(Drain *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->popleft);
    Py_VISIT(self->failed);
    return 0;
}

static int
drain_clear(Drain *self)
{
    Py_CLEAR(self->queue);
    Py_CLEAR(self->popleft);
    Py_CLEAR(self->failed);
    return 0;
}

static void
drain_dealloc(Drain *self)
{
    PyObject_GC_UnTrack(self);
    drain_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject DrainType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "netloop.aio._speedups.Drain",
    .tp_doc = "Drain(queue, failed)(): run the (fn, args) tasks queued now, as EventLoop._run_tasks does",
    .tp_basicsize = sizeof(Drain),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = drain_new,
    .tp_call = (ternaryfunc)drain_call,
    .tp_traverse = (traverseproc)drain_traverse,
    .tp_clear = (inquiry)drain_clear,
    .tp_dealloc = (destructor)drain_dealloc,
};

/* -- setup ----------------------------------------------------------------------------------------------------- */

/* setup(asyncio.Handle, run_handle, report): where Handle keeps its slots, and the Python this module calls. */
static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *type, *reference, *reporter;
    if (!PyArg_ParseTuple(args, "O!OO:setup", &PyType_Type, &type, &reference, &reporter)) {
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)type;
    if (cls->tp_dictoffset != 0 || cls->tp_alloc == NULL || cls->tp_itemsize != 0) {
        PyErr_Format(PyExc_TypeError, "%R is not laid out as asyncio.Handle is expected to be (slots only)", type);
        return NULL;
    }
    Py_ssize_t found[NSLOTS];
    for (int i = 0; i < NSLOTS; i++) {
        PyObject *descr = PyObject_GetAttrString(type, slot_names[i]);
        if (descr == NULL) {
            return NULL;
        }
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type);
        PyMemberDef *member = ok ? ((PyMemberDescrObject *)descr)->d_member : NULL;
        ok = ok && member->type == T_OBJECT_EX && !(member->flags & READONLY) && member->offset > 0 &&
             member->offset + (Py_ssize_t)sizeof(PyObject *) <= cls->tp_basicsize;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%R.%s is not a writable object slot", type, slot_names[i]);
            return NULL;
        }
        found[i] = member->offset;
    }
    memcpy(offsets, found, sizeof(offsets));
    Py_XSETREF(handle_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(py_run_handle, Py_NewRef(reference));
    Py_XSETREF(report, Py_NewRef(reporter));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(handle_type, run_handle, report): take asyncio.Handle's layout"},
    {"run_handle", run_handle, METH_O,
     "run_handle(handle): run an asyncio handle unless cancelled; a raise goes to the loop's exception handler"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "netloop.aio._speedups",
    .m_doc = "asyncio's ready queue on a netloop loop, compiled (netloop/aio/_ready.py is the reference).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&CallSoonType) < 0 || PyType_Ready(&DrainType) < 0) {
        return NULL;
    }
    s_closed = PyUnicode_InternFromString("_closed");
    s_debug = PyUnicode_InternFromString("_debug");
    s_context = PyUnicode_InternFromString("context");
    if (s_closed == NULL || s_debug == NULL || s_context == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    run_handle_fn = PyObject_GetAttrString(module, "run_handle");
    if (run_handle_fn == NULL || PyModule_AddObjectRef(module, "CallSoon", (PyObject *)&CallSoonType) < 0 ||
        PyModule_AddObjectRef(module, "Drain", (PyObject *)&DrainType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
