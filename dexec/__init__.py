"""dexec: order execution engine for Solana DEX swaps on Ray."""
