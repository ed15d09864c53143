"""The launcher's side of the relay handshake under Slurm, as ``distrcomp run`` does it
(:class:`channel.ServerHandshake` with :func:`munge.decode` through Slurm's munged), for
ARGV[2] connections on ARGV[1] (``host:port``): prints ``accepted NODE STREAM`` or
``refused REASON`` for each, in order."""

from __future__ import annotations

import functools
import socket
import sys

from distrcomp.launcher import channel, munge

host, port = channel.parse_address(sys.argv[1])
verify = functools.partial(munge.decode, socket_path=munge.slurm_socket())
listener = socket.create_server((host, port))
listener.settimeout(60)
for _ in range(int(sys.argv[2])):
    conn, _ = listener.accept()
    conn.settimeout(20)
    with conn:
        handshake = channel.ServerHandshake(channel.new_secret(), verify)
        conn.sendall(handshake.greeting)
        try:
            who = None
            while who is None:
                data = conn.recv(4096)
                if not data:
                    raise channel.ChannelError("closed during the handshake")
                who = handshake.feed(data)
            conn.sendall(handshake.reply)
            print("accepted", *who, flush=True)
        except channel.ChannelError as exc:
            print("refused", exc, flush=True)
