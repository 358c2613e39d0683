"""Connection buffers: ``RingBuffer`` for inbound bytes, ``OutboundBuffer`` for bytes the kernel refused."""
