"""Run in the sandbox in place of a command a ``Preload`` fork runs (isolation/preload.py).

``python -I -S stub.py FD``: hands this process's stdin, stdout and stderr to the fork
over the socket FD (the kernel adds this process's pid, which is how the fork finds the
sandbox's namespaces), then waits for the command's exit status and exits with it. Standard
library only, and nothing imported that a bare interpreter does not need.
"""

import array
import os
import socket
import sys


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.sendmsg([b"hello"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    word = sock.recv(16)
    try:
        return int(word)
    except ValueError:  # the fork died: as if the command had been killed
        return 128 + 9


if __name__ == "__main__":
    os._exit(main())
