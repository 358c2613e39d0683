/* echo_load: the benchmark's load generator for echo servers (one thread, epoll, IPv4, optionally TLS).
 *
 *   echo_load MODE HOST PORT [-c N] [-m BYTES] [-d SECONDS] [-b BYTES] [-s SOURCES] [-t]
 *
 *   pingpong  -c connections each send a -m byte message, wait for the whole echo, repeat for -d seconds;
 *             unit: round-trip
 *   churn     -c connections in flight, each: connect, one -m byte echo, close with RST; for -d seconds;
 *             unit: connection
 *   idle      open -c connections, one -m byte echo each, and keep them open; unit: connection
 *   bulk      one connection streams -b bytes through the echo, writing and reading at once; unit: byte
 *   -s        spread connections over the source addresses 127.0.0.1 .. 127.0.0.SOURCES
 *   -t        speak TLS (OpenSSL) on every connection: each one does a full handshake (no session resumption,
 *             no certificate check: the harness checks the server's certificate itself) before its first
 *             message; churn sends close_notify before the RST. Only in a build with -DWITH_TLS -lssl -lcrypto.
 *
 * The harness brackets the measured interval through stdio, so setup and teardown stay outside it:
 *   "ready N" (N connections set up) -> waits for a line on stdin -> measured phase ->
 *   "result UNITS ELAPSED_NS BYTES" -> waits for a line on stdin -> exits. End of input exits at any step.
 * Any failure prints a message on stderr and exits with status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_TLS
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define MAX_EVENTS 512

enum mode { PINGPONG, CHURN, IDLE, BULK };

struct conn {
    int fd;
    int connected;
    size_t sent;
    size_t got;
#ifdef WITH_TLS
    SSL *ssl; /* NULL on plaintext connections */
    int handshaken;
#endif
};

static struct sockaddr_in server;
static unsigned n_sources = 1;
static unsigned next_source;
static int epfd;
static char *message;
static size_t message_size = 64;
static char scratch[1 << 18];
static char sink[1 << 18];
#ifdef WITH_TLS
static SSL_CTX *tls; /* set by -t: every connection speaks TLS */
#endif

static void fail(const char *what)
{
    fprintf(stderr, "echo_load: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

#ifdef WITH_TLS
static void tls_setup(int idle)
{
    tls = SSL_CTX_new(TLS_client_method());
    if (!tls)
        fail("SSL_CTX_new");
    SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, NULL);
    /* no session is ever offered back: every connection costs the server a full handshake */
    SSL_CTX_set_session_cache_mode(tls, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* one recv(2) per arrival rather than one for each record header and one for its body: the load generator's
     * syscalls stay near the plaintext build's. Nothing is left buffered past a completed echo, since the server
     * sends no more than it was sent, and reads otherwise go on until OpenSSL wants the socket. */
    SSL_CTX_set_read_ahead(tls, 1);
    /* thousands of idle connections would otherwise hold two record buffers each in this process */
    if (idle)
        SSL_CTX_set_mode(tls, SSL_MODE_RELEASE_BUFFERS);
}

/* What a failed SSL call means: returns 0 when it waits for the socket, exits on anything else. */
static size_t tls_wait(SSL *ssl, int ret, const char *what)
{
    char reason[256];
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        errno = 0;
        fail("the server closed a connection (close_notify)");
        break;
    case SSL_ERROR_SYSCALL:
        if (!errno)
            fail("the server closed a connection");
        fail(what);
        break;
    default:
        ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
        fprintf(stderr, "echo_load: %s: %s\n", what, reason);
        exit(1);
    }
    return 0;
}
#endif

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The harness's cue to go on; end of input means it is done with us, wherever we are. */
static void wait_for_line(void)
{
    char line[64];
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) {
        if (ferror(stdin))
            fail("reading stdin");
        exit(0);
    }
}

static int open_socket(int linger_zero)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (linger_zero) {
        /* closing with RST leaves no TIME_WAIT behind, so churn never runs out of ports */
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    if (n_sources > 1) {
        struct sockaddr_in src = {0};
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + next_source++ % n_sources);
        /* pick the port at connect time, so each source address has its own port range */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
            fail("bind to a source address");
    }
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS)
        fail("connect");
    return fd;
}

static void conn_open(struct conn *c, int linger_zero)
{
    struct epoll_event ev;
    memset(c, 0, sizeof *c);
    c->fd = open_socket(linger_zero);
    /* edge-triggered: one registration per connection, never modified */
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        fail("epoll_ctl");
#ifdef WITH_TLS
    if (tls) {
        c->ssl = SSL_new(tls);
        if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
            fail("SSL_new");
        SSL_set_connect_state(c->ssl);
    }
#endif
}

static void conn_close(struct conn *c)
{
#ifdef WITH_TLS
    if (c->ssl) {
        /* our close_notify, as a polite client sends; the RST follows, so the server's is not awaited */
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        ERR_clear_error();
        c->ssl = NULL;
    }
#endif
    close(c->fd);
}

static void check_socket_error(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        errno = err;
        fail("connection");
    }
}

/* send(2) (or SSL_write) that returns 0 when the socket would block and exits on any error.
 * After a 0 the caller retries with the same bytes, as OpenSSL requires. */
static size_t send_some(struct conn *c, const char *buf, size_t len)
{
#ifdef WITH_TLS
    if (c->ssl) {
        int n;
        errno = 0;
        n = SSL_write(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
        return n > 0 ? (size_t)n : tls_wait(c->ssl, n, "SSL_write");
    }
#endif
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN)
            return 0;
        fail("send");
    }
    return (size_t)n;
}

/* recv(2) (or SSL_read) that returns 0 when nothing is waiting and exits on any error or on the server closing. */
static size_t recv_some(struct conn *c, char *buf, size_t len)
{
#ifdef WITH_TLS
    if (c->ssl) {
        int n;
        errno = 0;
        n = SSL_read(c->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
        return n > 0 ? (size_t)n : tls_wait(c->ssl, n, "SSL_read");
    }
#endif
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n == 0) {
        errno = 0;
        fail("the server closed a connection");
    }
    if (n < 0) {
        if (errno == EAGAIN)
            return 0;
        fail("recv");
    }
    return (size_t)n;
}

static int is_tls(const struct conn *c)
{
#ifdef WITH_TLS
    return c->ssl != NULL;
#else
    (void)c;
    return 0;
#endif
}

/* Moves one message exchange forward; returns 1 once the whole echo has come back. */
static int pump(struct conn *c)
{
    while (c->sent < message_size) {
        size_t n = send_some(c, message + c->sent, message_size - c->sent);
        if (!n)
            break;
        c->sent += n;
    }
    while (c->got < c->sent) {
        size_t want = c->sent - c->got < sizeof scratch ? c->sent - c->got : sizeof scratch;
        size_t n = recv_some(c, scratch, want);
        c->got += n;
        /* a short read drained the socket (edge-triggered epoll reports the next arrival); a short SSL_read
         * is one record, and more may wait, so TLS reads on until OpenSSL wants the socket */
        if (!n || (n < want && !is_tls(c)))
            break;
    }
    return c->got == message_size;
}

/* Moves the connect (and the TLS handshake) on; returns 1 once the connection can exchange messages. */
static int conn_ready(struct conn *c, uint32_t events)
{
    if (events & EPOLLERR)
        check_socket_error(c);
    if (!c->connected) {
        if (!(events & EPOLLOUT))
            return 0;
        check_socket_error(c);
        c->connected = 1;
    }
#ifdef WITH_TLS
    if (c->ssl && !c->handshaken) {
        int ret;
        errno = 0;
        ret = SSL_do_handshake(c->ssl);
        if (ret != 1)
            return (int)tls_wait(c->ssl, ret, "TLS handshake");
        c->handshaken = 1;
    }
#endif
    return 1;
}

/* Runs one event; returns 1 when the connection completed an exchange. */
static int on_event(struct conn *c, uint32_t events)
{
    return conn_ready(c, events) && pump(c);
}

static int wait_events(struct epoll_event *events)
{
    int n = epoll_wait(epfd, events, MAX_EVENTS, 1000);
    if (n < 0 && errno != EINTR)
        fail("epoll_wait");
    return n < 0 ? 0 : n;
}

static void report(uint64_t units, uint64_t elapsed_ns, uint64_t bytes)
{
    printf("result %llu %llu %llu\n", (unsigned long long)units, (unsigned long long)elapsed_ns,
           (unsigned long long)bytes);
    wait_for_line();
}

/* Moves c on after a completed exchange; returns 1 when c can start the next one at once. */
typedef int (*next_fn)(struct conn *c);

static int next_message(struct conn *c)
{
    c->sent = c->got = 0;
    return 1;
}

static int next_connection(struct conn *c)
{
    if (c->fd >= 0)
        conn_close(c);
    conn_open(c, 1);
    return 0;
}

/* Handles one event on c; the number of exchanges it completed. */
static uint64_t drive(struct conn *c, uint32_t events, next_fn next)
{
    uint64_t done = 0;
    while (on_event(c, events)) {
        done++;
        if (!next(c))
            break;
    }
    return done;
}

/* The measured phase: every connection exchanges messages until `seconds` have passed. */
static void measure(struct conn *conns, unsigned n_conns, double seconds, next_fn next)
{
    struct epoll_event events[MAX_EVENTS];
    uint64_t units = 0, start, deadline, now;

    start = now = now_ns();
    deadline = start + (uint64_t)(seconds * 1e9);
    for (unsigned i = 0; i < n_conns; i++)
        if (next(&conns[i]))
            units += drive(&conns[i], EPOLLOUT, next);
    while (now < deadline) {
        int n = wait_events(events);
        for (int i = 0; i < n; i++)
            units += drive(events[i].data.ptr, events[i].events, next);
        now = now_ns();
    }
    report(units, now - start, units * message_size);
}

static struct conn *alloc_conns(unsigned n)
{
    struct conn *conns = calloc(n, sizeof *conns);
    if (!conns)
        fail("calloc");
    for (unsigned i = 0; i < n; i++)
        conns[i].fd = -1;
    return conns;
}

static void run_pingpong(unsigned n_conns, double seconds)
{
    struct conn *conns = alloc_conns(n_conns);
    struct epoll_event events[MAX_EVENTS];
    unsigned warm = 0;

    for (unsigned i = 0; i < n_conns; i++)
        conn_open(&conns[i], 0);
    /* one exchange per connection before the clock starts: accepted, registered, warmed up */
    while (warm < n_conns) {
        int n = wait_events(events);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->got < message_size && on_event(c, events[i].events))
                warm++;
        }
    }
    printf("ready %u\n", n_conns);
    wait_for_line();
    measure(conns, n_conns, seconds, next_message);
}

static void run_churn(unsigned in_flight, double seconds)
{
    struct conn *conns = alloc_conns(in_flight);

    printf("ready %u\n", in_flight);
    wait_for_line();
    measure(conns, in_flight, seconds, next_connection);
}

static void run_idle(unsigned n_conns)
{
    /* a bounded window of handshakes in progress keeps the server's accept backlog from overflowing */
    const unsigned window = 64;
    struct conn *conns = alloc_conns(n_conns);
    struct epoll_event events[MAX_EVENTS];
    unsigned opened = 0, done = 0;

    while (done < n_conns) {
        while (opened < n_conns && opened - done < window)
            conn_open(&conns[opened++], 0);
        int n = wait_events(events);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->got == message_size) {
                /* an edge may come late for bytes already read; a byte more means the server spoke out of turn */
                if ((events[i].events & (EPOLLERR | EPOLLHUP)) ||
                    ((events[i].events & EPOLLIN) && recv_some(c, scratch, sizeof scratch))) {
                    errno = 0;
                    fail("the server sent on, or closed, an idle connection");
                }
                continue;
            }
            if (on_event(c, events[i].events))
                done++;
        }
    }
    printf("ready %u\n", n_conns);
    wait_for_line();
    report(n_conns, 0, 0);
}

static void run_bulk(uint64_t total)
{
    struct conn c;
    struct epoll_event events[MAX_EVENTS];
    uint64_t sent = 0, got = 0, start;

    for (size_t i = 0; i < sizeof scratch; i++)
        scratch[i] = (char)i;
    conn_open(&c, 0);
    for (int ready = 0; !ready;) {
        int n = wait_events(events);
        for (int i = 0; i < n; i++)
            ready = conn_ready(&c, events[i].events);
    }
    printf("ready 1\n");
    wait_for_line();

    start = now_ns();
    /* write and read in the same loop: a client that only wrote would deadlock against the echo */
    while (got < total) {
        while (sent < total) {
            size_t chunk = total - sent < sizeof scratch ? (size_t)(total - sent) : sizeof scratch;
            size_t n = send_some(&c, scratch, chunk);
            if (!n)
                break;
            sent += n;
        }
        for (;;) {
            size_t n = recv_some(&c, sink, sizeof sink);
            if (!n)
                break;
            got += n;
        }
        if (got > sent) {
            errno = 0;
            fail("the server sent more bytes than it was sent");
        }
        if (got < total)
            wait_events(events);
    }
    report(got, now_ns() - start, got);
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_load pingpong|churn|idle|bulk HOST PORT [-c N] [-m BYTES] [-d SECONDS] "
                    "[-b BYTES] [-s SOURCES] [-t]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    enum mode mode;
    unsigned conns = 64;
    double seconds = 5.0;
    uint64_t bulk_bytes = 1u << 30;
    int opt, use_tls = 0;

    if (argc < 4)
        usage();
    if (!strcmp(argv[1], "pingpong"))
        mode = PINGPONG;
    else if (!strcmp(argv[1], "churn"))
        mode = CHURN;
    else if (!strcmp(argv[1], "idle"))
        mode = IDLE;
    else if (!strcmp(argv[1], "bulk"))
        mode = BULK;
    else
        usage();
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &server.sin_addr) != 1)
        usage();
    optind = 4;
    while ((opt = getopt(argc, argv, "c:m:d:b:s:t")) != -1) {
        switch (opt) {
        case 'c': conns = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': message_size = strtoull(optarg, NULL, 10); break;
        case 'd': seconds = strtod(optarg, NULL); break;
        case 'b': bulk_bytes = strtoull(optarg, NULL, 10); break;
        case 's': n_sources = (unsigned)strtoul(optarg, NULL, 10); break;
        case 't': use_tls = 1; break;
        default: usage();
        }
    }
    if (!conns || !message_size || !n_sources || seconds <= 0 || !bulk_bytes)
        usage();
    message = malloc(message_size);
    if (!message)
        fail("malloc");
    memset(message, 'x', message_size);
    if (use_tls) {
#ifdef WITH_TLS
        tls_setup(mode == IDLE);
#else
        fprintf(stderr, "echo_load: -t needs a build with -DWITH_TLS -lssl -lcrypto\n");
        exit(2);
#endif
    }
    raise_fd_limit();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        fail("epoll_create1");

    switch (mode) {
    case PINGPONG: run_pingpong(conns, seconds); break;
    case CHURN: run_churn(conns, seconds); break;
    case IDLE: run_idle(conns); break;
    case BULK: run_bulk(bulk_bytes); break;
    }
    return 0;
}
