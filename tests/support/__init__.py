"""What tests, benchmarks and scripts share that is not a test: real users and sudo rules, demo state."""
