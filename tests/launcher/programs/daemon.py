"""Starts a daemon the classic way and exits at once: fork, setsid, fork again, every inherited
descriptor closed (MPI's too), the environment cleared, then ``sleep 300``. The daemon writes
its pid into ``<argv[1]>/daemon-<command's pid>`` before its exec; the command waits for that
file."""

import os
import sys
import time

directory = sys.argv[1]
path = os.path.join(directory, f"daemon-{os.getpid()}")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.closerange(3, 1 << 16)
        with open(path + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.rename(path + ".tmp", path)
        os.execve("/bin/sleep", ["sleep", "300"], {})
    os._exit(0)
os.wait()
while not os.path.exists(path):
    time.sleep(0.01)
print("daemon started", flush=True)
