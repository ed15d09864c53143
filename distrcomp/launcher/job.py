"""One run of ``distrcomp run``: start mpiexec, relay the nodes, enforce the time limit, stop
every node on the first failure or on a signal, leave no process behind, report.

The launcher is a single-threaded event loop over: the relay listener, an authenticated control
connection per node and the two output streams of its command (see :mod:`.channel`; pipes for
nodes on this machine, connections of their own for the others), which the launcher cuts into
lines, mpiexec's own stdout/stderr, and a wake-up socket for signals.
It never initialises MPI. A node is done when it has reported its exit status and both of its
output streams have ended (or :data:`STREAM_DRAIN` seconds after its report, if something it
started still holds them open).

Ending the job, whatever the reason (a node failed, the time limit, SIGINT/SIGTERM/SIGHUP):
every node still running is told to stop (its wrapper sends SIGTERM, then SIGKILL after
:data:`.channel.STOP_GRACE` s); if mpiexec has not exited some seconds later it gets SIGTERM, then
SIGKILL. Last, every process still carrying this job's id in its environment is killed and
named, so no process of the job outlives the launcher.
"""

from __future__ import annotations

import _signal  # signal's and socket's C parts: their Python modules import enum and convert
import _socket  # their constants to enums (~5 ms of start-up, which delays every node)
import os
import select
import sys
import time

from . import channel, procs, scratch, shm
from .command import mpiexec_argv, node_argv
from .flavor import Flavor
from .relay import LineBuffer, Output, Sink, tag
from .report import (
    EXIT_TIMEOUT,
    NodeResult,
    abort_code,
    exit_status,
    root_cause,
    signal_name,
    summary,
)
from .reports import MARK, Reports, render
from .spawn import Child, spawn

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up, see above)
if TYPE_CHECKING:
    from collections.abc import Callable
del TYPE_CHECKING

__all__ = ["Job", "JobSpec", "forwarded_names"]

CONNECT_TIMEOUT = 60.0  # every node must have connected by then
HANDSHAKE_TIMEOUT = 5.0  # an unauthenticated connection is dropped after this
# connections in their handshake at once; one more pushes the oldest out (see channel.Waiting)
MAX_UNAUTHENTICATED = 1024
SHOWN_REJECTIONS = 3  # rejected connections named as they happen; the rest only counted
DUMP_WAIT = 5.0  # after asking the nodes for their reports, the longest wait for them
STOP_WAIT = channel.STOP_GRACE + 3.0  # after telling nodes to stop, before mpiexec gets SIGTERM
KILL_WAIT = 3.0  # after mpiexec got SIGTERM, before SIGKILL
EXIT_WAIT = 10.0  # after every node reported, time mpiexec gets to exit on its own
AFTER_MPIEXEC = 2.0  # after mpiexec exited, time nodes' connections get to report
STREAM_DRAIN = 2.0  # after a node's report, how long its output streams are still read
_READ = 1 << 18
_GATHER = 0.002  # seconds the loop pauses after a round of small reads (see _loop)
_STOP_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
_STREAM_NAMES = {channel.OUT: "out", channel.ERR: "err"}
_LOOPBACK = ("127.0.0.1", "::1")  # a job bound there has every node on this machine
_EMFILE, _ENFILE = 24, 23  # errno's values, without importing errno (the launcher's start-up)


_HOLD_HEAP_AFTER = 1 << 16  # bytes relayed after which the launcher keeps its freed memory


def _hold_heap() -> None:
    """Ask glibc's malloc to keep freed memory instead of giving it back to the kernel at once.

    Each read of a node's output (up to 256 KiB) makes and frees a few objects of about its
    size; glibc gave that memory back and the next read faulted it in again, so that the
    launcher's CPU for 800k relayed lines went to page faults: 90-350 ms from job to job
    (3k-85k faults); 100-140 ms with the memory kept (2.5k-3.2k faults). Called once a job
    has relayed :data:`_HOLD_HEAP_AFTER` bytes, before most of its big reads (later, at 1 MiB,
    glibc's heap was already in a shape that kept 18k faults): ``ctypes`` costs ~2.5 ms to
    import, which a job that prints little does not pay. Without glibc's ``mallopt``, nothing.
    """
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD: give back only beyond 64 MiB free at the top
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: objects up to 32 MiB (its maximum) on the heap


def _ignore(_signum: int, _frame: object) -> None:
    """A handler that does nothing: the signal only wakes the loop."""


class _Poller:
    """The descriptors the loop waits on, each with what it is: ``selectors``' epoll selector
    without its import (~2.5 ms with ``collections``, of the launcher's start-up, which delays
    every node). Level-triggered; a hang-up or an error counts as readable. Register an ``int``
    descriptor or an object with ``fileno()``; unregister it before closing it."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._what: dict[int, tuple[object, str]] = {}

    def register(self, obj: object, what: str) -> None:
        fd = obj if isinstance(obj, int) else obj.fileno()  # type: ignore[attr-defined]
        self._epoll.register(fd, select.EPOLLIN)
        self._what[fd] = (obj, what)

    def unregister(self, obj: object) -> None:
        fd = obj if isinstance(obj, int) else obj.fileno()  # type: ignore[attr-defined]
        self._epoll.unregister(fd)
        del self._what[fd]

    def select(self, timeout: float) -> list[tuple[int, object, str]]:
        """Block up to ``timeout`` seconds; ``(fd, obj, what)`` of each ready descriptor."""
        return [(fd, *self._what[fd]) for fd, _ in self._epoll.poll(timeout)]

    def close(self) -> None:
        self._epoll.close()


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class JobSpec:
    """Everything one run needs. ``hosts[i]`` is where node ``i`` runs (shown in its tag).

    ``hostfile_text`` None means every node on this machine (no hostfile); ``env`` maps names
    of variables to forward to their value (None: the launcher's own value). ``site_args``
    (ssh program, launcher address, working directory), ``bind``, ``secret`` (the key already
    delivered to remote hosts), ``on_connected`` (what to do once every node has connected,
    e.g. remove that key; it must not block) and ``unreached_hint`` (said when some node never connected
    back, e.g. which address the nodes were given) are set by :meth:`.remote.Remote.apply`.

    A plain class rather than a dataclass: ``dataclasses`` (with ``inspect``) costs 2 ms of
    the launcher's start-up, which delays every node.
    """

    def __init__(
        self, command: list[str], hosts: list[str], flavor: Flavor,
        hostfile_text: str | None = None, mpi_args: list[str] | None = None,
        env: dict[str, str | None] | None = None, timeout: float | None = None,
        tagged: bool = True, grouped: bool = False, output_dir: str | None = None,
        stats: bool = False, trace: str | None = None,
    ) -> None:
        self.command = command
        self.hosts = hosts
        self.flavor = flavor
        self.hostfile_text = hostfile_text
        self.mpi_args = [] if mpi_args is None else mpi_args
        self.env = {} if env is None else env
        self.timeout = timeout
        self.tagged = tagged
        self.grouped = grouped
        self.output_dir = output_dir
        self.stats = stats  # --stats: print the nodes' profile at the end
        self.trace = trace  # --trace FILE: write it there as Trace Event Format JSON
        self.bind = "127.0.0.1"
        self.secret: str | None = None  # None: the job makes its own
        # inside a Slurm allocation: checks a node's MUNGE credential instead of the secret
        # (see channel.ServerHandshake)
        self.verify = None
        self.on_connected = None  # called once every node has connected
        self.site_args: list[str] = []
        self.unreached_hint: str | None = None
        self.blocks = None  # a legacy master's output (.blocks.Blocks), shared by its jobs

    def __repr__(self) -> str:
        return f"JobSpec({vars(self)!r})"

    @property
    def n(self) -> int:
        """Number of nodes."""
        return len(self.hosts)

    @property
    def local(self) -> bool:
        """Every node is on this machine (the launcher listens on loopback)."""
        return self.bind in _LOOPBACK

    def argv(self, hostfile: str | None) -> list[str]:
        """The exact mpiexec command line, given the path the hostfile is written to."""
        return mpiexec_argv(
            self.flavor, self.n, node_argv(self.command), hostfile=hostfile,
            env_names=forwarded_names(self.env), mpi_args=[*self.site_args, *self.mpi_args],
        )


def forwarded_names(env: dict[str, str | None]) -> list[str]:
    """Variables forwarded to every node: the relay's, then those of ``env``. The secret's own
    variable only when ``env`` names no file holding it (a job with remote hosts, .jobkey) and
    does not say the nodes use MUNGE (inside a Slurm allocation, .munge)."""
    secret = next((name for name in (channel.ENV_MUNGE, channel.ENV_SECRET_FILE) if name in env),
                  channel.ENV_SECRET)
    fixed = [channel.ENV_ADDRESS, secret, channel.ENV_JOB]
    return fixed + [name for name in env if name not in fixed]


class _Conn:
    """One connection to the relay listener: first a handshake, then a node's control frames
    (an output stream's connection becomes a :class:`_Stream` once authenticated)."""

    def __init__(self, sock: _socket.socket, peer: str, secret: str,
                 verify: Callable[[bytes, bytes], None] | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.handshake: channel.ServerHandshake | None = channel.ServerHandshake(secret, verify)
        self.node: int | None = None
        self.frames = channel.FrameReader()
        self.fds: list[int] = []  # descriptors received, not yet claimed by a STREAMS frame

    def send(self, frame: bytes) -> None:
        try:
            self.sock.sendall(frame)
        except OSError:
            pass  # the node is gone; its end is seen as EOF


class _Stream:
    """One output stream of a node's command, read until it ends: the read end of a pipe, or
    a connection (``owner``, which holds ``fd``)."""

    def __init__(self, node: int, name: str, fd: int, owner: _socket.socket | None = None) -> None:
        self.node = node
        self.name = name  # "out" or "err"
        self.fd = fd
        self.owner = owner
        self.lines = LineBuffer()

    def close(self) -> None:
        if self.owner is not None:
            self.owner.close()
        else:
            os.close(self.fd)


class Job:
    """One launch of ``spec``; :meth:`run` returns the exit code of ``distrcomp run``.

    ``Total time`` closes the summary, counted from ``since`` (monotonic seconds; default: the
    job's start), unless ``last`` is False: a sequence of jobs (a legacy master.py's commands)
    reports its total once, itself.
    """

    def __init__(
        self, spec: JobSpec, stdout_fd: int = 1, stderr_fd: int = 2, since: float | None = None,
        last: bool = True,
    ) -> None:
        self.spec = spec
        self.since = since
        self.last = last
        self.stderr_fd = stderr_fd
        self.output = Output(
            spec.hosts, Sink(stdout_fd), Sink(stderr_fd), tagged=spec.tagged,
            grouped=spec.grouped, directory=spec.output_dir, blocks=spec.blocks,
        )
        self.results = [NodeResult(i, host) for i, host in enumerate(spec.hosts)]
        self.job_id = os.urandom(12).hex()
        self.secret = spec.secret or channel.new_secret()
        self.selector = _Poller()
        self.conns: dict[_socket.socket, _Conn] = {}
        self.waiting = channel.Waiting(MAX_UNAUTHENTICATED, HANDSHAKE_TIMEOUT)  # keys: sockets
        self.rejected = 0  # connections rejected
        self.by_node: dict[int, _Conn] = {}
        self.streams: dict[int, _Stream] = {}  # by descriptor: the output streams still open
        self.open_streams = [0] * spec.n  # per node: how many of those are its
        self.n_streams = 0  # output streams ever received
        self.drain_until: dict[int, float] = {}  # node: when its open streams are cut off
        self.listener: _socket.socket | None = None
        self.proc: Child | None = None
        self.mpiexec_rc: int | None = None
        self.mpiexec_exited_at = 0.0
        self.mpiexec_buffers: dict[int, LineBuffer] = {}
        self.mpiexec_held: list[str] = []  # mpiexec's last lines not shown (at most 12)
        self.signals: list[int] = []
        self.stop_reason: str | None = None  # "failure", "timeout" or "signal"
        self.stop_signal = 0
        self.stopped_at = 0.0
        self.dump_until: float | None = None  # the time limit's round of reports ends then
        self.reports = Reports()
        self.asked_until: float | None = None  # a round asked for by SIGUSR1 ends then
        self.timed_out: list[int] = []
        self.bye_at: float | None = None
        self.term_at: float | None = None
        self.kill_at: float | None = None
        self.abandon = False
        self.notes: list[str] = []
        self.began = 0.0  # time.time() when run() began
        self.relayed = 0  # bytes of the nodes' output read

    # -- public -----------------------------------------------------------------------------
    def run(self) -> int:
        """Launch, relay until the job is over, clean up, print the summary; return the exit code."""
        self.start = time.monotonic()
        self.began = time.time()  # wall clock, for the times of files the job makes (shm)
        previous = {signum: _signal.getsignal(signum)
                    for signum in (*_STOP_SIGNALS, _signal.SIGCHLD)}
        wake_r, wake_w = _socket.socketpair()
        wake_w.setblocking(False)
        old_wakeup = _signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for signum in _STOP_SIGNALS:
            _signal.signal(signum, self._on_signal)
        previous[_signal.SIGUSR1] = _signal.getsignal(_signal.SIGUSR1)
        _signal.signal(_signal.SIGUSR1, self._on_signal)  # report where every node is
        # A handler, so that mpiexec's exit wakes the loop through the wake-up socket at once.
        _signal.signal(_signal.SIGCHLD, _ignore)
        try:
            directory = scratch.make()
            try:
                self._launch(directory.path)
                self.selector.register(wake_r, "wake")
                self._loop(wake_r)
            finally:
                directory.remove()
        finally:
            self._tear_down()
            _signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                _signal.signal(signum, handler)
            wake_r.close()
            wake_w.close()
        return self._finish()

    # -- start -------------------------------------------------------------------------------
    def _launch(self, scratch: str) -> None:
        spec = self.spec
        address = self._listen_unix(scratch) if spec.local else None
        if address is None:
            family = _socket.AF_INET6 if ":" in spec.bind else _socket.AF_INET
            self.listener = _socket.socket(family, _socket.SOCK_STREAM)
            self.listener.bind((spec.bind, 0))
            address = channel.format_address(spec.bind, self.listener.getsockname()[1])
        assert self.listener is not None
        # as deep as the system allows (somaxconn): connections that arrive before the loop
        # runs, a flood among them, must not fill it and make a node's connection wait
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.selector.register(self.listener, "listen")

        hostfile = None
        if spec.hostfile_text is not None:
            hostfile = os.path.join(scratch, "hostfile")
            with open(hostfile, "w") as handle:
                handle.write(spec.hostfile_text)
        env = dict(os.environ)
        env.update({name: value for name, value in spec.env.items() if value is not None})
        env[channel.ENV_ADDRESS] = address
        if channel.ENV_SECRET_FILE in spec.env or channel.ENV_MUNGE in spec.env:
            env.pop(channel.ENV_SECRET, None)  # across hosts: never in the MPI's hands
        else:
            env[channel.ENV_SECRET] = self.secret
        env[channel.ENV_JOB] = self.job_id
        # mpiexec in its own session must not read the terminal (it would be stopped)
        no_stdin = sys.stdin is None or sys.stdin.closed or sys.stdin.isatty()
        # Own session: a Ctrl-C in the terminal reaches the launcher only, which stops the
        # nodes in order instead of racing mpiexec's own signal handling.
        self.proc = spawn(spec.argv(hostfile), env, stdin_devnull=no_stdin)
        for fd in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(fd, False)
            self.mpiexec_buffers[fd] = LineBuffer()
            self.selector.register(fd, "mpiexec")
        channel.preload()  # while mpiexec starts the nodes (see preload)

    def _listen_unix(self, scratch: str) -> str | None:
        """Every node is on this machine: listen on a Unix socket in the private scratch
        directory (mode 0700), over which wrappers can pass their pipes. None if that is not
        possible here (no AF_UNIX, or a scratch path too long for a socket's name)."""
        if not hasattr(_socket, "AF_UNIX"):
            return None
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        path = os.path.join(scratch, "relay")
        try:
            listener.bind(path)
        except OSError:
            listener.close()
            return None
        self.listener = listener
        return channel.UNIX + path

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self, wake: _socket.socket) -> None:
        while True:
            # SIGCHLD wakes the loop when mpiexec exits; the timeout paces the timers
            streamed = 0
            for fd, obj, what in self.selector.select(0.25):
                if what == "listen":
                    self._accept()
                elif what == "conn":
                    self._read_conn(self.conns[obj])  # type: ignore[index]
                elif what == "stream":
                    streamed += self._read_stream(self.streams[fd])
                elif what == "mpiexec":
                    self._read_mpiexec(fd)
                else:
                    wake.recv(512)
            while self.signals:
                signum = self.signals.pop(0)
                if signum == _signal.SIGUSR1:
                    self._ask_reports(time.monotonic(), "distrcomp: SIGUSR1 received")
                else:
                    self._interrupted(signum)
            self.output.flush()
            if self._tick(time.monotonic()):
                return
            if 0 < streamed < _READ // 4:
                # Output trickles in small reads: let more gather before the next round, so a
                # chatty node costs a few large reads and writes, not one per line it prints.
                time.sleep(_GATHER)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def _tick(self, now: float) -> bool:
        """Timers and the end condition; True when the job is over."""
        assert self.proc is not None
        if self.mpiexec_rc is None:
            self.mpiexec_rc = self.proc.poll()
            if self.mpiexec_rc is not None:
                self.mpiexec_exited_at = now
        for sock in self.waiting.expired(now):
            self._reject(self.conns[sock], f"no valid proof within {HANDSHAKE_TIMEOUT:g} s")
        for node in [n for n, until in self.drain_until.items() if now >= until]:
            for stream in [st for st in self.streams.values() if st.node == node]:
                self._close_stream(stream)

        timeout = self.spec.timeout
        if timeout is not None and self.stop_reason is None and self.dump_until is None \
                and now - self.start >= timeout:
            self._time_limit(now, timeout)
        if self.asked_until is not None and (now >= self.asked_until or self.reports.complete()):
            self.asked_until = None
            self._print_reports()
        if self.dump_until is not None and self.stop_reason is None \
                and (now >= self.dump_until or self.reports.complete()):
            self._print_reports()
            self._begin_stop("timeout", now)
        if self.stop_reason is None and now - self.start > CONNECT_TIMEOUT:
            for result in self.results:
                if not result.started:
                    result.failed_at = now
            if any(not r.started for r in self.results):
                self._begin_stop("failure", now)

        # Every node that started has reported, and none is still expected to start.
        reported = all(self._done(r.node) for r in self.results if r.started) \
            and (self.stop_reason is not None or all(r.started for r in self.results))
        if reported and self.bye_at is None:
            for conn in self.by_node.values():
                conn.send(channel.encode(channel.BYE))
            self.bye_at = now
        if self.mpiexec_rc is not None:
            if reported or now >= self.mpiexec_exited_at + AFTER_MPIEXEC:
                return True
        elif self.term_at is None:
            deadlines = []
            if self.stop_reason is not None:
                deadlines.append(self.stopped_at + STOP_WAIT)
            if self.bye_at is not None:
                deadlines.append(self.bye_at + EXIT_WAIT)
            if deadlines and now >= min(deadlines):
                self._signal_mpiexec(_signal.SIGTERM)
                self.term_at = now
        elif self.kill_at is None and now >= self.term_at + KILL_WAIT:
            self._signal_mpiexec(_signal.SIGKILL)
            self.kill_at = now
        elif self.kill_at is not None and now >= self.kill_at + KILL_WAIT:
            return True  # mpiexec does not die: give up waiting, the tear-down kills what is left
        return self.abandon

    # -- relay connections -----------------------------------------------------------------
    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                fd, peer = self.listener._accept()  # _socket's accept: a descriptor
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (_EMFILE, _ENFILE) and len(self.waiting):
                    # out of descriptors: the connection waiting longest makes room
                    oldest = self.conns[self.waiting.pop_oldest()]  # type: ignore[index]
                    self._reject(oldest, "pushed out: too many connections at once")
                    continue
                self.notes.append(f"distrcomp: accepting a node connection failed: {exc}")
                return
            sock = _socket.socket(fileno=fd)
            sock.settimeout(5.0)  # only sends can wait; reads happen when select says so
            if sock.family != _socket.AF_UNIX:
                channel.keepalive(sock)  # a vanished host becomes a lost node, not a hang
            where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a local process"
            conn = _Conn(sock, where, self.secret, self.spec.verify)
            assert conn.handshake is not None
            conn.send(conn.handshake.greeting)
            self.conns[sock] = conn
            self.selector.register(sock, "conn")
            for pushed in self.waiting.add(sock, time.monotonic()):
                self._reject(self.conns[pushed],  # type: ignore[index]
                             f"pushed out: {MAX_UNAUTHENTICATED} newer connections in its handshake")

    def _done(self, node: int) -> bool:
        """True once ``node`` has reported (or is lost) and its output streams have ended."""
        result = self.results[node]
        return (result.returncode is not None or result.lost) and not self.open_streams[node]

    def _read_stream(self, stream: _Stream) -> int:
        """Relay what ``stream`` has; return how many bytes that was."""
        try:
            data = os.read(stream.fd, _READ)
        except BlockingIOError:
            return 0
        except OSError:
            data = b""
        if not data:
            self._close_stream(stream)
            return 0
        before, self.relayed = self.relayed, self.relayed + len(data)
        if before <= _HOLD_HEAP_AFTER < self.relayed:
            _hold_heap()
        lines = stream.lines.feed(data)
        if lines and MARK in lines and stream.name == "err":
            lines = self.reports.take(stream.node, lines)
        if lines:
            self.output.lines(stream.node, stream.name, lines)
        return len(data)

    def _add_stream(self, stream: _Stream) -> None:
        os.set_blocking(stream.fd, False)
        self.streams[stream.fd] = stream
        self.open_streams[stream.node] += 1
        self.n_streams += 1
        self.selector.register(stream.fd, "stream")
        self._close_listener_if_complete()

    def _close_stream(self, stream: _Stream) -> None:
        if self.streams.pop(stream.fd, None) is None:
            return
        self.open_streams[stream.node] -= 1
        self.selector.unregister(stream.fd)
        rest = stream.lines.finish()
        if rest and MARK in rest and stream.name == "err":
            rest = self.reports.take(stream.node, rest)
        if rest:
            self.output.lines(stream.node, stream.name, rest)
        stream.close()
        self._maybe_finished(stream.node)

    def _read_conn(self, conn: _Conn) -> None:
        fds: list[int] = []
        try:
            if conn.sock.family == _socket.AF_UNIX and conn.handshake is None:
                data, fds = channel.recv_fds(conn.sock, _READ, 4)
            else:
                data = conn.sock.recv(_READ)
        except OSError:
            data = b""
        conn.fds += fds
        if conn.handshake is not None:
            self._authenticate(conn, data)
            return
        if not data:
            self._close(conn)
            self._node_lost(conn.node)  # type: ignore[arg-type]
            return
        try:
            frames = conn.frames.feed(data)
        except channel.ChannelError as exc:
            self.notes.append(f"distrcomp: node {conn.node}: {exc}; dropping its connection")
            self._close(conn)
            self._node_lost(conn.node)  # type: ignore[arg-type]
            return
        for kind, payload in frames:
            if kind == channel.STREAMS:
                self._received_streams(conn)
            else:
                self._on_frame(conn.node, kind, payload)  # type: ignore[arg-type]
        _close_fds(conn.fds)  # none is expected outside a STREAMS frame
        conn.fds = []

    def _received_streams(self, conn: _Conn) -> None:
        """A local node's wrapper passed the read ends of its command's stdout and stderr."""
        node = conn.node
        assert node is not None
        fds, conn.fds = conn.fds[:2], conn.fds[2:]
        if len(fds) != 2 or self.open_streams[node]:
            _close_fds(fds)
            self.notes.append(f"distrcomp: node {node} sent a malformed STREAMS frame; ignored")
            return
        for fd, name in zip(fds, ("out", "err")):
            self._add_stream(_Stream(node, name, fd))

    def _authenticate(self, conn: _Conn, data: bytes) -> None:
        assert conn.handshake is not None
        if not data:
            self._reject(conn, "closed during the handshake")
            return
        try:
            who = conn.handshake.feed(data)
        except channel.ChannelError as exc:
            self._reject(conn, str(exc))
            return
        if who is None:
            return
        node, stream = who
        if node >= self.spec.n:
            self._reject(conn, f"node id {node} out of range (the job has {self.spec.n} nodes)")
            return
        if stream != channel.CONTROL:
            self._accept_stream(conn, node, stream)
            return
        if node in self.by_node:
            self._reject(conn, f"node {node} is already connected")
            return
        conn.send(conn.handshake.reply)
        conn.handshake = None
        self.waiting.discard(conn.sock)
        conn.node = node
        self.by_node[node] = conn
        self.results[node].started = True
        if self.stop_reason is not None:
            conn.send(channel.encode(channel.STOP, bytes([_signal.SIGTERM])))
            self.results[node].stopped = True
        self._close_listener_if_complete()

    def _accept_stream(self, conn: _Conn, node: int, stream: int) -> None:
        """``conn`` is the authenticated ``stream`` (OUT or ERR) of ``node``; read it from now."""
        assert conn.handshake is not None
        name = _STREAM_NAMES[stream]
        if node not in self.by_node or self.results[node].returncode is not None \
                or any(st.node == node and st.name == name for st in self.streams.values()):
            self._reject(conn, f"unexpected {name} stream for node {node}")
            return
        conn.send(conn.handshake.reply)
        self.waiting.discard(conn.sock)
        del self.conns[conn.sock]
        self.selector.unregister(conn.sock)
        self._add_stream(_Stream(node, name, conn.sock.fileno(), owner=conn.sock))

    def _close_listener_if_complete(self) -> None:
        if len(self.by_node) == self.spec.n and self.n_streams == 2 * self.spec.n:
            self._close_listener()  # nobody else has any business connecting
            if self.spec.on_connected is not None:
                self.spec.on_connected()
                self.spec.on_connected = None

    def _reject(self, conn: _Conn, reason: str) -> None:
        self.rejected += 1
        if self.rejected <= SHOWN_REJECTIONS:
            self.output.note("err", f"distrcomp: rejected a connection from {conn.peer}: {reason}")
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self.waiting.discard(conn.sock)
        if conn.sock in self.conns:
            del self.conns[conn.sock]
            self.selector.unregister(conn.sock)
        conn.sock.close()
        _close_fds(conn.fds)
        conn.fds = []

    def _maybe_finished(self, node: int) -> None:
        """Tell the output a node is over once it is (grouped output shows it then)."""
        if self._done(node):
            self.drain_until.pop(node, None)
            self.output.finished(node)

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.selector.unregister(self.listener)
            if self.listener.family == _socket.AF_UNIX:
                try:
                    os.unlink(self.listener.getsockname())
                except FileNotFoundError:  # gone with the scratch directory
                    pass
            self.listener.close()
            self.listener = None

    def _on_frame(self, node: int, kind: int, payload: bytes) -> None:
        if kind == channel.OUT:
            self.output.lines(node, "out", payload)
        elif kind == channel.ERR:
            self.output.lines(node, "err", payload)
        elif kind == channel.NO_REPORT:
            self.reports.decline(node)
        elif kind == channel.EXIT:
            result = self.results[node]
            if result.returncode is not None:
                return
            try:
                result.returncode = channel.exit_returncode(payload)
            except (ValueError, KeyError, TypeError):
                result.returncode = 1
            self._streams_end_soon(node)
            if self.bye_at is not None:  # a latecomer, started while the job was ending
                self.by_node[node].send(channel.encode(channel.BYE))
            if result.returncode != 0:
                now = time.monotonic()
                result.failed_at = now
                self._begin_stop("failure", now)
        # unknown kinds are ignored: a newer wrapper may say more than this launcher knows

    def _node_lost(self, node: int) -> None:
        result = self.results[node]
        if result.returncode is not None or result.lost:
            return
        now = time.monotonic()
        result.lost = True
        result.failed_at = now
        self._streams_end_soon(node)
        self._begin_stop("failure", now)

    def _streams_end_soon(self, node: int) -> None:
        """``node`` has reported or is lost: its streams get STREAM_DRAIN s more to end."""
        self.drain_until[node] = time.monotonic() + STREAM_DRAIN
        self._maybe_finished(node)

    # -- mpiexec's own output ---------------------------------------------------------------
    def _read_mpiexec(self, fd: int) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        buffer = self.mpiexec_buffers[fd]
        lines = buffer.feed(data) if data else buffer.finish()
        if not data:
            self.selector.unregister(fd)
        if lines:
            self._mpiexec_lines(lines)

    def _mpiexec_lines(self, lines: bytes) -> None:
        # Once the launcher stops the job, mpiexec's reports ("BAD TERMINATION ...") describe
        # what the launcher did; they are kept for the summary instead of shown.
        if self.stop_reason is None:
            self.output.launcher_lines("[mpiexec] ", lines)
            return
        text = lines.decode("utf-8", "replace").splitlines()
        self.mpiexec_held.extend(line for line in text if line.strip(" =\t"))
        del self.mpiexec_held[:-12]

    # -- ending ------------------------------------------------------------------------------
    def _begin_stop(self, reason: str, now: float) -> None:
        """Tell every node still running to stop (idempotent: the first reason is kept)."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.stopped_at = now
        for node, conn in self.by_node.items():
            result = self.results[node]
            if result.returncode is None and not result.lost:
                conn.send(channel.encode(channel.STOP, bytes([_signal.SIGTERM])))
                result.stopped = True

    def _time_limit(self, now: float, timeout: float) -> None:
        running = [r for r in self.results if r.started and r.returncode is None and not r.lost]
        self.timed_out = [r.node for r in running]
        names = ", ".join(f"node {r.node} ({r.host})" for r in running) or "none"
        self._ask_reports(now, f"distrcomp: time limit of {timeout:g} s exceeded; still running: {names}")
        self.dump_until, self.asked_until = now + DUMP_WAIT, None  # printed before stopping

    def _ask_reports(self, now: float, why: str) -> None:
        """Ask every running node where it is (see :mod:`distrcomp.diag`); the answers are
        printed when all are in, or after DUMP_WAIT seconds."""
        running = [r.node for r in self.results if r.started and r.returncode is None and not r.lost]
        self.output.note("err", f"{why}; asking every running node where it is")
        self.reports.ask(running)
        for node in running:
            conn = self.by_node.get(node)
            if conn is not None:
                conn.send(channel.encode(channel.DUMP))
        self.asked_until = now + DUMP_WAIT

    def _profile_lines(self) -> list[str]:
        """``--stats``' table; ``--trace``: write the file, say where (or why not)."""
        spec, profiles = self.spec, self.reports.profiles
        lines: list[str] = []
        if spec.stats:
            from .stats import table

            lines += table(profiles, spec.hosts)
        if spec.trace is not None:
            from .trace import write

            try:
                write(spec.trace, profiles, spec.hosts)
                lines.append(f"distrcomp: trace of {len(profiles)} of {spec.n} nodes written to "
                             f"{spec.trace}")
            except OSError as exc:
                lines.append(f"distrcomp: cannot write the trace to {spec.trace}: "
                             f"{exc.strerror or exc}")
        return lines

    def _print_reports(self) -> None:
        """The findings of the round of reports, then each node's details, tagged with it."""
        self.asked_until = None
        ended = {r.node: ("lost" if r.lost else f"exit code {r.returncode}")
                 for r in self.results if r.returncode is not None or r.lost}
        reports, declined = self.reports.finish_round()
        found, details = render(reports, ended, self.spec.n, declined)
        for line in self.reports.errors + found:
            self.output.note("err", line)
        self.reports.errors = []
        for node, lines in details.items():
            text = "".join(line + "\n" for line in lines).encode("utf-8", "replace")
            self.output.launcher_lines(tag(node, self.spec.hosts[node]), text)
        self.output.flush()

    def _interrupted(self, signum: int) -> None:
        now = time.monotonic()
        name = signal_name(signum)
        if self.stop_reason == "signal":
            # asked twice: stop waiting politely
            self.output.note("err", f"distrcomp: {name} again; killing every process of the job")
            self.abandon = True
            return
        self.output.note("err", f"distrcomp: {name} received; stopping every node")
        self.stop_signal = signum
        self.stop_reason = None  # a signal overrides a stop already under way
        self._begin_stop("signal", now)

    def _signal_mpiexec(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _tear_down(self) -> None:
        """Close the channel, make sure mpiexec and every process of the job are gone."""
        self._close_listener()
        for conn in list(self.conns.values()):
            self._close(conn)
        for stream in list(self.streams.values()):
            self._close_stream(stream)
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                self._signal_mpiexec(_signal.SIGKILL)
            proc.wait(timeout=5)
            for fd, buffer in list(self.mpiexec_buffers.items()):
                self._drain_mpiexec(fd, buffer)
            _close_fds([proc.stdout, proc.stderr])
        self.selector.close()
        leftovers = self._kill_leftovers()
        if leftovers:
            names = ", ".join(f"{pid} ({comm})" for pid, comm in leftovers)
            self.notes.append(f"distrcomp: killed {len(leftovers)} leftover processes: {names}")
        self._remove_segments()

    def _remove_segments(self) -> None:
        """Remove the shared memory the job's MPI left in /dev/shm on this machine (see
        :mod:`.shm`); only after :meth:`_kill_leftovers`, when no process of the job is left."""
        for path in shm.unused_segments(self.began):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.notes.append(f"distrcomp: cannot remove {path}, shared memory MPI left "
                                  f"behind: {exc.strerror or exc}")

    def _drain_mpiexec(self, fd: int, buffer: LineBuffer) -> None:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except (BlockingIOError, OSError):
                data = b""
            lines = buffer.feed(data) if data else buffer.finish()
            if lines:
                self._mpiexec_lines(lines)
            if not data:
                return

    def _kill_leftovers(self) -> list[tuple[int, str]]:
        """Kill the processes of this job still alive after a short grace (wrappers that were
        told goodbye are exiting on their own); return those killed."""
        killed: list[tuple[int, str]] = []
        grace_until = time.monotonic() + 1.0
        for _ in range(50):
            found = procs.processes_with_env(channel.ENV_JOB, self.job_id, exclude=(os.getpid(),))
            if not found:
                break
            if time.monotonic() < grace_until:
                time.sleep(0.05)
                continue
            for pid, comm in found:
                if procs.send_signal(pid, _signal.SIGKILL):
                    killed.append((pid, comm))
            time.sleep(0.05)  # a dying process may have forked: look again
        return killed

    def _finish(self) -> int:
        """Print notes, grouped blocks and the summary; return the exit code."""
        elapsed = time.monotonic() - (self.start if self.since is None else self.since)
        for result in self.results:
            if result.returncode is None and not result.lost and result.started:
                result.lost = True  # connected, never reported, and now gone
            if not result.ok:
                result.stderr_tail = self.output.last_stderr(result.node)
                result.aborted = abort_code(self.output.stderr_end(result.node))
        self.output.close()
        cause = root_cause(self.results)
        headline = None
        code = 0
        if self.stop_reason == "signal":
            name = signal_name(self.stop_signal)
            headline = f"distrcomp: interrupted by {name}; every node was stopped"
            code = 128 + self.stop_signal
        elif self.stop_reason == "timeout":
            names = ", ".join(str(node) for node in self.timed_out) or "none"
            headline = (f"distrcomp: time limit of {self.spec.timeout:g} s exceeded; "
                        f"nodes still running then: {names}")
            code = EXIT_TIMEOUT
        elif cause is not None:
            if cause.aborted is not None:
                code = cause.aborted & 0xFF
            elif cause.returncode is not None:
                code = exit_status(cause.returncode)
            code = code or self.mpiexec_rc or 1
        elif self.mpiexec_rc:
            headline = f"distrcomp: mpiexec exited with code {self.mpiexec_rc}"
            code = self.mpiexec_rc
        lines = list(self.notes) + self.reports.errors + self._profile_lines()
        if self.rejected > SHOWN_REJECTIONS:
            lines.append(f"distrcomp: rejected {self.rejected} connections to the relay listener "
                         f"in all (the first {SHOWN_REJECTIONS} are named above): they did not "
                         "prove they belong to this job")
        if code and any(not r.started or r.lost for r in self.results) and self.mpiexec_held:
            lines.append("distrcomp: mpiexec's last words:")
            lines.extend(f"  | {text}" for text in self.mpiexec_held)
        if code and self.spec.unreached_hint and any(not r.started for r in self.results):
            if self.rejected:  # nodes did reach the listener, or something else did
                lines.append(f"distrcomp: the listener was reached, and rejected {self.rejected} "
                             "connections (see above); if the nodes said the launcher closed "
                             "their connection, they were among them")
            lines.append(self.spec.unreached_hint)
        lines += summary(self.results, elapsed, cause, headline, total=self.last)
        err = Sink(self.stderr_fd)
        err.write("".join(line + "\n" for line in lines).encode("utf-8", "replace"))
        err.flush()
        return code
