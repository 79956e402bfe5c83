"""The admin API over gRPC (`meridian.v1.Admin`), behind the same bearer token as the HTTP API, sent as the
`authorization: Bearer <token>` metadata. Refusals are logged with the peer and the reason, never the token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from control_plane.admin.cluster_status import status_proto
from control_plane.admin.service import AdminError, AdminService, ErrorKind, PolicyResult, bearer_of, token_matches
from control_plane.distribution.server import ServerTlsSettings, bind_server
from control_plane.distribution.table_cache import TableCache
from meridian_common.logging_setup import event
from meridian_proto import policy_pb2, policy_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

_CODES = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.CONFLICT: grpc.StatusCode.ABORTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
}


def _response(result: PolicyResult) -> policy_pb2.PolicyResponse:
    return policy_pb2.PolicyResponse(document=result.document, applied=result.applied,
                                     diff=result.table_diff or result.policy_diff)


class AdminServicer(policy_pb2_grpc.AdminServicer):
    def __init__(self, service: AdminService, cache: TableCache, *, token: str | None) -> None:
        self._service = service
        self._cache = cache
        self._token = token

    async def _call(self, context: grpc.aio.ServicerContext, method: str, run: Callable[[], Awaitable[T]]) -> T:
        metadata = dict(context.invocation_metadata() or ())
        provided = bearer_of(str(metadata.get("authorization", "")) or None)
        if not token_matches(provided, self._token):
            reason = "no admin token configured" if not self._token else (
                "missing bearer token" if provided is None else "wrong bearer token")
            log.warning(event("admin_refused", transport="grpc", peer=context.peer(), method=method, reason=reason))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        try:
            return await run()
        except AdminError as error:
            details = error.message + "".join(f"\n  {p}" for p in error.problems)
            await context.abort(_CODES[error.kind], details)
            raise  # abort() raises; this keeps the flow visible

    async def ApplyPolicy(  # noqa: N802 - the generated servicer's method names
        self, request: policy_pb2.ApplyPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PolicyResponse:
        async def run() -> policy_pb2.PolicyResponse:
            return _response(await self._service.apply(request.yaml, dry_run=request.dry_run, author=request.author))

        return await self._call(context, "ApplyPolicy", run)

    async def SetPolicyField(  # noqa: N802
        self, request: policy_pb2.SetPolicyFieldRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PolicyResponse:
        async def run() -> policy_pb2.PolicyResponse:
            return _response(await self._service.merge(request.changes, dry_run=request.dry_run,
                                                       author=request.author))

        return await self._call(context, "SetPolicyField", run)

    async def ShowPolicy(  # noqa: N802
        self, request: policy_pb2.ShowPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PolicyDocument:
        return await self._call(context, "ShowPolicy", self._service.show)

    async def History(  # noqa: N802
        self, request: policy_pb2.HistoryRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.HistoryResponse:
        async def run() -> policy_pb2.HistoryResponse:
            return policy_pb2.HistoryResponse(documents=await self._service.history(request.limit))

        return await self._call(context, "History", run)

    async def Rollback(  # noqa: N802
        self, request: policy_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PolicyResponse:
        async def run() -> policy_pb2.PolicyResponse:
            return _response(await self._service.rollback(request.version, author=request.author))

        return await self._call(context, "Rollback", run)

    async def Status(  # noqa: N802
        self, request: policy_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.StatusResponse:
        async def run() -> policy_pb2.StatusResponse:
            status = await self._service.status()
            tables = [t for r in self._cache.regions() if (t := self._cache.get(r)) is not None]
            return status_proto(status, tables)

        return await self._call(context, "Status", run)


async def start_admin_grpc_server(
    service: AdminService, cache: TableCache, host: str, port: int, *, token: str | None,
    tls: ServerTlsSettings | None,
) -> tuple[grpc.aio.Server, int]:
    """`tls` is the server certificate only: operators authenticate with the token, not a certificate."""
    server = grpc.aio.server()
    policy_pb2_grpc.add_AdminServicer_to_server(AdminServicer(service, cache, token=token), server)
    bound = bind_server(server, host, port, tls, "the admin gRPC server")
    await server.start()
    log.info(event("admin_grpc_started", address=f"{host}:{bound}", tls=tls is not None))
    return server, bound
