"""The roost session engine: images, generations, sessions, locks (no UI, no argv)."""
