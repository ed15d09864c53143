/* distrcomp-node: the per-node wrapper of `distrcomp run`, compiled.
 *
 * The same program as distrcomp/launcher/node.py (read its docstring first: the three
 * processes stub -> relay -> COMMAND, what each is for, the exit status), for jobs whose nodes
 * are all on the launcher's machine (a `unix:` launcher address). A Python wrapper costs a
 * Python start-up and its imports on every node before the node's own program can start; this
 * one starts in well under a millisecond. Where it is not built (no C compiler at install) or
 * DISTRCOMP_PURE_PYTHON is set, or the nodes are on other machines, the launcher runs node.py.
 *
 * The channel protocol (authentication, frames) is that of distrcomp/launcher/channel.py;
 * HMAC-SHA256 is implemented here so that the program needs nothing but libc.
 *
 *   distrcomp-node -- COMMAND [ARGS...]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* channel.py */
#define ENV_ADDRESS "DISTRCOMP_RELAY"
#define ENV_SECRET "DISTRCOMP_RELAY_SECRET"
#define ENV_WORKDIR "DISTRCOMP_WORKDIR"
#define ENV_SLOTS "DISTRCOMP_WORKDIR_SLOTS"
#define ENV_JOB "DISTRCOMP_JOB"
#define ENV_NODE "DISTRCOMP_NODE"
#define UNIX_PREFIX "unix:"
enum { CONTROL = 0, OUT = 1, ERR = 2, EXIT = 4, STREAMS = 5, STOP = 10, DUMP = 11, BYE = 12 };
#define MAGIC "DCR1"
#define NONCE 32
#define MAC 32
#define WHO 5 /* node id (u32, big-endian), stream (u8) */
#define HEADER 5 /* frame: kind (u8), length (u32, big-endian) */
#define MAX_FRAME (8u << 20)
#define CONNECT_TIMEOUT 30 /* seconds, as channel.connect */

/* channel.py */
#define STOP_GRACE 3.0
/* node.py */
#define TICK_MS 100
static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP};
#define N_FORWARDED 3

/* ---- SHA-256 and HMAC (FIPS 180-4, RFC 2104) ------------------------------------------ */

typedef struct {
    uint32_t h[8];
    uint64_t length;
    uint8_t block[64];
    size_t used;
} sha256_t;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_compress(sha256_t *s, const uint8_t *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8
             | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(sha256_t *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->length = 0;
    s->used = 0;
}

static void sha256_update(sha256_t *s, const uint8_t *p, size_t n)
{
    s->length += n;
    while (n) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take, p += take, n -= take;
        if (s->used == 64) {
            sha256_compress(s, s->block);
            s->used = 0;
        }
    }
}

static void sha256_final(sha256_t *s, uint8_t out[32])
{
    uint64_t bits = s->length * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    sha256_update(s, &pad, 1);
    while (s->used != 56)
        sha256_update(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24), out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8), out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

static void hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *msg, size_t n, uint8_t out[32])
{
    uint8_t k[64] = {0}, pad[64], inner[32];
    sha256_t s;
    if (keylen > 64) {
        sha256_init(&s);
        sha256_update(&s, key, keylen);
        sha256_final(&s, k);
    } else {
        memcpy(k, key, keylen);
    }
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    sha256_init(&s);
    sha256_update(&s, pad, 64);
    sha256_update(&s, msg, n);
    sha256_final(&s, inner);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    sha256_init(&s);
    sha256_update(&s, pad, 64);
    sha256_update(&s, inner, 32);
    sha256_final(&s, out);
}

/* ---- small helpers ---------------------------------------------------------------------- */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void close_all(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static int digits(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* A descriptor of our own, never 0, 1 or 2 (those become the command's), close-on-exec. */
static int high_fd(int fd)
{
    if (fd > 2 || fd < 0)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int saved = errno;
    close(fd);
    errno = saved;
    return moved;
}

static void random_bytes(uint8_t *out, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    while (fd >= 0 && got < n) {
        ssize_t k = read(fd, out + got, n - got);
        if (k <= 0 && errno != EINTR)
            break;
        if (k > 0)
            got += (size_t)k;
    }
    if (fd >= 0)
        close(fd);
    if (got < n) {
        fputs("distrcomp node: cannot read /dev/urandom\n", stderr);
        _exit(1);
    }
}

/* ---- the process table (procs.py) ------------------------------------------------------- */

#define STAT_SIZE 2048 /* 52 numbers and a name of at most 64 bytes fit */

/* /proc/PID/stat read into `data` (STAT_SIZE bytes); a pointer to the ')' that ends the
 * command name (which may hold spaces and parens), so that field 3 follows it; NULL if the
 * file cannot be read. */
static char *read_stat(pid_t pid, char *data)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, data, STAT_SIZE - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    data[n] = 0;
    return strrchr(data, ')');
}

/* State and process group of `pid` from /proc/PID/stat; 0 if it cannot be read. */
static int stat_of(pid_t pid, char *state, long *pgrp)
{
    char data[STAT_SIZE];
    char *paren = read_stat(pid, data);
    return paren && sscanf(paren + 1, " %c %*d %ld", state, pgrp) == 2;
}

/* The next entry of `dir` whose name is a number (a pid, a descriptor), as that number; -1 at
 * the end. */
static long next_number(DIR *dir)
{
    struct dirent *entry;
    while ((entry = readdir(dir)))
        if (digits(entry->d_name))
            return atol(entry->d_name);
    return -1;
}

/* Live (non-zombie) processes other than `ex1` and `ex2` that `keep` accepts (given the pid,
 * its process group and `arg`): how many, at most `max`; their pids into `out` unless NULL. */
static int scan(pid_t ex1, pid_t ex2, int (*keep)(pid_t, long, const void *), const void *arg,
                pid_t *out, int max)
{
    DIR *dir = opendir("/proc");
    int n = 0;
    if (!dir)
        return 0;
    for (long number; n < max && (number = next_number(dir)) >= 0;) {
        pid_t pid = (pid_t)number;
        char state;
        long pgrp;
        if (pid == ex1 || pid == ex2 || !stat_of(pid, &state, &pgrp) || state == 'Z')
            continue;
        if (keep(pid, pgrp, arg)) {
            if (out)
                out[n] = pid;
            n++;
        }
    }
    closedir(dir);
    return n;
}

static int in_group(pid_t pid, long pgrp, const void *pgid)
{
    (void)pid;
    return pgrp == (long)*(const pid_t *)pgid;
}

/* Live processes of group `pgid`, except `ex1` and `ex2`; at most `max`. */
static int group_members(pid_t pgid, pid_t ex1, pid_t ex2, pid_t *out, int max)
{
    return scan(ex1, ex2, in_group, &pgid, out, max);
}

/* True if `pid` has a handler installed for `signum` (SigCgt of /proc/PID/status). */
static int catches(pid_t pid, int signum)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    int found = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "SigCgt:", 7) == 0) {
            unsigned long long mask = strtoull(line + 7, NULL, 16);
            found = (int)(mask >> (signum - 1) & 1);
            break;
        }
    }
    fclose(f);
    return found;
}

/* ---- the channel (channel.py, node side) -------------------------------------------------- */

static char failure[512]; /* why the last channel call failed */

static void fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(failure, sizeof failure, format, args);
    va_end(args);
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

static int recv_exactly(int fd, uint8_t *p, size_t n, const char *address)
{
    while (n) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0) {
            fail("the launcher closed the connection during the handshake");
            return -1;
        }
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                fail("handshake with the launcher at %s failed: timed out", address);
            else
                fail("handshake with the launcher at %s failed: [Errno %d] %s", address, errno, strerror(errno));
            return -1;
        }
        p += k, n -= (size_t)k;
    }
    return 0;
}

static void proof(const uint8_t *key, size_t keylen, const char *role, const uint8_t *launcher_nonce,
                  const uint8_t *node_nonce, const uint8_t *who, uint8_t out[MAC])
{
    uint8_t message[8 + 2 * NONCE + WHO];
    size_t n = strlen(role);
    memcpy(message, role, n);
    memcpy(message + n, launcher_nonce, NONCE);
    memcpy(message + n + NONCE, node_nonce, NONCE);
    memcpy(message + n + 2 * NONCE, who, WHO);
    hmac_sha256(key, keylen, message, n + 2 * NONCE + WHO, out);
}

static void set_timeout(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* channel.connect for a `unix:PATH` address: the authenticated socket, or -1 (see `failure`). */
static int channel_connect(const char *address, const uint8_t *key, size_t keylen, int node, int stream)
{
    struct sockaddr_un where = {.sun_family = AF_UNIX};
    const char *path = address + strlen(UNIX_PREFIX);
    if (strncmp(address, UNIX_PREFIX, strlen(UNIX_PREFIX)) != 0 || strlen(path) >= sizeof where.sun_path) {
        fail("the compiled node wrapper connects only to a unix: launcher address, got %s", address);
        return -1;
    }
    strcpy(where.sun_path, path);
    int fd = high_fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd < 0 || connect(fd, (struct sockaddr *)&where, sizeof where) < 0) {
        fail("cannot connect to the launcher at %s: [Errno %d] %s", address, errno, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    set_timeout(fd, CONNECT_TIMEOUT);
    uint8_t greeting[4 + NONCE], hello[WHO + NONCE + MAC], reply[MAC], expected[MAC];
    uint8_t *who = hello, *node_nonce = hello + WHO;
    if (recv_exactly(fd, greeting, sizeof greeting, address) < 0)
        goto failed;
    if (memcmp(greeting, MAGIC, 4) != 0) {
        fail("%s is not a distrcomp launcher", address);
        goto failed;
    }
    put_u32(who, (uint32_t)node);
    who[4] = (uint8_t)stream;
    random_bytes(node_nonce, NONCE);
    proof(key, keylen, "node", greeting + 4, node_nonce, who, hello + WHO + NONCE);
    if (send_all(fd, hello, sizeof hello) < 0) {
        fail("handshake with the launcher at %s failed: [Errno %d] %s", address, errno, strerror(errno));
        goto failed;
    }
    if (recv_exactly(fd, reply, sizeof reply, address) < 0)
        goto failed;
    proof(key, keylen, "launcher", greeting + 4, node_nonce, who, expected);
    uint8_t differ = 0; /* compared in constant time, as hmac.compare_digest */
    for (int i = 0; i < MAC; i++)
        differ |= reply[i] ^ expected[i];
    if (differ) {
        fail("the listener at %s does not know the job secret", address);
        goto failed;
    }
    set_timeout(fd, 0);
    return fd;
failed:
    close(fd);
    return -1;
}

static int send_frame(int fd, int kind, const void *payload, uint32_t n)
{
    uint8_t *frame = malloc(HEADER + n);
    if (!frame)
        return -1;
    frame[0] = (uint8_t)kind;
    put_u32(frame + 1, n);
    if (n)
        memcpy(frame + HEADER, payload, n);
    int result = send_all(fd, frame, HEADER + n);
    free(frame);
    return result;
}

/* Cuts the launcher's byte stream into frames (channel.FrameReader). */
typedef struct {
    uint8_t *data;
    size_t used, size;
} frames_t;

/* Add received bytes; -1 for a frame over MAX_FRAME (a broken channel). */
static int frames_feed(frames_t *f, const uint8_t *p, size_t n)
{
    if (f->used + n > f->size) {
        size_t size = (f->used + n) * 2;
        uint8_t *data = realloc(f->data, size);
        if (!data)
            return -1;
        f->data = data, f->size = size;
    }
    memcpy(f->data + f->used, p, n);
    f->used += n;
    return f->used >= HEADER && get_u32(f->data + 1) > MAX_FRAME ? -1 : 0;
}

/* The next complete frame: its kind, payload and length; 0 if none is complete yet. */
static int frames_next(frames_t *f, size_t *start, int *kind, const uint8_t **payload, uint32_t *n)
{
    if (f->used - *start < HEADER)
        return 0;
    uint32_t length = get_u32(f->data + *start + 1);
    if (f->used - *start - HEADER < length)
        return 0;
    *kind = f->data[*start], *payload = f->data + *start + HEADER, *n = length;
    *start += HEADER + length;
    return 1;
}

static void frames_consume(frames_t *f, size_t start)
{
    memmove(f->data, f->data + start, f->used - start);
    f->used -= start;
}

/* ---- the relay ------------------------------------------------------------------------ */

static int node_id;
static pid_t stub_pid;
static int control = -1; /* the launcher connection */
static int launcher_gone;
static pid_t child = -1; /* the command, until reaped */
static pid_t group;
static int shares_stub_group;
static double kill_at = -1;
static int wake_r = -1, wake_w = -1;
static volatile sig_atomic_t pending[N_FORWARDED];

static void on_signal(int signum)
{
    int saved = errno;
    for (int i = 0; i < N_FORWARDED; i++)
        if (forwarded[i] == signum)
            pending[i]++;
    ssize_t ignored = write(wake_w, "", 1); /* wakes the loop; a full pipe is awake already */
    (void)ignored;
    errno = saved;
}

static void to_launcher(int kind, const void *payload, uint32_t n)
{
    if (launcher_gone || control < 0)
        return;
    if (send_frame(control, kind, payload, n) < 0)
        launcher_gone = 1;
}

static int members(pid_t *out, int max)
{
    int n = group_members(group, stub_pid, getpid(), out, max);
    if (child > 0 && n < max) {
        int listed = 0;
        for (int i = 0; i < n; i++)
            listed |= out[i] == child;
        if (!listed)
            out[n++] = child;
    }
    return n;
}

#define MAX_MEMBERS 4096

/* The command's mark (channel.ENV_NODE) as an environment entry: "DISTRCOMP_NODE=<job>.<node>". */
static char mark[192];

/* The environment `pid` started with (/proc/PID/environ), as a malloc'd buffer of `*size` bytes;
 * NULL if it cannot be read. */
static char *environment(pid_t pid, size_t *size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 1 << 14;
    char *data = malloc(cap);
    *size = 0;
    for (ssize_t n = 1; data && n > 0;) {
        if (*size == cap) {
            char *more = cap < (64u << 20) ? realloc(data, cap * 2) : NULL;
            if (!more)
                break; /* keep what was read */
            data = more, cap *= 2;
        }
        n = read(fd, data + *size, cap - *size);
        if (n > 0)
            *size += (size_t)n;
    }
    close(fd);
    return data;
}

#define EXEC_RETRIES 20 /* 1 ms apart: how long a process may show no environment */
#define EMPTY_LOOKS 2 /* looks at an unchanged, empty environment in place: empty for good */
#define PF_EXITING 0x00000004 /* task flags, from the kernel's include/linux/sched.h */
#define PF_KTHREAD 0x00200000

/* Where `pid`'s environment lies (env_start and env_end, fields 50 and 51 of /proc/PID/stat,
 * into *start and *end; 0 and 0 before Linux 3.5, which shows neither): 1, or 0 when there is
 * no environment to wait for: the process is gone, exiting (a zombie too) or a kernel thread
 * (procs.py: _environment_place). */
static int environment_place(pid_t pid, unsigned long *start, unsigned long *end)
{
    char data[STAT_SIZE];
    char *at = read_stat(pid, data);
    if (!at)
        return 0;
    unsigned long flags = 0;
    *start = *end = 0;
    for (int field = 3; field <= 51 && (at = strchr(at + 1, ' ')); field++) {
        if (field == 9)
            flags = strtoul(at + 1, NULL, 10);
        else if (field == 50)
            *start = strtoul(at + 1, NULL, 10);
        else if (field == 51)
            *end = strtoul(at + 1, NULL, 10);
    }
    return !(flags & (PF_EXITING | PF_KTHREAD));
}

/* True if the environment `pid` started with holds the entry `mark`. A process in the middle
 * of an exec shows an empty environment for a moment: its new program's memory is in place and
 * its environment not yet (env_end still 0), then is being written (env_start equals env_end
 * for a few microseconds). So an empty environment is read again, 1 ms apart, up to
 * EXEC_RETRIES times, unless environment_place() says there is none to wait for, or it is in
 * place, empty and unchanged EMPTY_LOOKS looks in a row (`env -i`: empty for good) (procs.py:
 * _carries). */
static int carries_mark(pid_t pid)
{
    size_t size = 0;
    char *data = NULL;
    unsigned long last_start = 0, last_end = 0;
    int unchanged = 0;
    for (int attempt = 0; attempt <= EXEC_RETRIES; attempt++) {
        free(data);
        data = environment(pid, &size);
        unsigned long start, end;
        if (!data || size > 0 || !environment_place(pid, &start, &end))
            break;
        int empty_in_place = end != 0 && start == end;
        unchanged = empty_in_place && start == last_start && end == last_end ? unchanged + 1 : 0;
        if (unchanged >= EMPTY_LOOKS || attempt == EXEC_RETRIES)
            break;
        last_start = start, last_end = end;
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    int found = 0;
    size_t length = strlen(mark) + 1; /* with the NUL that ends every entry */
    for (size_t at = 0; data && !found && at < size;) {
        char *end = memchr(data + at, 0, size - at);
        size_t entry = end ? (size_t)(end - data) - at + 1 : size - at;
        found = entry == length && memcmp(data + at, mark, length) == 0;
        at += entry;
    }
    free(data);
    return found;
}

/* A process outside the command's process group that carries its mark: a setsid child, a
 * daemon. */
static int is_stray(pid_t pid, long pgrp, const void *unused)
{
    (void)unused;
    /* group 0: a kernel thread, never an environment */
    return pgrp != 0 && pgrp != (long)group && pid != child && mark[0] && carries_mark(pid);
}

/* A process the command left running: in its group, or carrying its mark. */
static int is_leftover(pid_t pid, long pgrp, const void *unused)
{
    return pgrp == (long)group || pid == child || is_stray(pid, pgrp, unused);
}

/* The strays, except the stub and this relay; at most `max`. */
static int strays(pid_t *out, int max)
{
    return scan(stub_pid, getpid(), is_stray, NULL, out, max);
}

static void signal_group(int signum)
{
    if (!shares_stub_group) {
        killpg(group, signum);
        return;
    }
    /* The group holds the stub too, which must survive to report to MPI: one by one. */
    pid_t pids[MAX_MEMBERS];
    int n = members(pids, MAX_MEMBERS);
    for (int i = 0; i < n; i++)
        kill(pids[i], signum);
}

static void stop(int signum)
{
    if (child <= 0)
        return;
    signal_group(signum);
    if (kill_at < 0)
        kill_at = now() + STOP_GRACE;
}

static void dump(void)
{
    pid_t pids[MAX_MEMBERS];
    int n = members(pids, MAX_MEMBERS);
    for (int i = 0; i < n; i++)
        if (catches(pids[i], SIGUSR1))
            kill(pids[i], SIGUSR1);
}

static void drain_wake(void)
{
    char sink[512];
    while (read(wake_r, sink, sizeof sink) > 0)
        ;
}

static int take_pending(void)
{
    sigset_t all, old;
    int signum = 0;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < N_FORWARDED && !signum; i++)
        if (pending[i] > 0) {
            pending[i]--;
            signum = forwarded[i];
        }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return signum;
}

static int any_pending(void)
{
    for (int i = 0; i < N_FORWARDED; i++)
        if (pending[i] > 0)
            return 1;
    return 0;
}

static void launcher_lost(void)
{
    launcher_gone = 1;
    stop(SIGTERM);
}

/* Read what the launcher sent and obey it (node.py: _Relay._obey). */
static void obey(frames_t *frames)
{
    uint8_t data[1 << 16];
    ssize_t n = recv(control, data, sizeof data, 0);
    if (n < 0 && errno == EINTR)
        return;
    if (n <= 0 || frames_feed(frames, data, (size_t)n) < 0) {
        launcher_lost();
        return;
    }
    size_t start = 0;
    int kind;
    const uint8_t *payload;
    uint32_t length;
    while (frames_next(frames, &start, &kind, &payload, &length)) {
        if (kind == STOP)
            stop(length ? payload[0] : SIGTERM);
        else if (kind == DUMP)
            dump();
    }
    frames_consume(frames, start);
}

/* Obey the launcher until the command exits; its status as Popen's returncode (-N: signal N). */
static int supervise(void)
{
    frames_t frames = {0};
    int stub_gone = 0, returncode = 0;
    for (;;) {
        int status;
        if (waitpid(child, &status, WNOHANG) == child) {
            returncode = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
            child = -1;
            break;
        }
        struct pollfd fds[2] = {{wake_r, POLLIN, 0}, {control, POLLIN, 0}};
        int nfds = launcher_gone ? 1 : 2;
        if (poll(fds, (nfds_t)nfds, TICK_MS) > 0) {
            if (nfds == 2 && fds[1].revents)
                obey(&frames);
            if (fds[0].revents)
                drain_wake();
        }
        for (int signum; (signum = take_pending());)
            stop(signum);
        if (!stub_gone && getppid() != stub_pid) {
            /* The stub is gone (killed with the node's process group, or alone): stop. */
            stub_gone = 1;
            stop(SIGTERM);
        }
        if (kill_at >= 0 && now() >= kill_at) {
            signal_group(SIGKILL);
            kill_at = -1;
        }
    }
    free(frames.data);
    return returncode;
}

/* Stop what the command left running (SIGTERM, SIGKILL after a second): its process group,
 * and the processes carrying its mark that left the group, which may hold MPI's descriptors
 * (MPICH's proxy then waits for them, and the job with it) (node.py: _reap_leftovers). */
static void signal_leftovers(int signum)
{
    pid_t pids[MAX_MEMBERS];
    signal_group(signum);
    int n = strays(pids, MAX_MEMBERS);
    for (int i = 0; i < n; i++)
        kill(pids[i], signum);
}

/* Whether the command left anything running: one pass over the process table (the end of
 * every node waits for it), where members() and strays() would make two. */
static int any_leftover(void)
{
    return scan(stub_pid, getpid(), is_leftover, NULL, NULL, 1) > 0;
}

static void reap_leftovers(void)
{
    if (!any_leftover())
        return;
    signal_leftovers(SIGTERM);
    double deadline = now() + 1.0;
    while (any_leftover() && now() < deadline) {
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    signal_leftovers(SIGKILL);
}

/* Wait for BYE (the launcher has everything it needs from every node) or its absence. */
static void await_goodbye(void)
{
    frames_t frames = {0};
    while (!launcher_gone && !any_pending()) {
        struct pollfd fds[2] = {{wake_r, POLLIN, 0}, {control, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents)
            drain_wake();
        if (!fds[1].revents)
            continue;
        uint8_t data[1 << 12];
        ssize_t n = recv(control, data, sizeof data, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || frames_feed(&frames, data, (size_t)n) < 0)
            break;
        size_t start = 0;
        int kind, bye = 0;
        const uint8_t *payload;
        uint32_t length;
        while (frames_next(&frames, &start, &kind, &payload, &length))
            bye |= kind == BYE;
        frames_consume(&frames, start);
        if (bye)
            break;
    }
    free(frames.data);
}

/* The command's stdout and stderr: pipes whose read ends go to the launcher (STREAMS). */
static int open_streams(int streams[2])
{
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(err, O_CLOEXEC) < 0) {
        close_all(out, 2);
        return -1;
    }
    int ends[4] = {out[0], out[1], err[0], err[1]};
    for (int i = 0; i < 4; i++)
        ends[i] = high_fd(ends[i]);
    for (int i = 0; i < 4; i++)
        if (ends[i] < 0) {
            for (int j = 0; j < 4; j++)
                if (ends[j] >= 0)
                    close(ends[j]);
            return -1;
        }
    fcntl(ends[1], F_SETPIPE_SZ, 1 << 20); /* best effort, as pipesize.widen */
    fcntl(ends[3], F_SETPIPE_SZ, 1 << 20);

    uint8_t frame[HEADER] = {STREAMS, 0, 0, 0, 0};
    struct iovec iov = {frame, HEADER};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(2 * sizeof(int))];
    } control_data;
    memset(&control_data, 0, sizeof control_data);
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = control_data.space, .msg_controllen = sizeof control_data.space};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
    cmsg->cmsg_level = SOL_SOCKET, cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int read_ends[2] = {ends[0], ends[2]};
    memcpy(CMSG_DATA(cmsg), read_ends, sizeof read_ends);
    ssize_t sent;
    do
        sent = sendmsg(control, &message, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    int saved = errno;
    close(ends[0]), close(ends[2]);
    if (sent != HEADER) {
        close(ends[1]), close(ends[3]);
        errno = sent < 0 ? saved : EPIPE;
        return -1;
    }
    streams[0] = ends[1], streams[1] = ends[3];
    return 0;
}

/* The staged working directory of this node's host (--files) into `out`; 0 if none, 1 if
 * found, -1 with the reason in `failure` if it cannot be. */
static int workdir(char *out, size_t size)
{
    const char *base = getenv(ENV_WORKDIR), *slots = getenv(ENV_SLOTS);
    if (!base || !*base)
        return 0;
    const char *p = slots ? slots : "";
    long first = 0;
    for (int index = 0;; index++) {
        char *end;
        errno = 0;
        long count = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ',')) {
            fail("malformed %s=%s", ENV_SLOTS, slots ? slots : "");
            return -1;
        }
        first += count;
        if (node_id < first) {
            snprintf(out, size, "%s/%d", base, index);
            struct stat st;
            if (stat(out, &st) < 0 || !S_ISDIR(st.st_mode)) {
                fail("its working directory %s is missing on this host", out);
                return -1;
            }
            return 1;
        }
        if (!*end)
            break;
        p = end + 1;
    }
    fail("node %d is beyond the %ld slots of %s=%s", node_id, first, ENV_SLOTS, slots);
    return -1;
}

static void say(const char *format, ...)
{
    char text[1024];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(text, sizeof text, format, args);
    va_end(args);
    to_launcher(ERR, text, (uint32_t)(n < (int)sizeof text ? n : (int)sizeof text - 1));
}

/* Start the command; 0, or the exit status to report (127) if it could not be started. */
static int start(char **command, const int streams[2], const int *inherited, int n_inherited)
{
    char cwd[4096];
    int has_cwd = workdir(cwd, sizeof cwd);
    if (has_cwd < 0) {
        say("distrcomp: node %d: %s\n", node_id, failure);
        close_all(inherited, n_inherited);
        return 127;
    }
    pid_t pgid = shares_stub_group ? stub_pid : 0;
    int report[2]; /* the child writes errno here if it cannot exec */
    if (pipe2(report, O_CLOEXEC) < 0) {
        say("distrcomp: cannot run '%s': %s\n", command[0], strerror(errno));
        close_all(inherited, n_inherited);
        return 127;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int error = 0;
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigset_t none;
        for (int i = 0; i < N_FORWARDED; i++)
            sigaction(forwarded[i], &dfl, NULL);
        sigaction(SIGCHLD, &dfl, NULL);
        sigaction(SIGPIPE, &dfl, NULL);
        sigaction(SIGXFSZ, &dfl, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (setpgid(0, pgid) < 0)
            error = errno;
        if (!error && node_id != 0) {
            /* Input goes to node 0 only (as MPI forwards it); the others read an empty stdin. */
            int null = open("/dev/null", O_RDONLY);
            if (null < 0 || (null != 0 && dup2(null, 0) < 0))
                error = errno;
            if (null > 0)
                close(null);
        }
        if (!error && (dup2(streams[0], 1) < 0 || dup2(streams[1], 2) < 0))
            error = errno;
        if (!error && has_cwd && chdir(cwd) < 0)
            error = errno;
        if (!error && mark[0] && putenv(mark) != 0)
            error = errno;
        if (!error) {
            execvp(command[0], command);
            error = errno;
        }
        ssize_t ignored = write(report[1], &error, sizeof error);
        (void)ignored;
        _exit(255);
    }
    int saved = errno;
    close(report[1]);
    close_all(inherited, n_inherited);
    if (pid < 0) {
        close(report[0]);
        say("distrcomp: cannot run '%s': %s\n", command[0], strerror(saved));
        return 127;
    }
    int error = 0;
    ssize_t n;
    do
        n = read(report[0], &error, sizeof error);
    while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof error) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        say("distrcomp: cannot run '%s': %s\n", command[0], strerror(error));
        return 127;
    }
    child = pid;
    group = pgid ? pgid : pid;
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Connect, run the command to its end, report it; the exit status to mirror. */
static int relay(const char *address, const char *secret, char **command, const int *inherited,
                 int n_inherited)
{
    uint8_t key[256];
    size_t keylen = strlen(secret) / 2;
    if (strlen(secret) % 2 || keylen > sizeof key) {
        fprintf(stderr, "distrcomp node %d: %s is not a hex secret\n", node_id, ENV_SECRET);
        close_all(inherited, n_inherited);
        return 1;
    }
    for (size_t i = 0; i < keylen; i++) {
        int high = hex_value(secret[2 * i]), low = hex_value(secret[2 * i + 1]);
        if (high < 0 || low < 0) {
            fprintf(stderr, "distrcomp node %d: %s is not a hex secret\n", node_id, ENV_SECRET);
            close_all(inherited, n_inherited);
            return 1;
        }
        key[i] = (uint8_t)(high << 4 | low);
    }
    int streams[2];
    control = channel_connect(address, key, keylen, node_id, CONTROL);
    if (control >= 0 && open_streams(streams) < 0) {
        fail("[Errno %d] %s", errno, strerror(errno));
        close(control);
        control = -1;
    }
    if (control < 0) {
        fprintf(stderr, "distrcomp node %d: %s\n", node_id, failure);
        close_all(inherited, n_inherited);
        return 1;
    }
    int wake[2];
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "distrcomp node %d: [Errno %d] %s\n", node_id, errno, strerror(errno));
        close_all(inherited, n_inherited);
        return 1;
    }
    wake_r = high_fd(wake[0]), wake_w = high_fd(wake[1]);
    struct sigaction handler = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&handler.sa_mask);
    for (int i = 0; i < N_FORWARDED; i++)
        sigaction(forwarded[i], &handler, NULL);
    /* A handler, so that the command's exit wakes the loop through the wake-up pipe. */
    sigaction(SIGCHLD, &handler, NULL);
    /* Under MPICH the stub leads its own process group, which MPI kills on abort: the command
     * joins it. Otherwise (Open MPI) the command gets a process group of its own. */
    shares_stub_group = getpgid(stub_pid) == stub_pid;

    const char *job = getenv(ENV_JOB);
    if (job && *job)
        snprintf(mark, sizeof mark, "%s=%.128s.%d", ENV_NODE, job, node_id);
    else
        snprintf(mark, sizeof mark, "%s=%d.%d", ENV_NODE, (int)getpid(), node_id);
    int returncode = start(command, streams, inherited, n_inherited);
    /* The command has its own copies: the launcher sees the end of each stream when the
     * command (and whatever it started) has closed them. */
    close_all(streams, 2);
    if (child > 0) {
        returncode = supervise();
        reap_leftovers();
    }
    char report[64];
    int n = snprintf(report, sizeof report, "{\"returncode\": %d}", returncode);
    to_launcher(EXIT, report, (uint32_t)n);
    await_goodbye();
    close(control);
    return returncode < 0 ? 128 - returncode : returncode & 0xFF;
}

/* ---- the stub ------------------------------------------------------------------------- */

static volatile pid_t relay_pid;

static void forward(int signum)
{
    int saved = errno;
    kill(relay_pid, signum);
    errno = saved;
}

/* The process MPI started: forwards termination signals to the relay, waits, mirrors its
 * status. It keeps its copies of MPI's descriptors open until the end (see node.py). */
static int stub(void)
{
    struct sigaction handler = {.sa_handler = forward, .sa_flags = SA_RESTART};
    sigemptyset(&handler.sa_mask);
    for (int i = 0; i < N_FORWARDED; i++)
        sigaction(forwarded[i], &handler, NULL);
    int status;
    while (waitpid(relay_pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    if (WIFSIGNALED(status)) {
        /* The relay was killed: nobody will stop the command, so do it here. */
        pid_t pids[MAX_MEMBERS];
        int n = group_members(getpgrp(), getpid(), getpid(), pids, MAX_MEMBERS);
        for (int i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

/* Inheritable descriptors above stderr: those this process got from mpiexec. */
static int open_fds(int *out, int max)
{
    DIR *dir = opendir("/proc/self/fd");
    int n = 0;
    if (!dir)
        return 0;
    for (long number; n < max && (number = next_number(dir)) >= 0;) {
        int fd = (int)number;
        if (fd <= 2 || fd == dirfd(dir))
            continue;
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC))
            out[n++] = fd;
    }
    closedir(dir);
    return n;
}

static int rank(void)
{
    static const char *names[] = {"PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"};
    for (int i = 0; i < 3; i++) {
        const char *value = getenv(names[i]);
        if (digits(value))
            return atoi(value);
    }
    return -1;
}

int main(int argc, char **argv)
{
    char **command = argv + 1;
    if (argc > 1 && strcmp(argv[1], "--") == 0)
        command++;
    if (!*command) {
        fputs("usage: distrcomp-node -- COMMAND [ARGS...]\n", stderr);
        return 2;
    }
    const char *names[] = {ENV_ADDRESS, ENV_SECRET};
    char *values[2];
    for (int i = 0; i < 2; i++) {
        const char *value = getenv(names[i]);
        if (!value) {
            fprintf(stderr, "distrcomp node: %s is not set; start nodes with distrcomp run\n", names[i]);
            return 2;
        }
        values[i] = strdup(value);
        unsetenv(names[i]); /* the command never sees the secret */
    }
    node_id = rank();
    if (node_id < 0) {
        fputs("distrcomp node: none of PMI_RANK, OMPI_COMM_WORLD_RANK, PMIX_RANK is set\n", stderr);
        return 2;
    }
    /* As Python does (node.py): a closed stderr or a file too large is an error, not death;
     * the command gets the default dispositions back (start). */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    static int inherited[1024];
    int n_inherited = open_fds(inherited, 1024);
    stub_pid = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "distrcomp node %d: cannot start the relay: %s\n", node_id, strerror(errno));
        return 1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int code = relay(values[0], values[1], command, inherited, n_inherited);
        fflush(NULL);
        _exit(code);
    }
    relay_pid = pid;
    int code = stub();
    fflush(NULL);
    _exit(code);
}
