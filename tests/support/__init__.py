"""What tests, benchmarks and scripts share that is not a test: installations, the mount table, root
file systems, pools, real users and sudo rules, demo state. Tests import helpers from here only."""
