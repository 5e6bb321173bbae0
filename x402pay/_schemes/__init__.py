"""What gets signed: EIP-712 typed data for the x402 schemes (pure CPU, no I/O)."""
