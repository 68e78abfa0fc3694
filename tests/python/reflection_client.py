"""A gRPC client that knows nothing about dirac-rs but what server reflection
tells it: it lists the services, builds the message classes from the served
descriptors, checks health and searches jobs with a bearer token.

Usage: reflection_client.py HOST:PORT TOKEN  (prints one JSON object)
"""

import json
import sys

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> None:
    target, token = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(target)
    reflection_db = ProtoReflectionDescriptorDatabase(channel)
    services = list(reflection_db.get_services())
    pool = DescriptorPool(reflection_db)
    method = pool.FindServiceByName("dirac.wms.v1.JobMonitoring").methods_by_name["SearchJobs"]
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    search = channel.unary_unary(
        "/dirac.wms.v1.JobMonitoring/SearchJobs",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    request = request_cls(limit=5)
    status_filter = request.filters.add()
    status_filter.parameter = "Status"
    status_filter.operator = "in"
    status_filter.values.extend(["Received", "Checking", "Waiting"])
    response = search(request, metadata=[("authorization", "Bearer " + token)])
    try:
        search(request)
        unauthenticated = "OK"
    except grpc.RpcError as err:
        unauthenticated = err.code().name
    # A request whose string field is not UTF-8 (raw bytes: field 1, length
    # 3, 0xff 0xfe 0xfd) is bad input, not a server fault.
    raw = channel.unary_unary("/dirac.dms.v1.FileCatalog/CreateDirectories")
    try:
        raw(b"\x0a\x03\xff\xfe\xfd", metadata=[("authorization", "Bearer " + token)])
        not_utf8 = "OK"
    except grpc.RpcError as err:
        not_utf8 = err.code().name
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="dirac.wms.v1.JobManager")
    )
    print(
        json.dumps(
            {
                "services": sorted(services),
                "total": response.total,
                "first": response.jobs[0].job_id if response.jobs else None,
                "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
                "unauthenticated": unauthenticated,
                "not_utf8": not_utf8,
            }
        )
    )


if __name__ == "__main__":
    main()
