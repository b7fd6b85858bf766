"""A TCP proxy that makes one node's links slow and lossy (the kernel here has no `tc netem`).

Runs inside a node's namespace; iptables DNAT sends that node's connections to its peers, and
its peers' connections to it, through here (see netns.Network.slow_link). Every chunk is held
`delay ± jitter` ms, in order, and with probability `loss` as long as a lost TCP segment would
hold it (a retransmission timeout: 200–600 ms more). Its own sockets carry SO_MARK `--mark`,
which the DNAT rules skip, so its connections to the real targets are not redirected again.

    python3 delayproxy.py --bind ADDR --routes 20001=10.0.0.2:8000,... --delay-ms 80 --jitter-ms 40 --loss 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sys


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    last_release = 0.0

    async def release() -> None:
        while True:
            at, data = await queue.get()
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(release())
    try:
        while True:
            data = await reader.read(65536)
            hold = (args.delay_ms + random.uniform(-args.jitter_ms, args.jitter_ms)) / 1000
            if random.random() < args.loss:
                hold += random.uniform(0.2, 0.6)
            # In order: a chunk never overtakes the one before it.
            last_release = max(last_release, loop.time() + max(0.0, hold))
            await queue.put((last_release, data or None))
            if not data:
                break
    except (ConnectionError, OSError):
        await queue.put((0.0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def serve(listen_port: int, target: tuple[str, int], args) -> asyncio.AbstractServer:
    async def handle(client_reader, client_writer):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, args.mark)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, target)
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, up_writer, args), pump(up_reader, client_writer, args),
                             return_exceptions=True)

    return await asyncio.start_server(handle, args.bind, listen_port, reuse_address=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--routes", required=True)
    p.add_argument("--delay-ms", type=float, default=50)
    p.add_argument("--jitter-ms", type=float, default=0)
    p.add_argument("--loss", type=float, default=0)
    p.add_argument("--mark", type=int, required=True)
    args = p.parse_args()
    servers = []
    for route in args.routes.split(","):
        port, target = route.split("=")
        host, tport = target.rsplit(":", 1)
        servers.append(await serve(int(port), (host, int(tport)), args))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
