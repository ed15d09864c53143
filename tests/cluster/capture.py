"""Record every frame that enters the test bridge, until SIGTERM: ``python capture.py OUT``,
run in the switch namespace. A raw AF_PACKET socket (no tcpdump needed) sees each frame as it
enters a bridge port (``p-ln``, ``p-h1``, ...); frames leaving a port are the same frames again
and are skipped. OUT gets one record per frame: the port's name (1 length byte, then ASCII),
the frame's length (4 bytes, big-endian), the frame. ``ready`` is printed once capturing.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
_RECORD = struct.Struct(">I")


def main(out: str) -> None:
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # room for bursts (root may exceed rmem_max): a dropped frame could hide what is sought
    sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
    sock.settimeout(0.1)
    print("ready", flush=True)
    with open(out, "wb") as handle:
        while not stop:
            try:
                frame, (port, _, kind, _, _) = sock.recvfrom(1 << 16)
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            if kind == socket.PACKET_OUTGOING or not port.startswith("p-"):
                continue
            name = port.encode()
            handle.write(bytes([len(name)]) + name + _RECORD.pack(len(frame)) + frame)


if __name__ == "__main__":
    main(sys.argv[1])
