"""What every service shares and no service owns: identity, request ids, logging, the
server interceptor, errors that carry their gRPC status, server bootstrap, channels,
metrics, limits and the common settings."""
