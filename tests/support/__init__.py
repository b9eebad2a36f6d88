"""What tests share beyond fixtures: real users and sudo rules, demo state, root builders."""
