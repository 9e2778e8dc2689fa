"""gRPC MemoryService: embeds memories and stores and finds them in Qdrant."""
