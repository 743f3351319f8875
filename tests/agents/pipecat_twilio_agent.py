"""A Pipecat bot serving Twilio Media Streams, the way Pipecat's Twilio
examples are built, for dialcore's end-to-end tests (tests/pipecat_agent.rs).

A FastAPI WebSocket endpoint reads Twilio's handshake with Pipecat's own
`parse_telephony_websocket`, then runs a real pipeline:
FastAPIWebsocketTransport (with `TwilioFrameSerializer`) -> a small bot ->
the transport's output. The bot listens to the caller for `--listen-ms`,
says goodbye (`--goodbye-ms` of a 600 Hz tone, as a TTS would) and ends the
pipeline with `EndWorkerFrame`, so Pipecat ends the call itself:

  --hang-up close  `auto_hang_up=False`: the transport closes the WebSocket
                   (close frame, status 1000) when the pipeline ends.
  --hang-up rest   `auto_hang_up=True` with `base_url` pointing at dialcore:
                   the serializer POSTs Twilio's "update call" with
                   Status=completed and Basic auth (account_sid, auth_token,
                   from TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN as in
                   Pipecat's examples: the organisation id and an API key),
                   then the transport closes the WebSocket.

It prints one JSON object per line on stdout: `{"event": "listening",
"port": N}` once it accepts connections, `{"event": "start", ...}` with what
Pipecat parsed from `start`, and `{"event": "ended", ...}` with what the bot
heard. Pipecat's own log (loguru) goes to stderr.
"""

import argparse
import asyncio
import json
import math
import os
import socket
import struct
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

RATE = 8000


def report(event: str, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def tone(hz: float, ms: int) -> bytes:
    samples = RATE * ms // 1000
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * n / RATE)))
        for n in range(samples)
    )


def rms(pcm: bytes) -> float:
    count = len(pcm) // 2
    if count == 0:
        return 0.0
    values = struct.unpack(f"<{count}h", pcm[: count * 2])
    return math.sqrt(sum(v * v for v in values) / count)


class GoodbyeBot(FrameProcessor):
    """Hears the caller for a while, says goodbye, ends the conversation."""

    def __init__(self, listen_ms: int, goodbye_ms: int):
        super().__init__()
        self.listen_ms = listen_ms
        self.goodbye_ms = goodbye_ms
        self.heard_ms = 0.0
        self.speech_ms = 0.0
        self.ending = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            ms = 1000 * len(frame.audio) / 2 / frame.sample_rate
            self.heard_ms += ms
            if rms(frame.audio) > 300:
                self.speech_ms += ms
            if self.heard_ms >= self.listen_ms and not self.ending:
                self.ending = True
                logger.info("bot: goodbye")
                await self.push_frame(
                    OutputAudioRawFrame(
                        audio=tone(600, self.goodbye_ms), sample_rate=RATE, num_channels=1
                    )
                )
                # Flushes the goodbye, then ends the pipeline (EndFrame).
                await self.push_frame(EndWorkerFrame(reason="conversation over"))
            return
        await self.push_frame(frame, direction)


def app(args) -> FastAPI:
    api = FastAPI()

    @api.websocket("/media-stream")
    async def media_stream(websocket: WebSocket):
        await websocket.accept()
        transport_type, call_data = await parse_telephony_websocket(websocket)
        report(
            "start",
            transport=transport_type,
            call_sid=call_data.call_id,
            stream_sid=call_data.stream_id,
            custom_parameters=call_data.body,
        )
        rest = args.hang_up == "rest"
        serializer = TwilioFrameSerializer(
            stream_sid=call_data.stream_id,
            call_sid=call_data.call_id,
            account_sid=os.environ.get("TWILIO_ACCOUNT_SID") if rest else None,
            auth_token=os.environ.get("TWILIO_AUTH_TOKEN") if rest else None,
            base_url=args.base_url if rest else None,
            params=TwilioFrameSerializer.InputParams(auto_hang_up=rest),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        bot = GoodbyeBot(args.listen_ms, args.goodbye_ms)
        worker = PipelineWorker(
            Pipeline([transport.input(), bot, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport, client):
            # The call ended from the other side: stop, unless the bot is
            # already ending it (and may be waiting for its hang-up request).
            if not bot.ending:
                await worker.cancel()

        await WorkerRunner(handle_sigint=False).run(worker)
        report("ended", heard_ms=bot.heard_ms, speech_ms=bot.speech_ms, said_goodbye=bot.ending)

    return api


async def serve(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Connections queue from here on, before uvicorn takes the socket over.
    sock.listen(16)
    config = uvicorn.Config(app(args), log_level="warning")
    server = uvicorn.Server(config)
    report("listening", port=sock.getsockname()[1])
    await server.serve(sockets=[sock])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hang-up", choices=["close", "rest"], required=True)
    parser.add_argument("--base-url", help="dialcore's HTTP root, for --hang-up rest")
    parser.add_argument("--listen-ms", type=int, default=1000)
    parser.add_argument("--goodbye-ms", type=int, default=1000)
    args = parser.parse_args()
    credentials = os.environ.get("TWILIO_ACCOUNT_SID") and os.environ.get("TWILIO_AUTH_TOKEN")
    if args.hang_up == "rest" and not (args.base_url and credentials):
        parser.error("--hang-up rest needs --base-url, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    logger.remove()
    logger.add(sys.stderr, level="DEBUG")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
