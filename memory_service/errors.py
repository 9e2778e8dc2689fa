"""Domain errors of the memory service; the servicer maps each to one gRPC status code."""


class MemoryError_(Exception):
    """Base of the errors a caller is told about."""


class InvalidArgumentError(MemoryError_):
    pass


class NotFoundError(MemoryError_):
    pass


class PermissionDeniedError(MemoryError_):
    pass
