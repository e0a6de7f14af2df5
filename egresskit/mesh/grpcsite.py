"""gRPC servers on loopback: the simulated internet's gRPC site and bb's gRPC terminus.

Job: real grpcio servers (HTTP/2 cleartext) on ``127.0.0.1:0`` for the proxy to forward
gRPC calls to. Methods are defined in :mod:`egresskit.grpcproto` (no codegen).

* :func:`internet_site`: what a gRPC service "out there" answers (``grpc.example.com:50051``
  in the notebooks): ``helloworld.Greeter/SayHello`` ("Hello, <name>!"), the
  ``egresskit.echo.Echo`` methods in all four streaming shapes (``Unary`` sends the
  request's ``x-*`` metadata back as ``x-echo-*`` initial metadata, and answers the
  message ``sleep:<ms>`` that much later), and
  ``grpc.health.v1.Health/Check`` (SERVING). ``Echo/Unary`` with the message
  ``status:<CODE>`` ends the call with that status instead (to see non-OK statuses go
  through the proxy and into ``grpc_status``).
* :func:`bb_site`: ``bb terminus --grpc-server-port``: ``buoyantio.bb.TheService/theFunction``
  answers like the HTTP/1 terminus (:mod:`egresskit.mesh.workloads`); any other method gets
  ``UNIMPLEMENTED`` with grpc-go's message ``unknown service <service>`` (bb is Go).

Rules: one :class:`GrpcServer` owns one grpcio server and its thread pool; ``close()`` stops
it with a bounded grace and waits, bounded, for it to be gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from egresskit.errors import BackendError, WaitTimeout
from egresskit.grpcproto import (
    BB_THE_FUNCTION,
    ECHO_BIDI,
    ECHO_CLIENT_STREAM,
    ECHO_SERVER_STREAM,
    ECHO_UNARY,
    GREETER,
    Method,
)

LOOPBACK = "127.0.0.1"
#: How many messages ``Echo/ServerStream`` sends back for one request.
SERVER_STREAM_COUNT = 3
#: Banner sent as initial metadata, so a learner sees the answer came from the simulation.
SITE_METADATA = ("x-simulated-internet", "egresskit gRPC site; nothing left this machine")


class GrpcServer:
    """A grpcio server on ``127.0.0.1:0``; ``address`` is where it listens."""

    def __init__(self, handlers: list[grpc.GenericRpcHandler], *, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(8, thread_name_prefix=f"{name}-rpc")
        self._server = grpc.server(self._pool, handlers=handlers)
        port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        if not port:
            self._pool.shutdown(wait=False)
            raise BackendError(f"{name}: cannot listen on {LOOPBACK}:0")
        self.address = (LOOPBACK, int(port))

    def start(self) -> GrpcServer:
        self._server.start()
        return self

    def close(self, grace: float = 1.0) -> None:
        """Stop (open calls get ``grace`` seconds, then are cancelled) and join every worker:
        at most ``grace + 5`` seconds in all, or WaitTimeout says what was still running."""
        deadline = time.monotonic() + grace + 5.0
        try:
            if not self._server.stop(grace).wait(grace + 5.0):
                raise WaitTimeout(f"{self.name} gRPC server to stop", grace + 5.0, "serving")
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
        # shutdown(wait=True) has no bound; join the workers ourselves, as
        # LoopbackHTTPServer.close does (a handler may still be returning a cancelled call).
        for worker in list(self._pool._threads):
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                raise WaitTimeout(f"{self.name} gRPC workers to finish", grace + 5.0, "busy")


def _handler(method: Method, fn: Callable[..., Any]) -> grpc.RpcMethodHandler:
    make = {
        "unary": grpc.unary_unary_rpc_method_handler,
        "server_stream": grpc.unary_stream_rpc_method_handler,
        "client_stream": grpc.stream_unary_rpc_method_handler,
        "bidi": grpc.stream_stream_rpc_method_handler,
    }[method.shape]
    return make(
        fn,
        request_deserializer=method.request.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


def _service(methods: list[tuple[Method, Callable[..., Any]]]) -> grpc.GenericRpcHandler:
    service = methods[0][0].service
    return grpc.method_handlers_generic_handler(
        service, {m.name: _handler(m, fn) for m, fn in methods}
    )


# --------------------------------------------------------------- the internet's site


def _say_hello(request: Any, context: grpc.ServicerContext) -> Any:
    context.send_initial_metadata((SITE_METADATA,))
    return GREETER.response(message=f"Hello, {request.name}!")


def _unary(request: Any, context: grpc.ServicerContext) -> Any:
    text = str(request.message)
    if text.startswith("sleep:") and text[len("sleep:") :].isdigit():
        # Answer late (at most 10 s; headers too): to see timeouts and cancellations
        # through the proxy.
        # The wait ends early when the call does (the client cancels, or close() cancels
        # it): a worker is not held for a call nobody waits for.
        ended = threading.Event()
        if context.add_callback(ended.set):  # False: the call has already ended
            ended.wait(min(int(text[len("sleep:") :]), 10_000) / 1000)
    # Metadata the call arrived with, sent back as ``x-echo-<name>`` (to see a route's
    # RequestHeaderModifier at work).
    seen = [
        (f"x-echo-{key}", value)
        for key, value in context.invocation_metadata()
        if key.startswith("x-") and isinstance(value, str)
    ]
    context.send_initial_metadata(tuple(seen))
    if text.startswith("status:"):
        code = getattr(grpc.StatusCode, text[len("status:") :].strip().upper(), None)
        if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
            context.abort(code, f"as asked: {code.name}")
    return ECHO_UNARY.response(message=text)


def _server_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
    for i in range(1, SERVER_STREAM_COUNT + 1):
        yield ECHO_SERVER_STREAM.response(message=f"{request.message} #{i}")


def _client_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
    return ECHO_CLIENT_STREAM.response(message=" ".join(r.message for r in requests))


def _bidi(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    for r in requests:
        yield ECHO_BIDI.response(message=r.message)


def internet_site() -> GrpcServer:
    """The simulated internet's gRPC service (started)."""
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    handlers = [
        _service([(GREETER, _say_hello)]),
        _service(
            [
                (ECHO_UNARY, _unary),
                (ECHO_SERVER_STREAM, _server_stream),
                (ECHO_CLIENT_STREAM, _client_stream),
                (ECHO_BIDI, _bidi),
            ]
        ),
    ]
    server = GrpcServer(handlers, name="internet-grpc")
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server._server)
    return server.start()


# --------------------------------------------------------------- bb's gRPC terminus


class _UnknownService(grpc.GenericRpcHandler):  # type: ignore[misc]
    """grpc-go's answer to a method it does not serve (``server.go`` ``processStreamingRPC``
    is never reached: ``unknown service %v``)."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        service = str(details.method).split("/")[1] if "/" in details.method else ""

        def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"unknown service {service}")
            yield b""  # pragma: no cover - abort raises

        return grpc.stream_stream_rpc_method_handler(refuse)


def bb_site(*, service_id: str, response_text: str = "") -> GrpcServer:
    """``bb terminus``'s gRPC server: ``theFunction`` answers as the HTTP/1 terminus does."""

    def the_function(request: Any, context: grpc.ServicerContext) -> Any:
        uid = request.requestUID or f"in:grpc-sid:{service_id}-{time.time_ns() % 1_000_000_000}"
        payload = response_text or f"terminus at [{time.time_ns() % 1_000_000_000}]"
        return BB_THE_FUNCTION.response(requestUID=uid, payload=payload)

    handlers = [_service([(BB_THE_FUNCTION, the_function)]), _UnknownService()]
    return GrpcServer(handlers, name="workload-bb-grpc").start()
