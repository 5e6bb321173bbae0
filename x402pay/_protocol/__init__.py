"""The x402 wire format: pure data, no I/O."""
