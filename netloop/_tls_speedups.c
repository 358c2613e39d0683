/* OpenSSL read-ahead for netloop's TLS connections, from the libssl the ``ssl`` module already loaded.
 *
 * Without read-ahead OpenSSL reads each record with two recv() calls (its 5-byte header, then its body); with it,
 * one recv() takes all the socket holds, up to OpenSSL's record buffer. The ssl module exposes neither
 * SSL_set_read_ahead nor SSL_has_pending, so this module finds them at run time in the libraries the ``_ssl``
 * extension was linked with (no build dependency on OpenSSL's headers), and reaches the SSL* of an ``_ssl._SSLSocket``
 * through the head of its C struct. That head has been the same from CPython 3.7 to 3.13; it is checked on every
 * object before use (the type's name and size, the weak reference to the very socket that was wrapped, and
 * SSL_get_fd against that socket's descriptor), and where anything differs nothing is changed and False comes back:
 * the connection then reads without read-ahead, as the pure-Python core always does.
 *
 * With read-ahead, records OpenSSL has read but not yet decrypted are not counted by SSL_pending() (the ssl
 * object's ``pending()``): ``has_pending`` (SSL_has_pending) is what tells whether a read would find bytes without
 * the socket.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <string.h>

typedef struct ssl_st SSL;

static int (*ssl_get_fd)(const SSL *);
static void (*ssl_set_read_ahead)(SSL *, int);
static int (*ssl_get_read_ahead)(const SSL *);
static int (*ssl_has_pending)(const SSL *);

/* The head of CPython's PySSLSocket (Modules/_ssl.c): the weak reference to the wrapped socket, then the SSL*. */
typedef struct {
    PyObject_HEAD
    PyObject *socket;
    SSL *ssl;
} SslHead;

/* The ``_ssl._SSLSocket`` type whose objects passed the checks: ``has_pending`` takes only those. */
static PyTypeObject *checked_type;

static int
resolve(void *lib)
{
    if (lib == NULL)
        return 0;
    *(void **)&ssl_get_fd = dlsym(lib, "SSL_get_fd");
    *(void **)&ssl_set_read_ahead = dlsym(lib, "SSL_set_read_ahead");
    *(void **)&ssl_get_read_ahead = dlsym(lib, "SSL_get_read_ahead");
    *(void **)&ssl_has_pending = dlsym(lib, "SSL_has_pending");
    return ssl_get_fd && ssl_set_read_ahead && ssl_get_read_ahead && ssl_has_pending;
}

/* load(ssl_path): find the functions in the ``_ssl`` extension at ``ssl_path`` (already loaded: it is not loaded
 * again) and the libraries it was linked with, or, with None (``_ssl`` built into the interpreter), in the
 * process's global symbols. True when all four were found. */
static PyObject *
load(PyObject *module, PyObject *path)
{
    void *lib;
    if (path == Py_None) {
        lib = dlopen(NULL, RTLD_LAZY);
    } else {
        PyObject *bytes;
        if (!PyUnicode_FSConverter(path, &bytes))
            return NULL;
        lib = dlopen(PyBytes_AS_STRING(bytes), RTLD_LAZY | RTLD_NOLOAD);
        Py_DECREF(bytes);
    }
    /* The handle is kept (never dlclose'd): the functions live as long as the ``_ssl`` module does, for good. */
    if (!resolve(lib)) {
        ssl_get_fd = NULL;
        ssl_set_read_ahead = NULL;
        ssl_get_read_ahead = NULL;
        ssl_has_pending = NULL;
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* Whether ``sock`` is the object ``ref`` (a weak reference) points to. */
static int
refers_to(PyObject *ref, PyObject *sock)
{
    if (ref == NULL || !PyWeakref_Check(ref))
        return 0;
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *target;
    if (PyWeakref_GetRef(ref, &target) < 0) {
        PyErr_Clear();
        return 0;
    }
    Py_XDECREF(target);
    return target == sock;
#else
    return PyWeakref_GetObject(ref) == sock;
#endif
}

/* read_ahead(sslobj, sock, fd): switch OpenSSL's read-ahead on for ``sslobj``, the ``_ssl._SSLSocket`` that wraps
 * ``sock`` (descriptor ``fd``). False, changing nothing, unless every check of its layout holds. */
static PyObject *
read_ahead(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read_ahead(sslobj, sock, fd)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[2]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    PyObject *obj = args[0];
    PyTypeObject *type = Py_TYPE(obj);
    if (ssl_set_read_ahead == NULL || strcmp(type->tp_name, "_ssl._SSLSocket") != 0 ||
        type->tp_basicsize < (Py_ssize_t)sizeof(SslHead))
        Py_RETURN_FALSE;
    SslHead *head = (SslHead *)obj;
    if (!refers_to(head->socket, args[1]) || head->ssl == NULL || ssl_get_fd(head->ssl) != fd)
        Py_RETURN_FALSE;
    ssl_set_read_ahead(head->ssl, 1);
    if (ssl_get_read_ahead(head->ssl) != 1)
        Py_RETURN_FALSE;
    if (checked_type != type) {
        PyTypeObject *old = checked_type;
        checked_type = (PyTypeObject *)Py_NewRef(type); /* held: the check above compares by address */
        Py_XDECREF(old);
    }
    Py_RETURN_TRUE;
}

/* has_pending(sslobj): whether OpenSSL holds bytes of ``sslobj``'s input, decrypted or not (SSL_has_pending): a
 * read would find them without the socket. Only for an object ``read_ahead`` accepted the type of. */
static PyObject *
has_pending(PyObject *module, PyObject *obj)
{
    if (checked_type == NULL || Py_TYPE(obj) != checked_type) {
        PyErr_SetString(PyExc_TypeError, "has_pending() takes an _ssl._SSLSocket read_ahead() accepted");
        return NULL;
    }
    return PyBool_FromLong(ssl_has_pending(((SslHead *)obj)->ssl));
}

static PyMethodDef methods[] = {
    {"load", load, METH_O, "Find OpenSSL's read-ahead functions in the _ssl extension at the path (None: built in)."},
    {"read_ahead", (PyCFunction)(void (*)(void))read_ahead, METH_FASTCALL,
     "Switch read-ahead on for an _ssl._SSLSocket wrapping sock (fd); False where its layout is not the known one."},
    {"has_pending", has_pending, METH_O, "Whether OpenSSL holds input of this connection (SSL_has_pending)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "netloop._tls_speedups", "OpenSSL read-ahead for netloop's TLS connections.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__tls_speedups(void)
{
    return PyModule_Create(&module_def);
}
