"""The per-node wrapper: ``python -m distrcomp.launcher.node -- COMMAND [ARGS...]``.

``distrcomp run`` makes mpiexec start this instead of the user's command on every node. It
opens an authenticated control connection to the launcher (see
:mod:`distrcomp.launcher.channel`) and runs the command with stdout and stderr that the launcher
reads itself: pipes whose read ends it passes to the launcher on the launcher's machine, two
more authenticated connections elsewhere. The command's output goes straight to the launcher,
which cuts it into lines; nothing of the node handles it on the way. Over the control connection
the wrapper reports how the command ended and carries out the launcher's orders: stop the
command, or ask the Python processes of the node for a stack dump (SIGUSR1, which distrcomp
routes to faulthandler).

Three processes per node, so that nothing of the node is lost when MPI kills it::

    mpiexec's proxy ─> stub (the process MPI knows; its process group is the node's)
                        └─ relay (own process group: survives MPI's kill of the node's group)
                             └─ COMMAND (in the stub's group, so MPI's cleanup reaches it)

When a node calls ``MPI_Abort``, MPICH kills the process group of every node with SIGKILL. What
the command wrote before dying (its last traceback lines are often the most important output
of the job) is already in its pipes or sockets, whose other ends the launcher holds; the relay
is outside that group and still reports the exit status.
The command inherits MPI's environment and file descriptors (MPICH's ``PMI_FD``), but no
listening socket (MPICH's mpiexec leaks its own, on 0.0.0.0, into every process it starts);
the stub keeps its own copies open, so a command that crashes does not make MPI kill every
node at once -- the launcher stops them and knows which node failed first.

On Linux the relay is the subreaper of the command's processes (see :mod:`.subreaper`): a
daemon that detaches and clears its environment still ends with the command.

Exit status: the command's (128 + N when killed by signal N). The relay exits once the launcher
says goodbye, or at once if the launcher is gone (after stopping the command).

This module is started once per node, so it imports only what the relay needs.
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence

from . import channel, pipesize, procs, subreaper
from .spawn import Child, spawn_command

__all__ = ["main"]

_TICK = 0.1
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command after ``--`` as this node; the stub exits with the command's exit status
    (returns only for a usage error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.stderr.write("usage: python -m distrcomp.launcher.node -- COMMAND [ARGS...]\n")
        return 2
    try:
        address = os.environ.pop(channel.ENV_ADDRESS)
        secret = _take_proof(os.environ)
    except KeyError as exc:
        sys.stderr.write(f"distrcomp node: {exc.args[0]} is not set; start nodes with distrcomp run\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"distrcomp node: cannot read the job's key {exc.filename}: "
                         f"{exc.strerror or exc}\n")
        return 2
    node = _rank()
    if node is None:
        sys.stderr.write(f"distrcomp node: none of {', '.join(_RANK_VARIABLES)} is set\n")
        return 2
    inherited = _open_fds()
    stub = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    relay_pid = os.fork()
    if relay_pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)
            code = _Relay(node, address, secret, args, stub, inherited).run()
        except BaseException as exc:  # noqa: BLE001 - the relay must never return into the stub
            sys.stderr.write(f"distrcomp node {node}: relay failed: {exc!r}\n")
        finally:
            sys.stderr.flush()
            os._exit(code)
    code = _stub(relay_pid)
    # Exit at once: the stub has nothing to finalize, and mpiexec (so the whole job) waits for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _take_proof(environ: dict[str, str]) -> str | Callable[[bytes], bytes]:
    """The job's secret (:func:`.channel.take_secret`), or inside a Slurm allocation the
    function that makes a MUNGE credential for a payload; the variables are removed."""
    munge_socket = environ.pop(channel.ENV_MUNGE, None)
    if munge_socket is None:
        return channel.take_secret(environ)
    environ.pop(channel.ENV_SECRET, None)
    from . import munge

    return functools.partial(munge.encode, socket_path=munge_socket or None)


def _rank() -> int | None:
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def _open_fds() -> list[int]:
    """Inheritable descriptors above stderr: those this process got from mpiexec (MPI's own,
    and whatever else it leaked). Python's own descriptors are not inheritable."""
    try:
        listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    fds = []
    for fd in sorted(listed):
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
    return fds


def _keep_listeners_from_command(fds: Sequence[int]) -> None:
    """Make the listening sockets among ``fds`` (MPICH's mpiexec leaks its own, bound to
    0.0.0.0, into every process it starts) not inheritable, so that the command does not get
    them; the rest of MPI's descriptors (the PMI connection) it keeps. Only this process's
    descriptors change: the stub keeps its own as they are."""
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            continue
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            listening = 0
        finally:
            sock.detach()
        if listening:
            os.set_inheritable(fd, False)


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _stub(relay_pid: int) -> int:
    """The process MPI started: forwards termination signals to the relay, waits, mirrors its status.

    The stub keeps its copies of MPI's descriptors (MPICH's PMI socket) open until the end, so
    a command that dies does not make MPI kill every node at once: the launcher stops them in
    order and knows which node failed first. (``MPI_Abort`` still kills at once, by design.)
    """

    def forward(signum: int, _frame: object) -> None:
        procs.send_signal(relay_pid, signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    _, status = os.waitpid(relay_pid, 0)
    if os.WIFSIGNALED(status):
        # The relay was killed: nobody will stop the command, so do it here.
        for pid in procs.group_members(os.getpgrp(), exclude=(os.getpid(),)):
            procs.send_signal(pid, signal.SIGKILL)
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class _Relay:
    """Runs the command with its output on the launcher's connections, obeys the launcher,
    reports the exit status. One per node."""

    def __init__(
        self, node: int, address: str, secret: str | Callable[[bytes], bytes],
        command: list[str], stub: int, inherited: Sequence[int],
    ) -> None:
        self.node = node
        self.address = address
        self.secret = secret
        self.command = command
        self.stub = stub
        self.inherited = inherited
        # the command's mark (channel.ENV_NODE); the job id is set by every launcher
        self.mark = f"{os.environ.get(channel.ENV_JOB) or os.getpid()}.{node}"
        # Under MPICH the stub leads its own process group, which MPI kills on abort: the
        # command joins it. Otherwise (Open MPI) the command gets a process group of its own.
        self.shares_stub_group = os.getpgid(stub) == stub
        self.sock: socket.socket | None = None
        self.child: Child | None = None
        self.group = 0
        self.started = 0  # the command's start time (procs.start_time)
        self.signals: list[int] = []
        self.launcher_gone = False
        self.stub_gone = False
        self.kill_at: float | None = None

    # -- setup -----------------------------------------------------------------------------
    def run(self) -> int:
        """Connect, run the command to its end, report it; return the exit status to mirror."""
        try:
            self.sock = channel.connect(self.address, self.secret, self.node)
            streams = self._open_streams()
        except (channel.ChannelError, OSError) as exc:
            sys.stderr.write(f"distrcomp node {self.node}: {exc}\n")
            _close(self.inherited)
            return 1
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for signum in _FORWARDED:
            signal.signal(signum, self._on_signal)
        # A handler, so that the command's exit wakes the loop below through the wake-up fd.
        signal.signal(signal.SIGCHLD, _ignore)
        try:
            returncode = self._start(streams)
        finally:
            # The command has its own copies: the launcher sees the end of each stream when
            # the command (and whatever it started) has closed them.
            _close(streams)
        if self.child is not None:
            returncode = self._supervise(wake_r)
        self._send(channel.encode_exit(returncode))
        self._await_goodbye(wake_r)
        return _exit_status(returncode)

    def _open_streams(self) -> list[int]:
        """The command's stdout and stderr: descriptors whose other end the launcher reads.

        On the launcher's machine, pipes whose read ends go to the launcher; else a connection
        of its own for each. Raises ChannelError or OSError if that fails.
        """
        assert self.sock is not None
        if self.sock.family != socket.AF_UNIX:
            return [
                channel.connect(self.address, self.secret, self.node, stream).detach()
                for stream in (channel.OUT, channel.ERR)
            ]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            for fd in (out_w, err_w):
                pipesize.widen(fd)
            socket.send_fds(self.sock, [channel.encode(channel.STREAMS)], [out_r, err_r])
        except OSError:
            _close((out_w, err_w))
            raise
        finally:
            _close((out_r, err_r))
        return [out_w, err_w]

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def _enter_workdir(self) -> str | None:
        """Change into the staged working directory of this node's host (``--files``), which the
        command inherits (posix_spawn takes no directory). None if done or there is none; else
        why not."""
        base = os.environ.get(channel.ENV_WORKDIR)
        if not base:
            return None
        from .staging import node_workdir  # only then: it imports much the wrapper does not need

        try:
            cwd = node_workdir(base, os.environ.get(channel.ENV_SLOTS, ""), self.node)
            os.chdir(cwd)
        except ValueError as exc:
            return str(exc)
        except FileNotFoundError:
            return f"its working directory {cwd} is missing on this host"
        except OSError as exc:
            return f"cannot enter its working directory {cwd}: {exc.strerror or exc}"
        return None

    def _start(self, streams: Sequence[int]) -> int:
        env = dict(os.environ)  # the secret's variables and ENV_ADDRESS were removed in main()
        env[channel.ENV_NODE] = self.mark
        problem = self._enter_workdir()
        if problem is not None:
            message = f"distrcomp: node {self.node}: {problem}\n"
            self._send(channel.encode(channel.ERR, message.encode()))
            _close(self.inherited)
            return 127
        pgid = self.stub if self.shares_stub_group else 0
        out, err = streams
        _keep_listeners_from_command(self.inherited)
        # Orphans of the command (a daemon's double fork) become the relay's children, which
        # the end of the node then stops (_reap_leftovers), wherever they moved and whatever
        # their environment.
        subreaper.enable()
        try:
            # The command gets MPI's inherited descriptors; the relay's own (its sockets and
            # pipe ends) are non-inheritable, so they do not leak into it. Input goes to node 0
            # only (as MPI forwards it); the others read an empty stdin rather than a pipe
            # mpiexec never closes.
            self.child = spawn_command(self.command, env, out, err, stdin_devnull=self.node != 0,
                                       process_group=pgid)
        except OSError as exc:
            message = f"distrcomp: cannot run {self.command[0]!r}: {exc.strerror or exc}\n"
            self._send(channel.encode(channel.ERR, message.encode()))
            return 127
        finally:
            _close(self.inherited)
        self.group = pgid or self.child.pid
        self.started = procs.start_time(self.child.pid) or 0
        return 0

    # -- the command's lifetime ------------------------------------------------------------
    def _supervise(self, wake: socket.socket) -> int:
        """Obey the launcher until the command exits; stop what it left running; its returncode."""
        child = self.child
        assert child is not None and self.sock is not None
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "launcher")
        selector.register(wake, selectors.EVENT_READ, "signal")
        frames = channel.FrameReader()
        try:
            while True:
                returncode = child.poll()
                if returncode is not None:
                    break
                for key, _ in selector.select(_TICK):
                    if key.data == "launcher":
                        self._obey(frames, selector)
                    else:
                        wake.recv(512)
                while self.signals:
                    self._stop(self.signals.pop(0))
                if not self.stub_gone and os.getppid() != self.stub:
                    # The stub is gone (killed with the node's process group, or alone): stop.
                    self.stub_gone = True
                    self._stop(signal.SIGTERM)
                if self.kill_at is not None and time.monotonic() >= self.kill_at:
                    self._signal_group(signal.SIGKILL)
                    self.kill_at = None
        finally:
            selector.close()
        self._reap_leftovers()
        return returncode

    def _reap_leftovers(self) -> None:
        """Stop what the command left running (SIGTERM, SIGKILL after a second): its process
        group, and every process carrying its mark that left the group (setsid, a daemon).
        They may hold the output streams or MPI's descriptors open (MPICH's proxy then waits
        for them, and the job with it), and no process of the node outlives the command."""
        if not self._any_left():
            return
        self._signal_leftovers(signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while self._any_left() and time.monotonic() < deadline:
            time.sleep(0.02)
        # A killed process's own children are adopted in turn: until none is left (bounded).
        for _ in range(50):
            self._signal_leftovers(signal.SIGKILL)
            time.sleep(0.02)
            if not self._any_left():
                break

    def _any_left(self) -> bool:
        """Whether the command or anything it left is still running: one pass over the process
        table (the end of every node waits for it)."""
        child = self.child
        if child is not None and child.returncode is None:
            return True
        subreaper.reap()  # the command has been waited for: the rest are adopted orphans
        return procs.any_left(self.group, channel.ENV_NODE, self.mark,
                              exclude=(self.stub, os.getpid()), since=self.started,
                              parent=os.getpid())

    def _strays(self) -> list[int]:
        """Live processes outside the command's process group that carry its mark or were
        adopted by the relay (orphans, see subreaper)."""
        members = set(self._members())
        marked = procs.processes_with_env(channel.ENV_NODE, self.mark,
                                          exclude=(self.stub, os.getpid()))
        adopted = procs.children(os.getpid())
        return [pid for pid in {pid for pid, _ in marked} | set(adopted) if pid not in members]

    def _signal_leftovers(self, signum: int) -> None:
        self._signal_group(signum)
        for pid in self._strays():
            procs.send_signal(pid, signum)

    def _obey(self, frames: channel.FrameReader, selector: selectors.BaseSelector) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._launcher_lost(selector)
            return
        try:
            received = frames.feed(data)
        except channel.ChannelError:
            received = []
            self._launcher_lost(selector)
        for kind, payload in received:
            if kind == channel.STOP:
                self._stop(payload[0] if payload else signal.SIGTERM)
            elif kind == channel.DUMP:
                self._dump()

    def _launcher_lost(self, selector: selectors.BaseSelector) -> None:
        self.launcher_gone = True
        selector.unregister(self.sock)
        self._stop(signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        if self.child is None or self.child.returncode is not None:
            return
        self._signal_group(signum)
        if self.kill_at is None:
            self.kill_at = time.monotonic() + channel.STOP_GRACE

    def _dump(self) -> None:
        """SIGUSR1 to each process of the node that handles it (distrcomp: faulthandler); if
        none does, no report will come, and the launcher hears so at once (NO_REPORT) instead
        of waiting for one."""
        asked = False
        for pid in self._members():
            if procs.catches(pid, signal.SIGUSR1):
                procs.send_signal(pid, signal.SIGUSR1)
                asked = True
        if not asked:
            self._send(channel.encode(channel.NO_REPORT))

    def _members(self) -> list[int]:
        members = procs.group_members(self.group, exclude=(self.stub, os.getpid()))
        child = self.child
        if child is not None and child.returncode is None and child.pid not in members:
            members.append(child.pid)
        return members

    def _signal_group(self, signum: int) -> None:
        if not self.shares_stub_group:
            try:
                os.killpg(self.group, signum)
            except (ProcessLookupError, PermissionError):
                pass
            return
        # The group holds the stub too, which must survive to report to MPI: signal one by one.
        for pid in self._members():
            procs.send_signal(pid, signum)

    # -- talking to the launcher -----------------------------------------------------------
    def _send(self, frame: bytes) -> None:
        if self.launcher_gone or self.sock is None:
            return
        try:
            self.sock.sendall(frame)
        except OSError:
            self.launcher_gone = True

    def _await_goodbye(self, wake: socket.socket) -> None:
        """Wait for BYE (the launcher has everything it needs from every node) or its absence."""
        if self.launcher_gone or self.sock is None:
            return
        frames = channel.FrameReader()
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(wake, selectors.EVENT_READ)
        try:
            while not self.signals:
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        wake.recv(512)
                        continue
                    data = self.sock.recv(1 << 16)
                    if not data or any(kind == channel.BYE for kind, _ in frames.feed(data)):
                        return
        except (OSError, channel.ChannelError):
            return
        finally:
            selector.close()
            self.sock.close()


def _ignore(_signum: int, _frame: object) -> None:
    """A handler that does nothing: the signal only wakes the relay's loop."""


def _exit_status(returncode: int) -> int:
    """Popen's returncode (negative: killed by that signal) as a shell-style exit status."""
    return 128 - returncode if returncode < 0 else returncode & 0xFF


if __name__ == "__main__":
    sys.exit(main())
