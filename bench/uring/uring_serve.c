/* The io_uring experiment: netloop/_speedups.c with its epoll loop fed by io_uring completions.
 *
 * Not part of the package. bench/uring/build.py compiles this file into a drop-in ``netloop._speedups`` for a
 * scratch copy of the tree; docs/performance.md ("The io_uring experiment") has the figures and the decision.
 *
 * It includes netloop/_speedups.c whole, so the connection type, its write path and the read path are the shipped
 * ones, and replaces the module's ``serve`` with ``serve_uring`` (same arguments):
 *
 *   - one io_uring_enter per loop iteration submits what the iteration queued and waits for completions;
 *   - a plain accepted connection (the ones the inlined read path serves) is read by a multishot recv into a
 *     provided buffer ring once its first readable event arrives; its epoll interest drops to nothing but writes,
 *     and its bytes reach ``on_traffic`` as ``read_event``'s would (copied out of the ring into a ``bytes``);
 *   - everything else (listeners, the wake-up descriptor, TLS, clients, writable events) stays on epoll, whose
 *     descriptor the ring watches with a multishot poll: epoll_wait runs only when it has something;
 *   - when ``readers[fd]`` stops naming the connection (paused, closing, closed), the recv is cancelled and the
 *     connection's epoll interest is given back;
 *   - with NETLOOP_URING_SEND=1, writes on those connections are copied and submitted as send SQEs with the next
 *     io_uring_enter instead of send(2) at once. That mode measures what batching sends would save; it is not
 *     correct when the server closes a connection (the close's FIN can overtake the queued bytes).
 *
 * Where io_uring_setup fails (not built into the kernel, disabled by policy) ``serve`` is the epoll one, after one
 * line on stderr. Two more settings, for measuring only: NETLOOP_URING_WAIT_CAP_MS caps each wait (under valgrind a
 * signal is handled only once the wait returns), NETLOOP_URING_DEFER=0 sets the ring up without deferred task
 * running.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <linux/io_uring.h>

static ssize_t uring_send(int fd, const void *buf, size_t len, int flags);
static ssize_t uring_sendmsg(int fd, const struct msghdr *msg, int flags);
#define send(fd, buf, len, flags) uring_send(fd, buf, len, flags)
#define sendmsg(fd, msg, flags) uring_sendmsg(fd, msg, flags)
#define module_methods base_module_methods
#define PyInit__speedups base_init
#include "../../netloop/_speedups.c"
#undef send
#undef sendmsg
#undef PyInit__speedups

#define RING_ENTRIES 1024
#define CQ_ENTRIES 8192
#define BUF_COUNT 512 /* provided buffers: a power of two */
#define BUF_SIZE 16384
#define BGID 1

/* user_data: the kind in the low byte, a slot and its generation above. */
enum { TAG_EPOLL = 1, TAG_RECV = 2, TAG_SEND = 3, TAG_CANCEL = 4 };

/* One connection read through the ring. */
typedef struct {
    PyObject *conn;   /* a strong reference while the slot is in use */
    int fd;
    uint32_t gen;
    int recv_armed;   /* a multishot recv is outstanding */
    int active;       /* readers[fd] named ``conn`` when last looked at */
    PyObject *held;   /* bytes read after the connection left the inlined path (paused): shown when it is back */
    Py_ssize_t held_pos; /* how much of ``held`` was shown */
    char *out;        /* NETLOOP_URING_SEND: bytes queued for the next submit */
    size_t out_len, out_cap;
    char *flight;     /* the bytes a submitted send owns until its completion */
    size_t flight_len, flight_done;
    int in_flight;
} Slot;

typedef struct {
    int ring_fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_ptr, *cq_ptr;
    size_t sq_size, cq_size, sqes_size;
    unsigned to_submit;
    struct io_uring_buf_ring *br;
    size_t br_size;
    char *bufs;
    Slot *slots;
    int nslots;
    int *free_slots;
    int nfree;
    int *fd_slot; /* by descriptor: the slot reading it, or -1 */
    int nfd;
    int send_sqes;
    unsigned buf_size; /* each provided buffer: one read, at most the loop's read size */
    unsigned inline_sends; /* sends queued with MSG_DONTWAIT: each completes (and posts its CQE) as it is submitted */
    int wait_cap_ms; /* NETLOOP_URING_WAIT_CAP_MS: valgrind delivers a signal only once the wait returns */
    int epfd;
} Uring;

static __thread Uring *current; /* the ring the loop on this thread runs, for uring_send */

static int
sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int
sys_enter(int fd, unsigned submit, unsigned wait, unsigned flags, void *arg, size_t argsz)
{
    return (int)syscall(__NR_io_uring_enter, fd, submit, wait, flags, arg, argsz);
}

static int
sys_register(int fd, unsigned op, void *arg, unsigned n)
{
    return (int)syscall(__NR_io_uring_register, fd, op, arg, n);
}

static void
uring_free(Uring *u)
{
    if (u->slots != NULL) {
        for (int i = 0; i < u->nslots; i++) {
            Py_CLEAR(u->slots[i].conn);
            Py_CLEAR(u->slots[i].held);
            free(u->slots[i].out);
            free(u->slots[i].flight);
        }
    }
    PyMem_Free(u->slots);
    PyMem_Free(u->free_slots);
    PyMem_Free(u->fd_slot);
    if (u->br != NULL) {
        munmap(u->br, u->br_size);
    }
    if (u->bufs != NULL) {
        munmap(u->bufs, (size_t)BUF_COUNT * BUF_SIZE);
    }
    if (u->sqes != NULL) {
        munmap(u->sqes, u->sqes_size);
    }
    if (u->sq_ptr != NULL) {
        munmap(u->sq_ptr, u->sq_size);
    }
    if (u->ring_fd >= 0) {
        close(u->ring_fd);
    }
}

static void
recycle(Uring *u, unsigned bid)
{
    unsigned short tail = u->br->tail;
    struct io_uring_buf *b = &u->br->bufs[tail & (BUF_COUNT - 1)];
    b->addr = (uint64_t)(uintptr_t)(u->bufs + (size_t)bid * BUF_SIZE);
    b->len = u->buf_size;
    b->bid = (unsigned short)bid;
    atomic_store_explicit((_Atomic unsigned short *)&u->br->tail, (unsigned short)(tail + 1), memory_order_release);
}

/* The ring, its buffer ring and tables; -1 with errno set when the kernel refuses. */
static int
uring_open(Uring *u, int epfd, Py_ssize_t read_size)
{
    memset(u, 0, sizeof(*u));
    u->ring_fd = -1;
    u->epfd = epfd;
    u->buf_size = read_size < BUF_SIZE ? (unsigned)read_size : BUF_SIZE;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER;
    const char *defer = getenv("NETLOOP_URING_DEFER");
    if (defer == NULL || strcmp(defer, "0") != 0) {
        p.flags |= IORING_SETUP_DEFER_TASKRUN; /* completions run in io_uring_enter, never as an interruption */
    }
    p.cq_entries = CQ_ENTRIES;
    int fd = sys_setup(RING_ENTRIES, &p);
    if (fd < 0) {
        return -1;
    }
    u->ring_fd = fd;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        errno = ENOSYS;
        return -1;
    }
    u->sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    u->cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (u->cq_size > u->sq_size) {
        u->sq_size = u->cq_size;
    }
    u->sq_ptr = mmap(NULL, u->sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (u->sq_ptr == MAP_FAILED) {
        u->sq_ptr = NULL;
        return -1;
    }
    u->cq_ptr = u->sq_ptr;
    u->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    u->sqes = mmap(NULL, u->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (u->sqes == MAP_FAILED) {
        u->sqes = NULL;
        return -1;
    }
    char *sq = u->sq_ptr;
    u->sq_head = (unsigned *)(sq + p.sq_off.head);
    u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    u->sq_array = (unsigned *)(sq + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; i++) {
        u->sq_array[i] = i;
    }
    char *cq = u->cq_ptr;
    u->cq_head = (unsigned *)(cq + p.cq_off.head);
    u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

    u->br_size = BUF_COUNT * sizeof(struct io_uring_buf);
    u->br = mmap(NULL, u->br_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    u->bufs = mmap(NULL, (size_t)BUF_COUNT * BUF_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (u->br == MAP_FAILED || u->bufs == MAP_FAILED) {
        u->br = u->br == MAP_FAILED ? NULL : u->br;
        u->bufs = u->bufs == MAP_FAILED ? NULL : u->bufs;
        return -1;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)u->br;
    reg.ring_entries = BUF_COUNT;
    reg.bgid = BGID;
    if (sys_register(fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        return -1;
    }
    for (unsigned i = 0; i < BUF_COUNT; i++) {
        recycle(u, i);
    }
    const char *mode = getenv("NETLOOP_URING_SEND");
    u->send_sqes = mode != NULL && strcmp(mode, "1") == 0;
    const char *cap = getenv("NETLOOP_URING_WAIT_CAP_MS");
    u->wait_cap_ms = cap != NULL ? atoi(cap) : 0;
    return 0;
}

/* A free SQE, submitting what is queued when the ring is full; NULL when even that fails. */
static struct io_uring_sqe *
get_sqe(Uring *u)
{
    unsigned tail = *u->sq_tail;
    unsigned head = atomic_load_explicit((_Atomic unsigned *)u->sq_head, memory_order_acquire);
    if (tail - head > *u->sq_mask) {
        if (sys_enter(u->ring_fd, u->to_submit, 0, 0, NULL, 0) < 0) {
            return NULL;
        }
        u->to_submit = 0;
        u->inline_sends = 0; /* their completions are posted already */
        head = atomic_load_explicit((_Atomic unsigned *)u->sq_head, memory_order_acquire);
        if (tail - head > *u->sq_mask) {
            return NULL;
        }
    }
    struct io_uring_sqe *sqe = &u->sqes[tail & *u->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    atomic_store_explicit((_Atomic unsigned *)u->sq_tail, tail + 1, memory_order_release);
    u->to_submit++;
    return sqe;
}

static uint64_t
tag(int kind, int slot, uint32_t gen)
{
    return (uint64_t)kind | ((uint64_t)(uint32_t)slot << 8) | ((uint64_t)(gen & 0xffffff) << 40);
}

static int
arm_epoll(Uring *u)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    if (sqe == NULL) {
        return -1;
    }
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = u->epfd;
    sqe->poll32_events = POLLIN;
    sqe->len = IORING_POLL_ADD_MULTI;
    sqe->user_data = tag(TAG_EPOLL, 0, 0);
    return 0;
}

static int
arm_recv(Uring *u, int i)
{
    Slot *s = &u->slots[i];
    struct io_uring_sqe *sqe = get_sqe(u);
    if (sqe == NULL) {
        return -1;
    }
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = s->fd;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    sqe->user_data = tag(TAG_RECV, i, s->gen);
    s->recv_armed = 1;
    return 0;
}

static void
cancel_recv(Uring *u, int i)
{
    Slot *s = &u->slots[i];
    struct io_uring_sqe *sqe = get_sqe(u);
    if (sqe == NULL) {
        return; /* the recv ends with the connection's EOF or error instead */
    }
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->addr = tag(TAG_RECV, i, s->gen);
    sqe->user_data = tag(TAG_CANCEL, i, s->gen);
}

/* Submit the bytes queued on slot ``i`` (NETLOOP_URING_SEND), unless a send of it is still in flight. */
static void
submit_out(Uring *u, int i)
{
    Slot *s = &u->slots[i];
    if (s->in_flight || s->out_len == 0) {
        return;
    }
    struct io_uring_sqe *sqe = get_sqe(u);
    if (sqe == NULL) {
        return;
    }
    char *swap = s->flight;
    size_t cap = s->out_cap;
    s->flight = s->out;
    s->flight_len = s->out_len;
    s->flight_done = 0;
    s->out = swap;
    s->out_len = 0;
    s->out_cap = swap == NULL ? 0 : cap;
    s->in_flight = 1;
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = s->fd;
    sqe->addr = (uint64_t)(uintptr_t)s->flight;
    sqe->len = (unsigned)s->flight_len;
    /* Never parked on the socket: its completion is there when the submit returns, so the wait can count it. */
    sqe->msg_flags = MSG_NOSIGNAL | MSG_DONTWAIT;
    sqe->user_data = tag(TAG_SEND, i, s->gen);
    u->inline_sends++;
}

/* The slot still holding the descriptor and its bytes in flight: freed when every request on it has completed. */
static void
release_if_done(Uring *u, int i)
{
    Slot *s = &u->slots[i];
    if (s->recv_armed || s->in_flight || s->active || s->conn == NULL) {
        return;
    }
    if (s->held != NULL && ((ConnCore *)s->conn)->state != closed_state) {
        return; /* shown when readers names the connection again */
    }
    Py_CLEAR(s->held);
    Py_CLEAR(s->conn);
    s->out_len = 0;
    s->gen++;
    u->free_slots[u->nfree++] = i;
}

static int
queue_out(Slot *s, const void *buf, size_t len)
{
    if (s->out_len + len > s->out_cap) {
        size_t cap = s->out_cap ? s->out_cap : 4096;
        while (cap < s->out_len + len) {
            cap *= 2;
        }
        char *grown = realloc(s->out, cap);
        if (grown == NULL) {
            return -1;
        }
        s->out = grown;
        s->out_cap = cap;
    }
    memcpy(s->out + s->out_len, buf, len);
    s->out_len += len;
    return 0;
}

/* The slot whose bytes go out through the ring, or NULL: send(2) then, as the shipped core does. */
static Slot *
queued_slot(int fd)
{
    Uring *u = current;
    if (u == NULL || !u->send_sqes || fd < 0 || fd >= u->nfd || u->fd_slot[fd] < 0) {
        return NULL;
    }
    Slot *s = &u->slots[u->fd_slot[fd]];
    return s->active ? s : NULL;
}

static ssize_t
uring_send(int fd, const void *buf, size_t len, int flags)
{
    Slot *s = queued_slot(fd);
    if (s == NULL || queue_out(s, buf, len) < 0) {
        return (send)(fd, buf, len, flags);
    }
    return (ssize_t)len;
}

static ssize_t
uring_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    Slot *s = queued_slot(fd);
    if (s == NULL) {
        return (sendmsg)(fd, msg, flags);
    }
    size_t total = 0;
    for (size_t k = 0; k < (size_t)msg->msg_iovlen; k++) {
        if (queue_out(s, msg->msg_iov[k].iov_base, msg->msg_iov[k].iov_len) < 0) {
            s->out_len -= total; /* nothing of this call stays queued */
            return (sendmsg)(fd, msg, flags);
        }
        total += msg->msg_iov[k].iov_len;
    }
    return (ssize_t)total;
}

/* Give epoll the connection's interest (``conn._mask``), less readable events while the ring reads it: its
 * writable interest stays. */
static int
set_interest(Uring *u, int fd, PyObject *conn, int ring_reads)
{
    PyObject *mask = PyObject_GetAttrString(conn, "_mask");
    long m = mask == NULL ? -1 : PyLong_AsLong(mask);
    Py_XDECREF(mask);
    if (m == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (m < 0) {
        return 0; /* parked: not registered with epoll */
    }
    struct epoll_event ev = {.events = (uint32_t)m & (ring_reads ? ~(uint32_t)EPOLLIN : ~0u), .data.fd = fd};
    epoll_ctl(u->epfd, EPOLL_CTL_MOD, fd, &ev);
    return 0;
}

/* Read ``fd`` through the ring from now on: ``conn`` is ``readers[fd]``; -1 when it stays on epoll. */
static int
adopt_fd(Uring *u, int fd, PyObject *conn)
{
    if (fd >= u->nfd) {
        int size = u->nfd ? u->nfd : 1024;
        while (size <= fd) {
            size *= 2;
        }
        int *grown = PyMem_Realloc(u->fd_slot, (size_t)size * sizeof(int));
        if (grown == NULL) {
            return -1;
        }
        for (int k = u->nfd; k < size; k++) {
            grown[k] = -1;
        }
        u->fd_slot = grown;
        u->nfd = size;
    }
    if (u->nfree == 0) {
        int size = u->nslots ? u->nslots * 2 : 256;
        Slot *grown = PyMem_Realloc(u->slots, (size_t)size * sizeof(Slot));
        if (grown == NULL) {
            return -1;
        }
        memset(grown + u->nslots, 0, (size_t)(size - u->nslots) * sizeof(Slot));
        u->slots = grown;
        int *more = PyMem_Realloc(u->free_slots, (size_t)size * sizeof(int));
        if (more == NULL) {
            return -1;
        }
        u->free_slots = more;
        for (int k = size - 1; k >= u->nslots; k--) {
            u->free_slots[u->nfree++] = k;
        }
        u->nslots = size;
    }
    int i = u->free_slots[u->nfree - 1];
    Slot *s = &u->slots[i];
    s->fd = fd;
    if (arm_recv(u, i) < 0) {
        return -1;
    }
    u->nfree--;
    s->conn = Py_NewRef(conn);
    s->active = 1;
    u->fd_slot[fd] = i;
    if (set_interest(u, fd, conn, 1) < 0) { /* no readable events from epoll while the ring reads it */
        PyErr_Clear();
    }
    return 0;
}

/* The connection on slot ``i`` left the inlined read path: cancel its recv and give its interest back to epoll. */
static int
disown(Uring *u, int i)
{
    Slot *s = &u->slots[i];
    s->active = 0;
    u->fd_slot[s->fd] = -1;
    submit_out(u, i);
    if (s->recv_armed) {
        cancel_recv(u, i);
    }
    ConnCore *c = (ConnCore *)s->conn;
    if (c->state != closed_state && set_interest(u, s->fd, s->conn, 0) < 0) {
        return -1;
    }
    release_if_done(u, i);
    return 0;
}

static int deliver(Dispatch *d, ConnCore *c, PyObject *data, Py_ssize_t got);

/* The connection on slot ``i`` is back on the inlined path: read it through the ring again. */
static void
own_again(Uring *u, int i)
{
    Slot *s = &u->slots[i];
    if (s->active || s->fd >= u->nfd || u->fd_slot[s->fd] >= 0) {
        return;
    }
    s->active = 1;
    u->fd_slot[s->fd] = i;
    if (set_interest(u, s->fd, s->conn, 1) < 0) {
        PyErr_Clear();
    }
    if (!s->recv_armed && arm_recv(u, i) < 0) {
        s->active = 0;
        u->fd_slot[s->fd] = -1;
    }
}

/* Show the connection on slot ``i`` what is held for it, one read's worth at a time, while ``readers`` names it
 * (a read may pause it again: the rest stays held, as it would stay in the kernel). */
static int
show_held(Uring *u, Dispatch *d, int i)
{
    PyObject *key = PyLong_FromLong(u->slots[i].fd);
    if (key == NULL) {
        return -1;
    }
    int r = 0;
    while (r == 0 && u->slots[i].held != NULL) {
        Slot *s = &u->slots[i];
        PyObject *now = PyDict_GetItemWithError(d->readers, key);
        if (now != s->conn || ((ConnCore *)s->conn)->state == closed_state) {
            r = now == NULL && PyErr_Occurred() ? -1 : 0;
            break;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(s->held) - s->held_pos;
        Py_ssize_t piece = size < (Py_ssize_t)u->buf_size ? size : (Py_ssize_t)u->buf_size;
        PyObject *data = PyBytes_FromStringAndSize(PyBytes_AS_STRING(s->held) + s->held_pos, piece);
        if (data == NULL) {
            r = -1;
            break;
        }
        s->held_pos += piece;
        if (s->held_pos == PyBytes_GET_SIZE(s->held)) {
            Py_CLEAR(s->held);
        }
        PyObject *conn = Py_NewRef(s->conn);
        r = deliver(d, (ConnCore *)conn, data, piece);
        Py_DECREF(conn);
        if (r < 0) {
            r = event_failed(d->loop, u->slots[i].fd);
        }
    }
    Py_DECREF(key);
    return r;
}

/* Every slot against ``readers``: one whose descriptor no longer maps to its connection is disowned; one that maps
 * to it again is read through the ring again, and shown what was held for it first. */
static int
check_readers(Uring *u, Dispatch *d)
{
    for (int i = 0; i < u->nslots; i++) {
        Slot *s = &u->slots[i];
        if (s->conn == NULL || (!s->active && s->held == NULL)) {
            continue;
        }
        PyObject *key = PyLong_FromLong(s->fd);
        PyObject *now = key == NULL ? NULL : PyDict_GetItemWithError(d->readers, key);
        Py_XDECREF(key);
        if (now == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (((ConnCore *)s->conn)->state == closed_state) {
            Py_CLEAR(s->held);
            if (s->active ? disown(u, i) < 0 : (release_if_done(u, i), 0)) {
                return -1;
            }
        } else if (now == s->conn) {
            own_again(u, i);
            if (s->held != NULL && show_held(u, d, i) < 0) {
                return -1;
            }
        } else if (s->active && disown(u, i) < 0) {
            return -1;
        }
    }
    return 0;
}

/* read_event after its recv: ``data`` (a new reference, ``got`` > 0 bytes) reaches the connection and on_traffic. */
static int
deliver(Dispatch *d, ConnCore *c, PyObject *data, Py_ssize_t got)
{
    c->seen = d->now;
    d->sv->received += got;
    Py_ssize_t kept = c->inbound == NULL ? 0 : buffered(c->inbound, no_inbound);
    if (kept != 0) {
        PyObject *r = kept < 0 ? NULL : PyObject_CallMethodOneArg((PyObject *)c, s_keep_read, data);
        Py_DECREF(data);
        int go = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (go <= 0) {
            return go;
        }
    } else {
        set_data(c, data);
    }
    PyObject *action = PyObject_CallOneArg(d->on_traffic, (PyObject *)c);
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
    int rest = c->data == NULL ? 0 : PyObject_IsTrue(c->data);
    if (rest > 0) {
        rest = call_method((PyObject *)c, s_keep_rest, NULL);
    }
    int act = rest < 0 ? -1 : action == Py_None ? 0 : PyObject_IsTrue(action);
    if (act > 0) {
        act = call_method((PyObject *)c, s_act, action);
    }
    Py_DECREF(action);
    return act < 0 ? -1 : 0;
}

/* One recv completion on slot ``i``: -1 when an exception is raised (for the caller's guard). */
static int
on_recv(Uring *u, Dispatch *d, int i, struct io_uring_cqe *cqe)
{
    Slot *s = &u->slots[i];
    PyObject *data = NULL;
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        data = PyBytes_FromStringAndSize(u->bufs + (size_t)bid * BUF_SIZE, cqe->res);
        recycle(u, bid);
    }
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more) {
        s->recv_armed = 0;
    }
    PyObject *conn = Py_NewRef(s->conn);
    ConnCore *c = (ConnCore *)conn;
    int r = 0;
    if (cqe->res > 0) {
        if (data == NULL) {
            r = -1;
        } else if (s->active && s->held == NULL) {
            r = deliver(d, c, data, cqe->res);
        } else if (c->state != closed_state) {
            /* Read before the cancel took, or behind bytes still held: held until readers names the connection
               again, where the kernel would have kept it for the Python path's next read. */
            if (s->held == NULL) {
                s->held = data;
                s->held_pos = 0;
            } else {
                PyBytes_ConcatAndDel(&s->held, data);
                r = s->held == NULL ? -1 : 0;
            }
        } else {
            Py_DECREF(data);
        }
        if (!more && s->active && !s->recv_armed && r == 0 && arm_recv(u, i) < 0) {
            r = disown(u, i);
        }
    } else if (s->active && cqe->res == 0) {
        r = call_method(conn, s_peer_eof, NULL);
    } else if (s->active && cqe->res == -ENOBUFS) {
        if (!s->recv_armed && arm_recv(u, i) < 0) {
            r = disown(u, i);
        }
    } else if (s->active && cqe->res < 0 && cqe->res != -ECANCELED) {
        errno = -cqe->res;
        PyErr_SetFromErrno(PyExc_OSError);
        r = hand_exception(conn, s_close);
    }
    Py_DECREF(conn);
    release_if_done(u, i);
    return r;
}

static void
on_send(Uring *u, int i, struct io_uring_cqe *cqe)
{
    Slot *s = &u->slots[i];
    s->in_flight = 0;
    if (cqe->res == -EAGAIN) {
        cqe->res = 0; /* the socket's buffer is full: the rest waits for room below */
    }
    if (cqe->res < 0) {
        shutdown(s->fd, SHUT_RDWR); /* the recv then ends the connection */
        s->out_len = 0;
    } else if ((size_t)cqe->res < s->flight_len - s->flight_done) {
        s->flight_done += (size_t)cqe->res; /* short: send the rest first */
        struct io_uring_sqe *sqe = get_sqe(u);
        if (sqe != NULL) {
            s->in_flight = 1;
            sqe->opcode = IORING_OP_SEND;
            sqe->fd = s->fd;
            sqe->addr = (uint64_t)(uintptr_t)(s->flight + s->flight_done);
            sqe->len = (unsigned)(s->flight_len - s->flight_done);
            sqe->msg_flags = MSG_NOSIGNAL | MSG_WAITALL;
            sqe->user_data = tag(TAG_SEND, i, s->gen);
        }
        return;
    }
    submit_out(u, i);
    release_if_done(u, i);
}

/* One epoll event (dispatch's cases): a plain readable event on an inlined connection hands the descriptor to the
 * ring; a descriptor the ring reads keeps only its writable events here. */
static int
dispatch_epoll(Uring *u, Dispatch *d, int fd, uint32_t ev)
{
    if (fd >= 0 && fd < u->nfd && u->fd_slot[fd] >= 0) {
        int i = u->fd_slot[fd];
        if ((ev & (EPOLLHUP | EPOLLERR)) && !u->slots[i].recv_armed) {
            /* The recv ended (EOF or error, shown already) and epoll reports the hang-up at every wait, whatever
               the interest: the descriptor is the Python path's again, which parks or closes it. */
            return disown(u, i) < 0 ? -1 : dispatch(d, fd, ev);
        }
        ev &= EPOLLOUT;
        if (ev == 0) {
            return 0;
        }
        Slot *s = &u->slots[u->fd_slot[fd]];
        PyObject *conn = Py_NewRef(s->conn);
        int r = dispatch(d, fd, ev);
        /* The flush may have set the interest again, readable events included: the ring reads them. */
        if (r == 0 && u->fd_slot[fd] >= 0 && u->slots[u->fd_slot[fd]].conn == conn
            && ((ConnCore *)conn)->state != closed_state) {
            r = set_interest(u, fd, conn, 1);
        }
        Py_DECREF(conn);
        return r;
    }
    if (ev == EPOLLIN) {
        PyObject *key = PyLong_FromLong(fd);
        PyObject *conn = key == NULL ? NULL : PyDict_GetItemWithError(d->readers, key);
        Py_XDECREF(key);
        if (conn == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (conn != NULL && conn != Py_None && PyObject_TypeCheck(conn, &ConnCoreType)
            && ((ConnCore *)conn)->recv_direct && adopt_fd(u, fd, conn) == 0) {
            return 0; /* the multishot recv reads what made it readable */
        }
    }
    return dispatch(d, fd, ev);
}

static PyObject *base_serve;

PyDoc_STRVAR(serve_uring_doc,
"serve(loop, epfd, readers, handlers, tasks, timers, size, on_traffic)\n\n"
"EventLoop._serve with io_uring completions feeding the inlined read path (the io_uring experiment).");

static PyObject *
serve_uring(PyObject *module, PyObject *args)
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
    Uring u;
    if (uring_open(&u, epfd, d.size) < 0 || arm_epoll(&u) < 0) {
        int err = errno;
        uring_free(&u);
        PySys_WriteStderr("netloop: io_uring unavailable (%s): serving with epoll\n", strerror(err));
        return PyObject_Call(base_serve, args, NULL);
    }
    PyObject *dict = PyObject_GenericGetDict(d.loop, NULL);
    if (dict == NULL) {
        uring_free(&u);
        return NULL;
    }
    if (!PyDict_Check(dict)) {
        Py_CLEAR(dict);
    }
    Serving sv = {d.loop, dict, 0, 0, NULL, 0, 0.0, 0};
    if (refresh(&sv) < 0) {
        Py_XDECREF(dict);
        uring_free(&u);
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
        uring_free(&u);
        return PyErr_NoMemory();
    }
    sv.next = running_loops;
    running_loops = &sv;
    d.sv = &sv;
    Uring *outer = current;
    current = &u;
    PyObject *result = NULL;
    int epoll_due = 1; /* epoll may hold events the ring's poll has not announced (at the start; after a full batch) */
    uint64_t readers_seen = 0;
    for (;;) {
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
        if (!HAVE_DICT_VERSION || dict_version(d.readers) != readers_seen) {
            if (check_readers(&u, &d) < 0) {
                goto done;
            }
            readers_seen = dict_version(d.readers);
        }
        if (u.send_sqes) {
            for (int i = 0; i < u.nslots; i++) {
                if (u.slots[i].out_len) {
                    submit_out(&u, i);
                }
            }
        }
        if (loop_write(&sv, s_sleeping, Py_True) < 0) {
            goto done;
        }
        Py_ssize_t queued = PyObject_Length(tasks);
        if (queued < 0) {
            goto done;
        }
        if (queued || epoll_due) {
            timeout = 0;
        } else if (u.wait_cap_ms > 0 && (timeout < 0 || timeout > u.wait_cap_ms)) {
            timeout = u.wait_cap_ms;
        }
        unsigned head = *u.cq_head;
        int ready = atomic_load_explicit((_Atomic unsigned *)u.cq_tail, memory_order_acquire) != head;
        int n, err = 0;
        struct __kernel_timespec ts = {timeout / 1000, (long long)(timeout % 1000) * 1000000};
        struct io_uring_getevents_arg arg = {0, _NSIG / 8, 0, (uint64_t)(uintptr_t)&ts};
        unsigned wait = timeout && !ready ? 1 : 0;
        unsigned flags = IORING_ENTER_GETEVENTS | (wait && timeout > 0 ? IORING_ENTER_EXT_ARG : 0);
        void *argp = wait && timeout > 0 ? &arg : NULL;
        size_t argsz = wait && timeout > 0 ? sizeof(arg) : 0;
        if (wait) {
            Py_BEGIN_ALLOW_THREADS
            n = sys_enter(u.ring_fd, u.to_submit, 1 + u.inline_sends, flags, argp, argsz);
            err = errno;
            Py_END_ALLOW_THREADS
        } else {
            n = sys_enter(u.ring_fd, u.to_submit, 0, flags, NULL, 0);
            err = errno;
        }
        u.inline_sends = 0;
        if (n >= 0) {
            u.to_submit -= (unsigned)n < u.to_submit ? (unsigned)n : u.to_submit;
        }
        if (loop_write(&sv, s_sleeping, Py_False) < 0) {
            goto done;
        }
        if (n < 0 && err != EINTR && err != ETIME && err != EBUSY) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
        unsigned tail = atomic_load_explicit((_Atomic unsigned *)u.cq_tail, memory_order_acquire);
        while (head != tail) {
            struct io_uring_cqe cqe = u.cqes[head & *u.cq_mask];
            head++;
            atomic_store_explicit((_Atomic unsigned *)u.cq_head, head, memory_order_release);
            int kind = (int)(cqe.user_data & 0xff);
            int i = (int)((cqe.user_data >> 8) & 0xffffffff);
            uint32_t gen = (uint32_t)(cqe.user_data >> 40);
            if (kind == TAG_EPOLL) {
                epoll_due = 1;
                if (!(cqe.flags & IORING_CQE_F_MORE) && arm_epoll(&u) < 0) {
                    PyErr_SetString(PyExc_OSError, "io_uring: cannot re-arm the epoll poll");
                    goto done;
                }
                continue;
            }
            if (i >= u.nslots || (u.slots[i].gen & 0xffffff) != gen || u.slots[i].conn == NULL) {
                if (kind == TAG_RECV && cqe.res > 0 && (cqe.flags & IORING_CQE_F_BUFFER)) {
                    recycle(&u, cqe.flags >> IORING_CQE_BUFFER_SHIFT);
                }
                continue;
            }
            if (kind == TAG_RECV) {
                int fd = u.slots[i].fd;
                if (!HAVE_DICT_VERSION || dict_version(d.readers) != readers_seen) {
                    /* an earlier completion's handler closed or paused a connection: no bytes to it after that */
                    if (check_readers(&u, &d) < 0) {
                        goto done;
                    }
                    readers_seen = dict_version(d.readers);
                }
                if (on_recv(&u, &d, i, &cqe) < 0 && event_failed(d.loop, fd) < 0) {
                    goto done;
                }
            } else if (kind == TAG_SEND) {
                on_send(&u, i, &cqe);
            }
        }
        if (epoll_due) {
            n = epoll_wait(epfd, events, MAX_EVENTS, 0);
            if (n < 0 && errno != EINTR) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto done;
            }
            epoll_due = n > 0; /* level-triggered events come back on the next epoll_wait, not on the ring */
            for (int k = 0; k < n; k++) {
                if (!HAVE_DICT_VERSION || dict_version(d.readers) != readers_seen) {
                    if (check_readers(&u, &d) < 0) {
                        goto done;
                    }
                    readers_seen = dict_version(d.readers);
                }
                if (dispatch_epoll(&u, &d, events[k].data.fd, events[k].events) < 0
                    && event_failed(d.loop, events[k].data.fd) < 0) {
                    goto done;
                }
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
    current = outer;
    /* The ring's requests end with it; what was queued to send goes out first (NETLOOP_URING_SEND). */
    for (int i = 0; i < u.nslots; i++) {
        Slot *s = &u.slots[i];
        if (s->conn != NULL && s->out_len) {
            (send)(s->fd, s->out, s->out_len, MSG_NOSIGNAL);
        }
        if (s->active && ((ConnCore *)s->conn)->state != closed_state && set_interest(&u, s->fd, s->conn, 0) < 0) {
            PyErr_Clear();
        }
    }
    Py_XDECREF(dict);
    PyMem_Free(events);
    PyMem_Free(d.scratch);
    PyMem_Free(d.cache);
    uring_free(&u);
    return result;
}

static PyMethodDef uring_methods[] = {
    {"serve", serve_uring, METH_VARARGS, serve_uring_doc},
    {NULL, NULL, 0, NULL},
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m = base_init();
    if (m == NULL) {
        return NULL;
    }
    base_serve = PyObject_GetAttrString(m, "serve");
    if (base_serve == NULL || PyModule_AddObjectRef(m, "epoll_serve", base_serve) < 0
        || PyModule_AddFunctions(m, uring_methods) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
