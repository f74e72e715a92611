"""An independent HTTP/3 client (aioquic) POSTs a JSON body to a meridian node and prints the
answer's status line and body. Usage: h3_client_check.py HOST PORT CA_PEM PATH BODY_FILE"""
import asyncio
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            state = self.waiting.get(ev.stream_id)
            if state is None:
                continue
            if isinstance(ev, HeadersReceived):
                state["headers"] = dict(ev.headers)
            elif isinstance(ev, DataReceived):
                state["body"] += ev.data
            if getattr(ev, "stream_ended", False):
                state["done"].set_result(True)

    async def post(self, authority, path, body):
        stream_id = self._quic.get_next_available_stream_id()
        state = {"headers": {}, "body": b"", "done": self._loop.create_future()}
        self.waiting[stream_id] = state
        self.h3.send_headers(stream_id, [
            (b":method", b"POST"), (b":scheme", b"https"), (b":authority", authority.encode()),
            (b":path", path.encode()), (b"content-type", b"application/json"),
        ])
        self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        await asyncio.wait_for(state["done"], 20)
        return state["headers"].get(b":status", b"?").decode(), state["body"]


async def main(host, port, ca, path, body_file):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.load_verify_locations(ca)
    body = open(body_file, "rb").read()
    async with connect(host, port, configuration=config, create_protocol=Client) as client:
        status, answer = await client.post(f"{host}:{port}", path, body)
        print(f"status {status}")
        print(answer.decode())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]))
