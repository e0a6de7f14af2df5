"""The protobuf messages and gRPC methods of the kit's gRPC services, built without codegen.

Job: describe, in code, the few services the simulated internet and the in-cluster ``bb``
terminus serve, so the servers (:mod:`egresskit.mesh.grpcsite`) and the client command
(:mod:`egresskit.grpcclient`) share one definition and nobody runs ``protoc``:

* ``helloworld.Greeter/SayHello``: gRPC's own example (``HelloRequest{name}`` ->
  ``HelloReply{message}``, grpc/grpc ``examples/protos/helloworld.proto``);
* ``egresskit.echo.Echo/{Unary,ServerStream,ClientStream,Bidi}``: one ``EchoMessage{message}``
  each way, one method per streaming shape, to show streaming through the proxy;
* ``buoyantio.bb.TheService/theFunction``: the ``bb`` terminus's gRPC method
  (``TheRequest{requestUID}`` -> ``TheResponse{requestUID, payload}``). Assumption: this is
  bb's ``api.proto`` as we remember it; its source was not at hand to check this session;
* ``grpc.health.v1.Health/Check``: from ``grpcio-health-checking`` (its generated module).

Messages are real protobuf classes (a private descriptor pool), so what goes on the wire is
what ``protoc``-generated code would send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2

Shape = Literal["unary", "server_stream", "client_stream", "bidi"]

_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL

#: (proto file, package, {message: [fields]}, {service: [(method, in, out, shape)]})
_FILES: tuple[
    tuple[str, str, dict[str, list[str]], dict[str, list[tuple[str, str, str, Shape]]]], ...
] = (
    (
        "helloworld.proto",
        "helloworld",
        {"HelloRequest": ["name"], "HelloReply": ["message"]},
        {"Greeter": [("SayHello", "HelloRequest", "HelloReply", "unary")]},
    ),
    (
        "egresskit_echo.proto",
        "egresskit.echo",
        {"EchoMessage": ["message"]},
        {
            "Echo": [
                ("Unary", "EchoMessage", "EchoMessage", "unary"),
                ("ServerStream", "EchoMessage", "EchoMessage", "server_stream"),
                ("ClientStream", "EchoMessage", "EchoMessage", "client_stream"),
                ("Bidi", "EchoMessage", "EchoMessage", "bidi"),
            ]
        },
    ),
    (
        "bb_api.proto",
        "buoyantio.bb",
        {"TheRequest": ["requestUID"], "TheResponse": ["requestUID", "payload"]},
        {"TheService": [("theFunction", "TheRequest", "TheResponse", "unary")]},
    ),
)


@dataclass(frozen=True, kw_only=True)
class Method:
    """One gRPC method: its ``:path``, its shape, and its message classes."""

    path: str
    shape: Shape
    request: Any
    response: Any

    @property
    def service(self) -> str:
        return self.path.split("/")[1]

    @property
    def name(self) -> str:
        return self.path.split("/")[2]

    def encode_request(self, fields: dict[str, Any]) -> bytes:
        """A request message from a JSON-like dict; unknown fields raise ``ValueError``."""
        try:
            msg = json_format.ParseDict(fields, self.request())
        except json_format.ParseError as exc:
            raise ValueError(f"{self.path}: request: {exc}") from exc
        return bytes(msg.SerializeToString())

    def decode_response(self, data: bytes) -> dict[str, Any]:
        msg = self.response()
        msg.ParseFromString(data)
        out: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        return out


def _build() -> dict[str, Method]:
    pool = descriptor_pool.DescriptorPool()
    methods: dict[str, Method] = {}
    for filename, package, messages, services in _FILES:
        fdp = descriptor_pb2.FileDescriptorProto(name=filename, package=package, syntax="proto3")
        for mname, fields in messages.items():
            msg = fdp.message_type.add(name=mname)
            for number, fname in enumerate(fields, start=1):
                msg.field.add(
                    name=fname, number=number, type=_STRING, label=_OPTIONAL, json_name=fname
                )
        pool.Add(fdp)
        for sname, rpcs in services.items():
            for rpc, req, resp, shape in rpcs:
                path = f"/{package}.{sname}/{rpc}"
                methods[path] = Method(
                    path=path,
                    shape=shape,
                    request=message_factory.GetMessageClass(
                        pool.FindMessageTypeByName(f"{package}.{req}")
                    ),
                    response=message_factory.GetMessageClass(
                        pool.FindMessageTypeByName(f"{package}.{resp}")
                    ),
                )
    methods["/grpc.health.v1.Health/Check"] = Method(
        path="/grpc.health.v1.Health/Check",
        shape="unary",
        request=health_pb2.HealthCheckRequest,
        response=health_pb2.HealthCheckResponse,
    )
    return methods


#: Every method the kit knows, by ``:path``.
METHODS: dict[str, Method] = _build()

GREETER = METHODS["/helloworld.Greeter/SayHello"]
ECHO_UNARY = METHODS["/egresskit.echo.Echo/Unary"]
ECHO_SERVER_STREAM = METHODS["/egresskit.echo.Echo/ServerStream"]
ECHO_CLIENT_STREAM = METHODS["/egresskit.echo.Echo/ClientStream"]
ECHO_BIDI = METHODS["/egresskit.echo.Echo/Bidi"]
BB_THE_FUNCTION = METHODS["/buoyantio.bb.TheService/theFunction"]
HEALTH_CHECK = METHODS["/grpc.health.v1.Health/Check"]


def method(name: str) -> Method:
    """A method by ``Service/Method`` or ``/Service/Method``; ``ValueError`` names the known."""
    path = name if name.startswith("/") else f"/{name}"
    found = METHODS.get(path)
    if found is None:
        known = ", ".join(p.lstrip("/") for p in METHODS)
        raise ValueError(f"method {name!r}: expected one of {known}")
    return found
