"""What tests, benchmarks and scripts share that is not a test: demo state, builders."""
